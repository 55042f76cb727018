"""Shards (in this process, no Ray): every slice of a run, merged, gives the files one process
writes, bit for bit: exact, attribution and hybrid PCS (the hybrid's candidates come from all
shards), validation tables, predictions and metrics; bad shards are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from same_results import assert_same_results
from typer.testing import CliRunner

import workbench.commands.discover as discover_command
from workbench.cli import app
from workbench.data.prompt_jsonl import tokenize_pair
from workbench.data.prompts import PromptConfig
from workbench.data.sources import load_examples
from workbench.decoding import make_decoder
from workbench.errors import InputError
from workbench.execution.shards import Shard, discover_shard, evaluate_shard, merge_run, validate_shard
from workbench.experiments.evaluation import EvalConfig, evaluate
from workbench.experiments.validation import head_sets, summarize_validation, validation_deltas
from workbench.heads import HeadWeights
from workbench.scores import PCSResult, score_heads
from workbench.scores.pcs import PCSScan, ScanOptions

TOPICS = ["cats", "rain", "jazz", "tea", "sun", "snow", "chess", "bread", "kites", "moss", "owls", "figs"]


@pytest.fixture(scope="module")
def examples(tiny):
    return [
        tokenize_pair(
            tiny, f"e{i}", f"u{i % 3}", f"Profile: likes {topic}. Write.", f"All about {topic}!", prompt_no_profile="Write."
        )
        for i, topic in enumerate(TOPICS)
    ]


def scoring(method: str, **changes) -> ScanOptions:
    return ScanOptions(**{"method": method, "variant": "standard", "ablation": "zero", "top_m": 3, "top_k": 2, "max_rows": 64,
                          "seed": 1, "task": "t", **changes})  # fmt: skip


SELECTION = {"top_k": 2, "top_percent": None, "min_score": -1.0, "norm": "max", "extra": {"split": "train"}}
METADATA = {"split": "train"}


def single_discovery(tiny, examples, method, **changes) -> tuple[PCSResult, HeadWeights]:
    result = score_heads(tiny, examples, scoring(method, **changes), progress=False)
    result.metadata.update(METADATA)
    return result, HeadWeights.from_scores(result, **SELECTION)


def run_shards(tiny, examples, run: Path, count: int, method: str, indices=None, **changes) -> list:
    return [
        discover_shard(
            tiny,
            run,
            Shard(index, count),
            examples,
            scan=scoring(method, **changes),
            selection=SELECTION,
            metadata=METADATA,
            options={"model": tiny.name},
        )
        for index in (range(count) if indices is None else indices)
    ]


def assert_merged_discovery_equals(run: Path, result: PCSResult, weights: HeadWeights) -> None:
    assert merge_run(run) == [run / "pcs.parquet", run / "heads.json"]
    merged = PCSResult.load(run / "pcs.parquet")
    assert torch.equal(merged.per_example, result.per_example)  # bit for bit
    assert torch.equal(merged.exact, result.exact)
    assert (merged.example_ids, merged.user_ids) == (result.example_ids, result.user_ids)
    assert merged.metadata == json.loads(json.dumps(result.metadata))
    assert json.loads((run / "heads.json").read_text()) == json.loads(json.dumps(weights.to_json()))


def test_shards_partition_the_items_in_order_in_whole_units():
    items = list(range(23))
    for count in (1, 2, 3, 5):
        for unit in (1, 2, 4):
            parts = [Shard(index, count).take(items, unit=unit) for index in range(count)]
            assert [item for part in parts for item in part] == items
            assert all(len(part) % unit == 0 for part in parts[:-1])
            assert max(map(len, parts)) - min(map(len, parts)) <= 2 * unit  # balanced up to whole units
    assert Shard.parse(" 2/3 ") == Shard(2, 3)
    for text, message in [("3/3", "0 <= I < N"), ("1/0", "N >= 1"), ("a/b", "I/N"), ("-1/2", "I/N"), ("1", "I/N")]:
        with pytest.raises(InputError, match=message):
            Shard.parse(text)
    with pytest.raises(InputError, match="shard 0/4 gets no examples: 3 examples for 4 shards"):
        Shard(0, 4).take([1, 2, 3])


@pytest.mark.parametrize(("method", "count", "ablation"), [("exact", 3, "mean"), ("attribution", 11, "zero")])
def test_sharded_scan_merged_equals_one_process(tiny, examples, tmp_path, method, count, ablation):
    """11 shards also check that shard 10 is joined after shard 9 (not in the folders' text order)."""
    chosen = examples[:5] if method == "exact" else examples
    result, weights = single_discovery(tiny, chosen, method, ablation=ablation)
    assert all(part is not None for part in run_shards(tiny, chosen, tmp_path, count, method, ablation=ablation))
    assert_merged_discovery_equals(tmp_path, result, weights)


def test_sharded_hybrid_waits_for_every_shards_attribution_and_uses_the_global_candidates(tiny, examples, tmp_path):
    chosen = examples[:6]
    result, weights = single_discovery(tiny, chosen, "hybrid", top_m=5)
    scan = PCSScan(tiny, chosen, scoring("hybrid", top_m=5), progress=False)
    own = scan.candidates(scan.estimates(chosen[3:]))
    assert sorted(own) != sorted(scan.candidates(scan.estimates(chosen)))  # shard 1's own candidates would be wrong
    assert run_shards(tiny, chosen, tmp_path, 2, "hybrid", indices=[0], top_m=5) == [None]  # shard 1's attribution is missing
    assert not (Shard(0, 2).folder(tmp_path) / "pcs.parquet").exists()
    with pytest.raises(InputError, match=r"missing shard 1/2 of 2"):
        merge_run(tmp_path)
    assert run_shards(tiny, chosen, tmp_path, 2, "hybrid", indices=[1], top_m=5)[0] is not None  # finds shard 0's
    with pytest.raises(InputError, match=r"shard 0/2 not finished; run them again"):
        merge_run(tmp_path)
    assert run_shards(tiny, chosen, tmp_path, 2, "hybrid", indices=[0], top_m=5)[0] is not None
    assert_merged_discovery_equals(tmp_path, result, weights)


def test_bad_shards_are_refused_in_one_line(tiny, examples, tmp_path):
    chosen = examples[:4]
    run = tmp_path / "run"
    with pytest.raises(InputError, match="no shards to merge"):
        merge_run(tmp_path)
    run_shards(tiny, chosen, run, 2, "attribution", indices=[0])
    with pytest.raises(InputError, match=r"missing shard 1/2 of 2$"):
        merge_run(run)
    with pytest.raises(InputError, match=r"shard 0/2 in .* was made with other options \(differs in: scoring\)"):
        run_shards(tiny, chosen, run, 2, "attribution", indices=[1], ablation="mean")
    with pytest.raises(InputError, match=r"shard 0/2 in .* was made on other examples"):
        run_shards(tiny, examples[1:5], run, 2, "attribution", indices=[1])
    with pytest.raises(InputError, match=r"is one of 2 shards, not 3"):
        run_shards(tiny, chosen, run, 3, "attribution", indices=[2])
    # Shards made elsewhere and copied in: other options, other counts (overlapping slices).
    other = tmp_path / "other"
    run_shards(tiny, chosen, other, 2, "attribution", indices=[1], seed=7)
    shutil.copytree(Shard(1, 2).folder(other), Shard(1, 2).folder(run))
    with pytest.raises(InputError, match=r"^shard 1/2 was made with other options \(differs in: scoring\)"):
        merge_run(run)
    shutil.rmtree(Shard(1, 2).folder(run))
    run_shards(tiny, chosen, tmp_path / "three", 3, "attribution", indices=[1])
    shutil.copytree(Shard(1, 3).folder(tmp_path / "three"), Shard(1, 3).folder(run))
    with pytest.raises(InputError, match=r"^shard 1/3 is one of 3 shards, not 2"):
        merge_run(run)


def test_sharded_validation_merged_equals_one_process(tiny, examples, tmp_path):
    chosen = examples[:5]
    weights = HeadWeights.random_heads(tiny.geometry, 3, seed=2)
    sets = head_sets(tiny, weights, n_random=3, seed=1)
    deltas = validation_deltas(tiny, chosen, sets, ablation="mean", progress=False)
    for index in range(2):
        validate_shard(tiny, tmp_path, Shard(index, 2), chosen, sets, ablation="mean", seed=3, options={})
    assert merge_run(tmp_path) == [tmp_path / "validation.parquet", tmp_path / "validation_summary.csv"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "validation.parquet"), deltas, check_exact=True)
    expected = summarize_validation(deltas, seed=3).to_csv(index=False)
    assert (tmp_path / "validation_summary.csv").read_text() == expected


@pytest.fixture(scope="module")
def heads_file(tiny, tmp_path_factory) -> Path:
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[0, 1], grid[1, 2], grid[2, 0] = 1.0, 1.0, 0.5
    path = tmp_path_factory.mktemp("heads") / "heads.json"
    HeadWeights(grid, extra={"split": "train", "data": "demo"}).save(path)
    return path


@pytest.mark.parametrize("method", ["greedy", "dps"])
def test_sharded_evaluation_merged_equals_one_process(tiny, tmp_path, heads_file, method):
    examples = load_examples(None, "LaMP-7", "dev")[:7]
    config = EvalConfig(task="LaMP-7", split="dev", model="tiny", max_new_tokens=4, batch_size=3, limit=5,
                        prompt=PromptConfig(profile_k=2), resamples=50, decoder=make_decoder(method),
                        heads=str(heads_file) if method == "dps" else None)  # fmt: skip
    single = evaluate(tiny, examples, config, tmp_path / "single", progress=False)
    run = tmp_path / "run"
    for index in (1, 0):  # any order
        evaluate_shard(tiny, run, Shard(index, 2), examples, config, progress=False)
    assert [len(json.loads(p.read_text())["example_ids"]) for p in sorted(run.glob("shards/*/shard.json"))] == [
        3,
        2,
    ]  # whole batches
    merge_run(run)
    for name in ("predictions.jsonl", "config.json", "metrics.json"):
        assert_same_results(run, tmp_path / "single", name)
    assert json.loads((run / "metrics.json").read_text())["n"] == single["n"] == 5


def test_cli_shards_and_merge(tiny, examples, tmp_path, monkeypatch):
    monkeypatch.setattr(discover_command, "load_lens", lambda *args: tiny)
    data = tmp_path / "train.jsonl"
    records = [
        {"id": f"e{i}", "user_id": "u", "prompt": f"Profile: {t}. Write.", "target": f"{t}!"} for i, t in enumerate(TOPICS[:4])
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    runner = CliRunner()
    run = lambda *args: runner.invoke(app, [str(a) for a in args])
    common = ("discover", "--data", data, "--method", "hybrid", "--top-k", 2, "--top-m", 3)
    assert run(*common, "--out", tmp_path / "single").exit_code == 0
    first = run(*common, "--out", tmp_path / "run", "--shard", "0/2")
    assert first.exit_code == 0 and "run this command again" in first.output, first.output
    assert run(*common, "--out", tmp_path / "run", "--shard", "1/2").exit_code == 0
    assert run(*common, "--out", tmp_path / "run", "--shard", "0/2").exit_code == 0
    merged = run("merge", tmp_path / "run")
    assert merged.exit_code == 0, merged.output
    for name in ("pcs.parquet", "heads.json"):
        assert_same_results(tmp_path / "run", tmp_path / "single", name)
    for arguments, message in [
        (("--shard", "2/2"), "error: shard 2/2: I/N needs N >= 1 and 0 <= I < N"),
        (("--shard", "1/3"), "error: shard 0/2 in"),
        (("--workers", "2"), "error: --workers needs --ray"),
    ]:
        failed = run(*common, "--out", tmp_path / "run", *arguments)
        assert failed.exit_code == 2 and failed.output.startswith(message) and failed.output.count("\n") == 1, failed.output
    missing = run("merge", tmp_path / "nowhere")
    assert missing.exit_code == 2 and missing.output == f"error: {tmp_path / 'nowhere'}: no such folder\n"


@pytest.mark.parametrize("name", ["validate", "evaluate"])
def test_cli_validate_and_evaluate_shards_merge_into_one_process_files(tiny, heads_file, tmp_path, monkeypatch, name):
    import workbench.commands.evaluate as evaluate_command
    import workbench.commands.validate as validate_command

    for module in (validate_command, evaluate_command):
        monkeypatch.setattr(module, "load_lens", lambda *args: tiny)
    data = tmp_path / "dev.jsonl"
    records = [{"id": f"e{i}", "user_id": "u", "prompt": f"Profile: {t}. Write.", "target": f"{t}!",
                "prompt_no_profile": "Write."} for i, t in enumerate(TOPICS[:3])]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    run = lambda *args: CliRunner().invoke(app, [str(a) for a in args])
    commands = {
        "validate": ("validate", "--data", data, "--heads", heads_file, "--n-random", 2, "--ablation", "mean", "--no-pattern-heads"),
        "evaluate": ("evaluate", "--task", "LaMP-7", "--limit", 2, "--batch-size", 1, "--max-new-tokens", 3,
                     "--profile-k", 1, "--method", "dps", "--heads", heads_file),
    }  # fmt: skip
    outputs = {"validate": ("validation.parquet", "validation_summary.csv"), "evaluate": ("predictions.jsonl", "metrics.json")}
    single = run(*commands[name], "--out", tmp_path / "single")
    assert single.exit_code == 0, single.output
    for shard in ("1/2", "0/2"):
        assert run(*commands[name], "--out", tmp_path / "run", "--shard", shard).exit_code == 0
    assert run("merge", tmp_path / "run").exit_code == 0
    for output in outputs[name]:
        assert_same_results(tmp_path / "run", tmp_path / "single", output)
