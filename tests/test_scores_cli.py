"""`workbench discover` and `workbench validate` end to end on the tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from reference_twin import ablated, tiny_twin, twin_token_nll
from typer.testing import CliRunner

import workbench.commands.discover as discover_command
import workbench.commands.validate as validate_command
from workbench.cli import app
from workbench.heads import HeadWeights
from workbench.scores import PCSResult


@pytest.fixture
def cli(tiny, monkeypatch):
    for module in (discover_command, validate_command):
        monkeypatch.setattr(module, "load_lens", lambda *args: tiny)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.jsonl"
    records = [
        {
            "id": f"e{i}",
            "user_id": f"u{i}",
            "prompt": f"Profile: {t}. Write a title.",
            "target": f"{t} rules",
            "prompt_no_profile": "Write a title.",
        }
        for i, t in enumerate(["cats", "jazz"])
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def top_heads_by_hand(frame: pd.DataFrame, k: int) -> list[tuple[int, int]]:
    """The k heads with the highest mean PCS over examples; ties to the lower layer, then head."""
    means = frame.groupby(["layer", "head"])["pcs"].mean().reset_index()
    ordered = means.assign(neg=-means["pcs"]).sort_values(["neg", "layer", "head"])
    return [(int(row.layer), int(row.head)) for row in ordered.head(k).itertuples()]


def test_discover_writes_scores_and_heads_and_resumes_identically(cli, tiny, data, tmp_path):
    out = tmp_path / "run"
    arguments = ("discover", "--data", data, "--out", out, "--method", "hybrid", "--top-k", 3, "--top-m", 5, "--seed", 4)
    result = cli(*arguments)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out / "pcs.parquet")
    assert {"example_id", "user_id", "layer", "head", "pcs", "exact"} <= set(frame.columns)
    assert frame["exact"].sum() == 2 * 5  # --top-m heads re-scored exactly, per example
    twin = tiny_twin()
    records = [json.loads(line) for line in data.read_text().splitlines()]
    for row in frame[frame["exact"]].itertuples():
        record = records[int(row.example_id[1:])]
        prompt, target = tiny.encode_chat(record["prompt"]), tiny.encode(record["target"])
        clean = twin_token_nll(twin, prompt, target).mean()
        expected = twin_token_nll(twin, prompt, target, ablated([(row.layer, row.head)])).mean() - clean
        assert row.pcs == pytest.approx(float(expected), abs=1e-5)
    weights = HeadWeights.load(out / "heads.json")
    assert weights.method == "hybrid" and weights.seed == 4
    means = frame.groupby(["layer", "head"])["pcs"].mean()
    assert weights.heads() == [head for head in top_heads_by_hand(frame, 3) if means[head] > 0]  # zero weights drop out
    first = (out / "pcs.parquet").read_bytes()
    again = cli(*arguments)
    assert again.exit_code == 0 and (out / "pcs.parquet").read_bytes() == first


def test_discover_with_a_larger_limit_extends_the_checkpoint(cli, data, tmp_path):
    out = tmp_path / "run"
    assert cli("discover", "--data", data, "--out", out, "--limit", 1).exit_code == 0
    extended = cli("discover", "--data", data, "--out", out, "--limit", 2)
    assert extended.exit_code == 0, extended.output
    assert cli("discover", "--data", data, "--out", tmp_path / "fresh", "--limit", 2).exit_code == 0
    assert (out / "pcs.parquet").read_bytes() == (tmp_path / "fresh" / "pcs.parquet").read_bytes()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--task", "LaMP-9"], "unknown task 'LaMP-9'"),
        (["--top-k", "13"], "--top-k must lie in 1..12"),
        (["--method", "guess"], "--method must be 'exact', 'attribution' or 'hybrid', got 'guess'"),
        (["--variant", "swap-contrast"], "prompt_swapped"),
    ],
)
def test_discover_bad_input_is_one_line_and_exit_2(cli, data, tmp_path, arguments, message):
    result = cli("discover", "--data", data, "--out", tmp_path / "o", *arguments)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1  # stdout may hold the plan printed before


def test_discover_needs_a_task_for_folders_and_refuses_reused_checkpoints(cli, data, tmp_path):
    folder = cli("discover", "--data", tmp_path, "--out", tmp_path / "o")
    assert folder.exit_code == 2 and "--task is needed" in folder.output
    assert cli("discover", "--data", data, "--out", tmp_path / "o", "--method", "attribution").exit_code == 0
    changed = cli("discover", "--data", data, "--out", tmp_path / "o", "--method", "attribution", "--ablation", "mean")
    assert changed.exit_code == 2 and "other arguments" in changed.output


def test_validate_writes_its_table(cli, tiny, data, tmp_path):
    weights = HeadWeights.random_heads(tiny.geometry, 2, seed=1)
    weights.save(tmp_path / "heads.json")
    result = cli("validate", "--data", data, "--heads", tmp_path / "heads.json", "--out", tmp_path / "v", "--n-random", 3)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "v" / "validation_summary.csv")
    assert set(summary["head_set"]) == {"preference", "random", "retrieval", "induction"}
    assert set(summary["condition"]) == {"profile", "no-profile", "profile-specific"}
    per_example = pd.read_parquet(tmp_path / "v" / "validation.parquet")
    assert len(per_example) == 2 * 2 * (1 + 3 + 2)


def test_discover_and_validate_read_task_data_with_controls(monkeypatch, tmp_path):
    """The bundled demo set (LaMP-4 schema) through the data loaders and prompt builder."""
    from workbench.engine.models import tiny_model

    long_tiny = tiny_model(n_ctx=8192)  # the few-shot prompts are long in characters
    for module in (discover_command, validate_command):
        monkeypatch.setattr(module, "load_lens", lambda *args: long_tiny)
    runner = CliRunner()
    run = lambda *args: runner.invoke(app, [str(a) for a in args])
    out = tmp_path / "d"
    result = run(  # neither --data nor --task: the demo set's LaMP-4
        "discover",
        "--limit",
        3,
        "--method",
        "attribution",
        "--variant",
        "swap-contrast",
        "--top-k",
        2,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert PCSResult.load(out / "pcs.parquet").n_examples == 3
    heads = HeadWeights.load(out / "heads.json")
    assert heads.extra["split"] == "train" and heads.extra["data"] == "demo" and len(heads.heads()) == 2
    assert heads.extra["task"] == "LaMP-4"
    result = run(
        "validate",
        "--task",
        "LaMP-4",
        "--limit",
        2,
        "--heads",
        out / "heads.json",
        "--out",
        tmp_path / "v",
        "--n-random",
        2,
        "--no-pattern-heads",
    )
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "v" / "validation_summary.csv")["head_set"]) == {"preference", "random"}


def test_discover_refuses_an_empty_selection_and_keeps_the_scores(cli, data, tmp_path):
    out = tmp_path / "o"
    result = cli("discover", "--data", data, "--out", out, "--method", "attribution", "--min-pcs", 100)
    last = result.output.strip().splitlines()[-1]  # after the progress bars, one line
    assert result.exit_code == 2 and last.startswith("error: no head has PCS >= 100.0, so no heads.json was written")
    assert (out / "pcs.parquet").is_file() and not (out / "heads.json").exists()


def test_discover_writes_retrieval_and_induction_heads_without_data(cli, tiny, tmp_path):
    from workbench.scores import retrieval_scores

    result = cli("discover", "--score", "retrieval", "--top-k", 3, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    heads = HeadWeights.load(tmp_path / "r" / "heads.json")
    expected = HeadWeights.from_scores(retrieval_scores(tiny, seed=0), top_k=3)
    assert heads.method == "retrieval" and heads.heads() == expected.heads() and heads.heads()
    assert cli("discover", "--score", "induction", "--top-k", 2, "--out", tmp_path / "i").exit_code == 0
    assert HeadWeights.load(tmp_path / "i" / "heads.json").method == "induction"


def test_one_meaning_per_option_name(cli, data, tmp_path):
    for command in (["discover"], ["validate", "--heads", tmp_path / "h.json"]):
        result = cli(*command, "--data", data, "--out", tmp_path / "o", "--k", 2)
        assert result.exit_code == 2 and "no such option: --k" in result.output.lower()
    help_text = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["discover", "--help"]).output
    assert "Default: hybrid." in help_text and "s per" in help_text  # the cost of each method is stated


def test_discover_limit_tokenizes_only_the_examples_it_scores(monkeypatch, tmp_path):
    """Swap partners come from the whole split, but only the first --limit examples are tokenized."""
    import workbench.data.prompts as prompts
    from workbench.engine.models import tiny_model

    long_tiny = tiny_model(n_ctx=8192)
    monkeypatch.setattr(discover_command, "load_lens", lambda *args: long_tiny)
    built, real = [], prompts.build_prompt
    monkeypatch.setattr(
        prompts, "build_prompt", lambda lens, example, *a, **k: built.append(example.example_id) or real(lens, example, *a, **k)
    )
    out = tmp_path / "d"
    args = ["discover", "--task", "LaMP-7", "--limit", 2, "--method", "attribution", "--variant", "swap-contrast", "--out", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert len(set(built)) == 2 and len(built) == 6  # prompt, no-profile and swapped prompt of 2 examples


def test_discover_with_the_authors_preset(monkeypatch, tmp_path):
    """The authors' detection prompt, resid-slice ablation, a seeded draw of examples and the top
    4 % of heads (one head of the tiny model's 12), recorded; explicit options win."""
    from workbench.engine.models import tiny_model

    long_tiny = tiny_model(n_ctx=8192)
    monkeypatch.setattr(discover_command, "load_lens", lambda *args: long_tiny)
    out = tmp_path / "d"
    args = ["discover", "--task", "LaMP-7", "--preset", "authors", "--sample", 3, "--seed", 1, "--out", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "drawn at random (seed 1; at most 3)" in result.output
    heads = HeadWeights.load(out / "heads.json")
    options = heads.extra["options"]
    assert heads.extra["preset"] == "authors" and len(heads.heads()) == 1 and heads.ablation == "resid-slice"
    assert options["format"] == "history" and options["retriever"] == "first" and options["profile_k"] == 5
    assert options["sample"] == 3 and options["top_percent"] == 0.04 and options["top_k"] is None and options["method"] == "exact"
    result = PCSResult.load(out / "pcs.parquet")
    assert result.n_examples == 3 and result.metadata["preset"] == "authors"


def test_discover_certifies_and_races_records_it_and_resumes_only_with_the_same_options(cli, data, tmp_path):
    out = tmp_path / "run"
    arguments = ("discover", "--data", data, "--out", out, "--top-k", 2, "--top-m", 3, "--miss-rate", 0.3, "--racing",
                 "--confidence", 0.9)  # fmt: skip
    result = cli(*arguments, "--seed", 1)
    assert result.exit_code == 0, result.output
    scores = PCSResult.load(out / "pcs.parquet")
    certificate = scores.metadata["certificate"]
    assert certificate["target"] == 0.3 and certificate["bound"] <= 0.3 and certificate["confidence"] == 0.9
    assert scores.metadata["racing"]["head_examples_without_racing"] == 2 * int(scores.exact.sum())
    assert HeadWeights.load(out / "heads.json").extra["certificate"] == certificate
    first = (out / "pcs.parquet").read_bytes()
    assert cli(*arguments, "--seed", 1).exit_code == 0 and (out / "pcs.parquet").read_bytes() == first
    for name, changed in (
        ("miss_rate", ("--miss-rate", 0.2)),
        ("racing", ("--no-racing",)),
        ("confidence", ("--confidence", 0.8)),
    ):
        refused = cli(*arguments, "--seed", 1, *changed)
        assert refused.exit_code == 2 and f"other arguments ({name} " in refused.output, refused.output
    sharded = cli(*arguments, "--out", tmp_path / "sharded", "--shard", "0/2")
    assert sharded.exit_code == 2 and "do not run in shards" in sharded.output
