"""score_heads: methods and variants on the engines, resumable checkpoints, bad input."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.errors import InputError
from workbench.scores import score_heads
from workbench.scores.ablation import make_ablation
from workbench.scores.attribution import attribution_deltas, attribution_terms
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence
from workbench.scores.pcs import hybrid_candidates


@pytest.fixture(scope="module")
def examples(tiny):
    return [
        tokenize_pair(
            tiny,
            f"e{i}",
            f"u{i % 2}",
            f"Profile: likes {topic}. Write a post.",
            f"All about {topic}!",
            prompt_no_profile="Write a post.",
            prompt_swapped=f"Profile: likes {other}. Write a post.",
        )
        for i, (topic, other) in enumerate([("cats", "dogs"), ("rain", "snow"), ("jazz", "rock")])
    ]


def sequence(example, prompt_field="prompt_ids"):
    return TargetSequence(getattr(example, prompt_field), example.target_ids)


@pytest.mark.parametrize(
    ("variant", "control"),
    [("standard", None), ("profile-contrast", "no_profile_prompt_ids"), ("swap-contrast", "swapped_prompt_ids")],
)
def test_exact_variants_are_differences_of_ablation_effects(tiny, examples, variant, control):
    result = score_heads(tiny, examples, variant=variant, progress=False)
    zero = make_ablation(tiny, "zero")
    for index, example in enumerate(examples):
        expected = exact_deltas(tiny, sequence(example), zero)
        if control:
            expected = expected - exact_deltas(tiny, sequence(example, control), zero)
        torch.testing.assert_close(result.per_example[index], expected, atol=1e-9, rtol=0)
    assert result.exact.all()
    assert result.metadata["variant"] == variant


def test_hybrid_rescoring_top_candidates_exactly(tiny, examples):
    examples = examples[:2]
    hybrid = score_heads(tiny, examples, method="hybrid", top_m=5, progress=False)
    attribution = score_heads(tiny, examples, method="attribution", progress=False)
    exact = score_heads(tiny, examples, method="exact", progress=False)
    assert int(hybrid.exact.sum()) == 5 and not attribution.exact.any()
    zero = make_ablation(tiny, "zero")
    magnitude = torch.stack([attribution_terms(tiny, sequence(e), zero)[1] for e in examples]).mean(dim=0)
    best_estimates = torch.topk(attribution.mean().flatten(), 3).indices
    assert hybrid.exact.flatten()[best_estimates].all()
    expected = {tuple(head) for head in hybrid_candidates(attribution.mean(), magnitude, 5)}
    assert {tuple(head) for head in torch.nonzero(hybrid.exact).tolist()} == expected
    torch.testing.assert_close(hybrid.per_example[:, hybrid.exact], exact.per_example[:, hybrid.exact])
    torch.testing.assert_close(hybrid.per_example[:, ~hybrid.exact], attribution.per_example[:, ~hybrid.exact])
    torch.testing.assert_close(attribution.per_example[0], attribution_deltas(tiny, sequence(examples[0]), zero))


def test_hybrid_candidates_take_half_by_estimate_then_the_largest_magnitudes():
    estimate = torch.tensor([[0.5, 0.4, -0.9], [0.1, 0.0, 0.2]], dtype=torch.float64)
    magnitude = torch.tensor([[0.6, 0.5, 2.0], [0.3, 0.1, 0.2]], dtype=torch.float64)
    # best estimates (0,0), (0,1); then by magnitude (0,2) (wrong sign, large), not (0,0) again
    assert hybrid_candidates(estimate, magnitude, 3) == [(0, 0), (0, 1), (0, 2)]
    assert hybrid_candidates(estimate, magnitude, 4) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert hybrid_candidates(estimate, magnitude, 1) == [(0, 0)]


def test_mean_ablation_defaults_to_the_examples_as_reference(tiny, examples):
    result = score_heads(tiny, examples[:1], ablation="mean", progress=False)
    reference = make_ablation(tiny, "mean", [sequence(e).ids for e in examples[:1]])
    torch.testing.assert_close(result.per_example[0], exact_deltas(tiny, sequence(examples[0]), reference), atol=1e-9, rtol=0)


def test_interrupted_run_resumes_to_identical_parquet(tiny, examples, tmp_path, monkeypatch):
    examples = examples[:2]
    full = score_heads(tiny, examples, method="hybrid", top_m=4, checkpoint=tmp_path / "a", progress=False)
    full.save(tmp_path / "full.parquet")

    import workbench.scores.pcs as pcs

    calls = {"n": 0}
    original = pcs.exact_deltas

    def dies_on_second_example(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(pcs, "exact_deltas", dies_on_second_example)
    with pytest.raises(KeyboardInterrupt):
        score_heads(tiny, examples, method="hybrid", top_m=4, checkpoint=tmp_path / "b", progress=False)
    counted = {"n": 0}

    def counting(*args, **kwargs):
        counted["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(pcs, "exact_deltas", counting)
    resumed = score_heads(tiny, examples, method="hybrid", top_m=4, checkpoint=tmp_path / "b", progress=False)
    assert counted["n"] == len(examples) - 1  # the first example's exact pass was kept
    resumed.save(tmp_path / "resumed.parquet")
    assert (tmp_path / "full.parquet").read_bytes() == (tmp_path / "resumed.parquet").read_bytes()


def test_checkpoint_with_other_arguments_is_refused(tiny, examples, tmp_path):
    score_heads(tiny, examples[:1], checkpoint=tmp_path, progress=False)
    with pytest.raises(InputError, match="other arguments.*ablation"):
        score_heads(tiny, examples[:1], ablation="resid-slice", checkpoint=tmp_path, progress=False)
    with pytest.raises(InputError, match="examples"):
        score_heads(tiny, examples[1:2], checkpoint=tmp_path, progress=False)


def test_bad_arguments_get_clear_errors(tiny, examples):
    bare = tokenize_pair(tiny, "bare", "u", "Write.", "Text")
    cases = [
        (dict(examples=[]), "no examples"),
        (dict(method="magic"), "unknown method 'magic'"),
        (dict(variant="other"), "unknown variant"),
        (dict(ablation="half"), "unknown ablation 'half'"),
        (dict(method="hybrid", top_m=10_000), "top_m must lie in 1..12"),
        (dict(examples=[examples[0], examples[0]]), "duplicate example id 'e0'"),
        (dict(examples=[bare], variant="profile-contrast"), "example 'bare'.*prompt_no_profile"),
        (dict(examples=[bare], variant="swap-contrast"), "prompt_swapped"),
    ]
    for overrides, message in cases:
        arguments = {"examples": examples, "progress": False, **overrides}
        with pytest.raises(InputError, match=message):
            score_heads(tiny, arguments.pop("examples"), **arguments)


def test_target_longer_than_context_is_refused(tiny, examples):
    from dataclasses import replace

    too_long = replace(examples[0], target_ids=(5,) * tiny.geometry.n_ctx)
    with pytest.raises(InputError, match="exceeds the model context"):
        score_heads(tiny, [too_long], progress=False)


def test_result_frame_columns(tiny, examples):
    frame = score_heads(tiny, examples[:2], method="attribution", progress=False).to_frame()
    assert list(frame.columns) == ["example_id", "user_id", "layer", "head", "pcs", "exact"]
    assert len(frame) == 2 * tiny.geometry.n_total_heads
    assert isinstance(frame, pd.DataFrame) and not frame["exact"].any()
