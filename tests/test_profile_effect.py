"""The profile-effect measure against forwards of an unwrapped twin of the model, and (slow) on the default model: the
demo set's profile must lower the reference NLL, and an end-to-end greedy evaluation runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reference_twin import tiny_twin, twin_token_nll

from workbench.data.prompts import PromptConfig, tokenized_examples
from workbench.data.sources import load_examples
from workbench.experiments.evaluation import EvalConfig, evaluate
from workbench.experiments.profile_effect import profile_nll, reference_nll


def test_reference_nll_matches_the_twin(tiny) -> None:
    prompt, target = tiny.encode("Headline:"), tiny.encode(" Rain")
    expected = twin_token_nll(tiny_twin(), prompt, target).mean()
    assert reference_nll(tiny, prompt, target) == pytest.approx(float(expected), abs=1e-5)


def test_profile_nll_table_equals_twin_forwards_of_each_prompt(tiny) -> None:
    examples = load_examples(None, "LaMP-7", "dev")[:3]
    config = PromptConfig(profile_k=2)
    table = profile_nll(tiny, examples, config)
    assert list(table["example_id"]) == [e.example_id for e in examples]
    assert list(table["style"]) == [e.style for e in examples]
    twin = tiny_twin()
    for row, pair in zip(table.itertuples(), tokenized_examples(tiny, examples, config)):
        with_profile = twin_token_nll(twin, pair.prompt_ids, pair.target_ids).mean()
        without = twin_token_nll(twin, pair.no_profile_prompt_ids, pair.target_ids).mean()
        assert row.nll_with_profile == pytest.approx(float(with_profile), abs=1e-5)
        assert row.nll_without_profile == pytest.approx(float(without), abs=1e-5)
        assert abs(float(with_profile - without)) > 1e-3  # the two prompts differ, so a swap is caught
        swapped = twin_token_nll(twin, pair.swapped_prompt_ids, pair.target_ids).mean()
        assert row.nll_swapped_profile == pytest.approx(float(swapped), abs=1e-5)
        assert abs(float(swapped - with_profile)) > 1e-3


@pytest.mark.slow
def test_demo_profile_lowers_reference_nll_on_the_default_model(default_lens) -> None:
    examples = load_examples(None, "LaMP-4", "dev")[:4]
    table = profile_nll(default_lens, examples)
    # the data card measures about -1 nat/token on all of dev; demand a clear drop on four examples
    assert (table["nll_with_profile"] - table["nll_without_profile"]).mean() < -0.3


@pytest.mark.slow
def test_greedy_evaluation_end_to_end_on_the_default_model(default_lens, tmp_path: Path) -> None:
    examples = load_examples(None, "LaMP-4", "dev")[:2]
    config = EvalConfig(task="LaMP-4", split="dev", model=default_lens.name, max_new_tokens=16, resamples=50)
    result = evaluate(default_lens, examples, config, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [e.example_id for e in examples]
    assert all(r["prediction"] and "\n" not in r["prediction"] for r in records)  # the plain format stops at a line end
    assert {"rouge-1", "rouge-L", "meteor", "style_match"} <= set(result["metrics"])
