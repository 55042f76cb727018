"""The evaluation runner: outputs, resumption without duplicates or losses, the discovery-split
warning, and the CLI's error path (comparison of runs: tests/test_compare.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference_decoding import contrast, decode, next_logits, patched, twin
from typer.testing import CliRunner

import workbench.experiments.evaluation as evaluation_module
from workbench.cli import app
from workbench.data.prompts import PromptConfig, build_prompt
from workbench.data.sources import load_examples
from workbench.data.tasks import task_spec
from workbench.decoding import Greedy, make_decoder
from workbench.errors import InputError
from workbench.experiments.evaluation import EvalConfig, evaluate, read_predictions
from workbench.experiments.metrics import score_example
from workbench.heads import HeadWeights


@pytest.fixture(scope="module")
def examples():
    """Demo paraphrase examples (short enough for the tiny model's 256-character context)."""
    return load_examples(None, "LaMP-7", "dev")[:5]


def config(**changes) -> EvalConfig:
    base = dict(task="LaMP-7", split="dev", model="tiny", max_new_tokens=6, batch_size=2,
                prompt=PromptConfig(profile_k=2), resamples=50)  # fmt: skip
    return EvalConfig(**{**base, **changes})


def lines(out: Path) -> list[dict]:
    """The prediction records without their timing (`seconds`: wall time, never equal between runs)."""
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]


def test_outputs_and_scores(tiny, examples, tmp_path: Path) -> None:
    result = evaluate(tiny, examples, config(), tmp_path, progress=False)
    records = lines(tmp_path)
    assert [r["id"] for r in records] == [e.example_id for e in examples]
    spec = task_spec("LaMP-7")
    for record, example in zip(records, examples):
        assert record["gold"] == example.output and record["style"] == example.style
        assert record["scores"] == score_example(spec, record["prediction"], example.output, example.style)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert stored["n"] == 5 and stored["seed"] == 0 and stored["config"]["method"] == "greedy"
    assert set(stored["metrics"]) == {"rouge-1", "rouge-L", "meteor", "style_match"}
    rouge = stored["metrics"]["rouge-1"]
    assert rouge["value"] == pytest.approx(sum(r["scores"]["rouge-1"] for r in records) / 5)
    assert rouge["low"] <= rouge["value"] <= rouge["high"]
    assert "torch" in stored["versions"] and stored["evaluated_on_discovery_split"] is False


def test_interrupted_run_resumes_without_duplicates_or_losses(tiny, examples, tmp_path: Path, monkeypatch) -> None:
    reference = tmp_path / "reference"
    evaluate(tiny, examples, config(), reference, progress=False)
    real_generate, calls = evaluation_module.generate, []

    def dies_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(evaluation_module, "generate", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny, examples, config(), out, progress=False)
    assert len(lines(out)) == 2 and not (out / "metrics.json").exists()
    with open(out / "predictions.jsonl", "a") as handle:  # a torn write of a third line
        handle.write('{"id": "7')
    monkeypatch.setattr(evaluation_module, "generate", real_generate)
    evaluate(tiny, examples, config(batch_size=3), out, progress=False)
    assert lines(out) == lines(reference)
    # a duplicated line (e.g. a copy-paste) is dropped on the next resume
    text = (out / "predictions.jsonl").read_text()
    (out / "predictions.jsonl").write_text(text + text.splitlines()[0] + "\n")
    assert list(read_predictions(out / "predictions.jsonl")) == [e.example_id for e in examples]
    assert lines(out) == lines(reference)


def test_resuming_with_another_configuration_is_refused(tiny, examples, tmp_path: Path) -> None:
    evaluate(tiny, examples[:2], config(), tmp_path, progress=False)
    with pytest.raises(InputError, match="holds a run with method='greedy', not 'cad'"):
        evaluate(tiny, examples[:2], config(decoder=make_decoder("cad")), tmp_path, progress=False)


@pytest.fixture(scope="module")
def heads_file(tiny, tmp_path_factory) -> Path:
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[0, 1], grid[1, 2], grid[2, 0] = 1.0, 1.0, 0.5
    path = tmp_path_factory.mktemp("heads") / "heads.json"
    HeadWeights(grid, extra={"split": "dev", "data": "demo"}).save(path)
    return path


def reference_predictions(tiny, examples, config: EvalConfig, score_for) -> list[str]:
    """What each example's prediction must be: an independent greedy loop on the Hugging Face twin
    (`score_for(example)` scores a sequence), its text cut at the stop string as the runner does."""
    stops = config.stop_strings
    predictions = []
    for example in examples:
        prompt = build_prompt(tiny, example, config.prompt, answer_room=config.new_tokens)
        generated = decode(prompt, score_for(example), tiny.stop_token_ids, steps=config.new_tokens)
        text = tiny.decode(generated)
        cut = min((i for i in (text.find(stop) for stop in stops) if i >= 0), default=len(text))
        predictions.append(text[:cut].strip())
    return predictions


def test_each_method_predicts_what_a_reference_decode_of_its_heads_and_prompts_gives(tiny, examples, heads_file, tmp_path):
    hf = twin()
    examples = examples[:3]
    weights = HeadWeights.load(heads_file).weights
    random_grid = HeadWeights.random_heads(tiny.geometry, 3, seed=0).weights
    masked = {
        "dps": patched(hf, output_scale=1 - weights),
        "random-heads": patched(hf, output_scale=1 - random_grid),
        "decore": patched(hf, output_scale=(weights == 0).float()),
    }
    full = lambda s: next_logits(hf, s)
    methods = {
        "greedy": (Greedy(), lambda e: full),
        "dps": (make_decoder("dps", gamma=2.0), lambda e: lambda s: contrast(full(s), next_logits(masked["dps"], s), 2.0)),
        "random-heads": (
            make_decoder("random-heads", gamma=2.0),
            lambda e: lambda s: contrast(full(s), next_logits(masked["random-heads"], s), 2.0),
        ),
        "decore": (
            make_decoder("decore"),
            lambda e: lambda s: contrast(full(s), next_logits(masked["decore"], s), 0.5, "logprobs"),
        ),
        "suppressed": (make_decoder("suppressed"), lambda e: lambda s: next_logits(masked["dps"], s)),
        "cad": (make_decoder("cad", gamma=2.0), None),
    }
    found = {}
    for name, (decoder, score_for) in methods.items():
        heads = str(heads_file) if name not in ("greedy", "cad") else None
        run = config(decoder=decoder, heads=heads, max_new_tokens=12, split="train")
        evaluate(tiny, examples, run, tmp_path / name, progress=False)
        found[name] = [record["prediction"] for record in lines(tmp_path / name)]
        if score_for is None:  # CAD: the prompt contrasted with the same example's prompt without the profile

            def score_for(example, run=run):
                bare = build_prompt(tiny, example, run.prompt, with_profile=False, answer_room=run.new_tokens)
                with_profile = len(build_prompt(tiny, example, run.prompt, answer_room=run.new_tokens))
                return lambda s: contrast(full(s), next_logits(hf, bare + s[with_profile:]), 2.0)

        assert found[name] == reference_predictions(tiny, examples, run, score_for), name
    for name in ("dps", "random-heads", "decore", "suppressed", "cad"):
        assert found[name] != found["greedy"], f"{name} predicted what greedy did: its heads or prompts were not used"


def test_discovery_split_warning_and_recorded_configuration(tiny, examples, heads_file, tmp_path: Path) -> None:
    dps = make_decoder("dps", gamma="entropy", site="query-scale", prefill="shared")
    with pytest.warns(UserWarning, match="discovered on the 'dev' split"):
        result = evaluate(tiny, examples[:2], config(decoder=dps, heads=str(heads_file)), tmp_path / "dps", progress=False)
    assert result["evaluated_on_discovery_split"] and "discovered" in result["warnings"][0]
    recorded = json.loads((tmp_path / "dps" / "config.json").read_text())
    assert result["config"] == recorded and recorded["method"] == "dps" and result["label"] == "dps"
    assert recorded["decoder"] == {
        "gamma": "entropy", "gamma_cap": None, "entropy_scale": "nats", "combine": "logits", "plausibility": None,
        "suppression": "weighted", "site": "query-scale", "prefill": "shared",
    }  # fmt: skip
    assert recorded["heads_digest"] and recorded["prompt"]["profile_k"] == 2
    other_split = evaluate(tiny, examples[:2], config(decoder=make_decoder("random-heads"), heads=str(heads_file), split="train"),
                           tmp_path / "random", progress=False)  # fmt: skip
    assert not other_split["evaluated_on_discovery_split"]
    with pytest.raises(InputError, match="dps needs --heads"):
        config(decoder=make_decoder("dps"))
    with pytest.raises(InputError, match="greedy takes no head weights"):
        config(heads=str(heads_file))
    with pytest.raises(InputError, match="dps: gamma must be a number >= 0 or 'entropy', got -1.0"):
        make_decoder("dps", gamma=-1.0)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--out", str(tmp_path), "--task", "LaMP-6", "--model", "none/such"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
