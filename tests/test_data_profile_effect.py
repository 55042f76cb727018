"""The profile-effect measure against a hand-written NLL, and (slow) on the default model: the
demo set's profile must lower the reference NLL, and an end-to-end greedy evaluation runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.data.profile_effect import profile_nll, reference_nll
from workbench.data.prompts import PromptConfig
from workbench.data.sources import load_examples
from workbench.runs import EvalConfig, evaluate


def test_reference_nll_matches_a_hand_computation(tiny) -> None:
    prompt, target = tiny.encode("Headline:"), tiny.encode(" Rain")
    logits = tiny.forward(prompt + target)[0].double()
    hand = -sum(torch.log_softmax(logits[len(prompt) - 1 + t], -1)[token] for t, token in enumerate(target)) / len(target)
    assert reference_nll(tiny, prompt, target) == pytest.approx(float(hand), abs=1e-5)


def test_profile_nll_table(tiny) -> None:
    examples = load_examples(None, "LaMP-7", "dev")[:3]
    table = profile_nll(tiny, examples, PromptConfig(profile_k=2))
    assert list(table["example_id"]) == [e.example_id for e in examples]
    assert table[["nll_with_profile", "nll_without_profile"]].gt(0).all().all()


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
