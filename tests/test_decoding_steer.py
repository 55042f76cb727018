"""`workbench steer`: bad options fail with one line and exit 2; a real run prints three continuations,
each ending where `evaluate` ends an answer."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.heads import HeadWeights


def run(*args: str):
    return CliRunner().invoke(app, ["steer", *args])


@pytest.fixture
def heads_file(tmp_path):
    path = tmp_path / "heads.json"
    HeadWeights.random_heads(_smollm_geometry(), 12, seed=0).save(path)
    return path


def _smollm_geometry():
    from workbench.engine.masks import HeadGeometry

    return HeadGeometry(n_layers=30, n_heads=9, n_kv_heads=3, d_head=64, d_model=576, n_ctx=8192, d_vocab=49152)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--heads", "missing.json", "--prompt", "hi"], "missing.json: file not found"),
        (["--prompt", "hi", "--gamma", "-1"], "--gamma must be a number >= 0 or 'entropy', got '-1'"),
        (["--prompt", "hi", "--gamma", "strong"], "--gamma must be a number >= 0 or 'entropy', got 'strong'"),
        (["--prompt", "  "], "--prompt is empty"),
        (["--prompt", "hi", "--combine", "probs"], "--combine must be 'logits' or 'logprobs', got 'probs'"),
        (["--prompt", "hi", "--suppression", "half"], "--suppression must be 'weighted', 'zero' or 'mean', got 'half'"),
        (["--prompt", "hi", "--site", "resid-slice"], "--site must be 'head-output' or 'query-scale'"),
        (["--prompt", "hi", "--format", "markdown"], "--format must be 'plain', 'chat' or 'history'"),
        (["--prompt", "hi", "--example", "e1"], "give --prompt or --example, not both"),
        (["--prompt", "hi", "--system", "be brief"], "--system applies to --prompt with --format chat"),
    ],
)
def test_bad_options_exit_2_before_loading_the_model(heads_file, args, message):
    if "--heads" not in args:
        args = ["--heads", str(heads_file), *args]
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_steer_prints_three_continuations(heads_file):
    result = run("--heads", str(heads_file), "--prompt", "Name a fruit.", "--gamma", "2", "--max-new-tokens", "3")
    assert result.exit_code == 0, result.output
    for title in ("greedy", "heads suppressed", "DPS γ=2.0"):
        assert title in result.output


@pytest.fixture
def tiny_cli(tiny, monkeypatch, tmp_path):
    import workbench.commands.steer as steer_command
    from workbench.engine.models import tiny_model

    long_tiny = tiny_model(n_ctx=4096)  # the few-shot prompt of a demo example is long in characters
    monkeypatch.setattr(steer_command, "load_lens", lambda *args: long_tiny)
    heads = tmp_path / "heads.json"
    HeadWeights.random_heads(long_tiny.geometry, 3, seed=0).save(heads)
    runner = CliRunner(env={"COLUMNS": "240"})
    return lambda *args: runner.invoke(app, ["steer", "--heads", str(heads), "--max-new-tokens", "3", *map(str, args)])


def test_steer_labels_each_column_by_what_it_is(tiny_cli):
    example = tiny_cli("--example", "7020", "--task", "LaMP-7", "--profile-k", 2, "--gamma", 2)
    assert example.exit_code == 0, example.output
    for title in (
        "greedy, with profile",
        "heads suppressed",
        "DPS γ=2.0",
        "greedy, no profile",
        "example 7020",
        "reference (u02)",
    ):
        assert title in example.output
    assert "personalized" not in example.output
    plain = tiny_cli("--prompt", "Name a fruit:", "--site", "query-scale")
    assert plain.exit_code == 0, plain.output
    assert "greedy" in plain.output and "profile" not in plain.output and "DPS γ=1.0 (site=query-scale)" in plain.output
    chat = tiny_cli("--prompt", "Name a fruit.", "--format", "chat", "--system", "Be brief.")
    assert chat.exit_code == 0, chat.output
    missing = tiny_cli("--example", "nope", "--task", "LaMP-7")
    assert missing.exit_code == 2 and "no example 'nope' in the dev split" in missing.output


def test_steer_prompt_stops_where_evaluate_stops(tiny_cli):
    """`Hello` on the tiny model: its unstopped greedy text breaks the line early (checked by hand
    once; asserted here), and a plain LaMP-4 answer ends at the first line break, as in `evaluate`."""
    import workbench.commands.steer as steer_command
    from workbench.decoding import Greedy, generate

    tiny = steer_command.load_lens()  # the fixture's model
    unstopped = generate(tiny, [tiny.encode("Hello", add_bos=tiny.plain_text_bos)], Greedy(), max_new_tokens=20)[0].text
    assert "\n" in unstopped.strip("\n")
    answer, after = unstopped.split("\n", 1)
    result = tiny_cli("--prompt", "Hello", "--max-new-tokens", 20)
    assert result.exit_code == 0, result.output
    assert answer.strip() in result.output
    assert after.strip()[:6] not in result.output
