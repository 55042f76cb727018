"""score_heads: methods and variants against a naive twin loop, the hybrid rule written out by
hand, checkpoints that resume and extend, bad input."""

from __future__ import annotations

import re
from dataclasses import replace

import pandas as pd
import pytest
import torch
from reference_twin import ablated, tiny_twin, twin_token_nll

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.errors import InputError
from workbench.scores import score_heads
from workbench.scores.ablation import make_ablation
from workbench.scores.attribution import attribution_terms
from workbench.scores.nll import TargetSequence

CONTROLS = {"standard": None, "profile-contrast": "no_profile_prompt_ids", "swap-contrast": "swapped_prompt_ids"}


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


@pytest.fixture(scope="module")
def twin():
    return tiny_twin()


def naive_effect(twin, prompt, target, head, z_ref=None):
    """NLL(head ablated) − NLL(clean) from two full forwards of the twin."""
    clean = twin_token_nll(twin, prompt, target).mean()
    return float(twin_token_nll(twin, prompt, target, ablated([head]), z_ref=z_ref).mean() - clean)


def naive_pcs(twin, example, variant, head, z_ref=None):
    score = naive_effect(twin, example.prompt_ids, example.target_ids, head, z_ref)
    control = CONTROLS[variant]
    if control is not None:
        score -= naive_effect(twin, getattr(example, control), example.target_ids, head, z_ref)
    return score


@pytest.mark.parametrize("variant", list(CONTROLS))
def test_exact_variants_equal_differences_of_naive_ablation_effects(tiny, twin, examples, variant):
    result = score_heads(tiny, examples[:2], variant=variant, progress=False)
    assert result.exact.all() and result.metadata["variant"] == variant
    for index, example in enumerate(examples[:2]):
        for head in [(0, 0), (0, 3), (1, 2), (2, 1)]:
            assert result.per_example[index][head].item() == pytest.approx(naive_pcs(twin, example, variant, head), abs=1e-5)
    assert result.per_example.abs().max() > 1e-3


def hand_candidates(estimate, magnitude, top_m):
    """The hybrid rule as documented, written independently: ⌈top_m / 2⌉ best by estimate, then
    the largest magnitudes among the others; ties to the lower layer, then the lower head."""
    heads = [(layer, head) for layer in range(estimate.shape[0]) for head in range(estimate.shape[1])]
    by_estimate = sorted(heads, key=lambda h: (-float(estimate[h]), h))[: -(-top_m // 2)]
    rest = sorted((h for h in heads if h not in by_estimate), key=lambda h: (-float(magnitude[h]), h))
    return set(by_estimate + rest[: top_m - len(by_estimate)])


def test_hybrid_rescores_the_rule_s_candidates_exactly(tiny, twin, examples):
    examples = examples[:2]
    hybrid = score_heads(tiny, examples, method="hybrid", top_m=5, progress=False)
    attribution = score_heads(tiny, examples, method="attribution", progress=False)
    zero = make_ablation(tiny, "zero")
    terms = [attribution_terms(tiny, TargetSequence(e.prompt_ids, e.target_ids), zero) for e in examples]
    estimate = torch.stack([t[0] for t in terms]).mean(dim=0)
    magnitude = torch.stack([t[1] for t in terms]).mean(dim=0)
    expected = hand_candidates(estimate, magnitude, 5)
    assert {tuple(h) for h in torch.nonzero(hybrid.exact).tolist()} == expected
    for index, example in enumerate(examples):
        for head in expected:
            assert hybrid.per_example[index][head].item() == pytest.approx(naive_pcs(twin, example, "standard", head), abs=1e-5)
    torch.testing.assert_close(attribution.per_example, torch.stack([t[0] for t in terms]))
    torch.testing.assert_close(hybrid.per_example[:, ~hybrid.exact], attribution.per_example[:, ~hybrid.exact])
    assert not attribution.exact.any()


def test_mean_ablation_defaults_to_the_examples_as_reference(tiny, twin, examples):
    result = score_heads(tiny, examples[:2], ablation="mean", progress=False)
    inputs: dict[int, list[torch.Tensor]] = {}
    handles = [
        layer.self_attn.o_proj.register_forward_pre_hook(lambda m, args, i=i: inputs.setdefault(i, []).append(args[0][0]))
        for i, layer in enumerate(twin.model.layers)
    ]
    with torch.no_grad():
        for example in examples[:2]:
            twin(torch.tensor([list(example.prompt_ids + example.target_ids)]))
    for handle in handles:
        handle.remove()
    shape = (tiny.n_heads, tiny.d_head)
    z_ref = torch.stack([torch.cat(inputs[i]).double().mean(dim=0).reshape(shape).float() for i in range(tiny.n_layers)])
    for head in [(0, 1), (2, 3)]:
        expected = naive_pcs(twin, examples[0], "standard", head, z_ref=z_ref)
        assert abs(expected - naive_pcs(twin, examples[0], "standard", head)) > 1e-4  # mean differs from zero
        assert result.per_example[0][head].item() == pytest.approx(expected, abs=1e-5)


def counting(monkeypatch, name="exact_deltas", die_at=None):
    """Count (and optionally interrupt) calls to one of pcs's scorers; returns the call log."""
    import workbench.scores.pcs as pcs

    original, calls = getattr(pcs, name), []

    def wrapped(*args, **kwargs):
        calls.append(args[3] if len(args) > 3 else kwargs.get("heads"))
        if die_at is not None and len(calls) == die_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(pcs, name, wrapped)
    return calls


def test_interrupted_run_resumes_to_identical_parquet(tiny, examples, tmp_path, monkeypatch):
    examples = examples[:2]
    full = score_heads(tiny, examples, method="hybrid", top_m=4, checkpoint=tmp_path / "a", progress=False)
    full.save(tmp_path / "full.parquet")
    with monkeypatch.context() as patch:
        counting(patch, die_at=2)
        with pytest.raises(KeyboardInterrupt):
            score_heads(tiny, examples, method="hybrid", top_m=4, checkpoint=tmp_path / "b", progress=False)
    calls = counting(monkeypatch)
    resumed = score_heads(tiny, examples, method="hybrid", top_m=4, checkpoint=tmp_path / "b", progress=False)
    assert len(calls) == len(examples) - 1  # the first example's exact pass was kept
    resumed.save(tmp_path / "resumed.parquet")
    assert (tmp_path / "full.parquet").read_bytes() == (tmp_path / "resumed.parquet").read_bytes()


def test_more_examples_reuse_the_finished_ones_and_the_bar_starts_there(tiny, examples, tmp_path, monkeypatch, capsys):
    score_heads(tiny, examples[:2], checkpoint=tmp_path, progress=False)
    calls = counting(monkeypatch)
    capsys.readouterr()
    extended = score_heads(tiny, examples, checkpoint=tmp_path, progress=True)
    assert len(calls) == 1  # only the new example was scored
    bar = capsys.readouterr().err
    assert re.search(r"exact PCS:\s+67%.*2/3", bar) and not re.search(r"\b0/3\b", bar)
    fresh = score_heads(tiny, examples, progress=False)
    assert torch.equal(extended.per_example, fresh.per_example)
    assert extended.example_ids == ["e0", "e1", "e2"]


def test_an_example_whose_tokens_changed_is_scored_again(tiny, examples, tmp_path, monkeypatch):
    score_heads(tiny, examples[:2], variant="profile-contrast", checkpoint=tmp_path, progress=False)
    changed = replace(examples[1], no_profile_prompt_ids=examples[1].no_profile_prompt_ids[:-1])  # same id, other control
    calls = counting(monkeypatch)
    score_heads(tiny, [examples[0], changed], variant="profile-contrast", checkpoint=tmp_path, progress=False)
    assert len(calls) == 2  # both sequences of the changed example, none of the unchanged one


def candidates_of(lens, examples, top_m):
    result = score_heads(lens, examples, method="hybrid", top_m=top_m, progress=False)
    return {tuple(head) for head in torch.nonzero(result.exact).tolist()}


def test_a_hybrid_entry_for_other_candidates_is_completed_not_recomputed(tiny, examples, tmp_path, monkeypatch):
    first = examples[:2]
    old_heads = candidates_of(tiny, first, 5)
    third = tokenize_pair(tiny, "x", "u", "Hi.", "Nothing like it.")
    new_heads = candidates_of(tiny, [*first, third], 5)
    assert new_heads != old_heads  # the third example changes the candidates: the first two entries need completing
    score_heads(tiny, first, method="hybrid", top_m=5, checkpoint=tmp_path, progress=False)
    attribution_calls = counting(monkeypatch, "estimate_heads")
    exact_calls = counting(monkeypatch)
    extended = score_heads(tiny, [*first, third], method="hybrid", top_m=5, checkpoint=tmp_path, progress=False)
    assert len(attribution_calls) == 1  # attribution of the first two examples was kept
    # one call per example (one sequence each); the first two score only the heads their entries lacked
    assert [set(heads) for heads in exact_calls] == [new_heads - old_heads] * 2 + [new_heads]
    monkeypatch.undo()
    fresh = score_heads(tiny, [*first, third], method="hybrid", top_m=5, progress=False)
    assert torch.equal(extended.exact, fresh.exact)
    torch.testing.assert_close(extended.per_example, fresh.per_example, atol=1e-6, rtol=0)


def test_checkpoint_with_other_options_is_refused_naming_them(tiny, examples, tmp_path):
    score_heads(tiny, examples[:1], checkpoint=tmp_path, progress=False)
    with pytest.raises(InputError, match=r"differs in: ablation \(zero -> resid-slice\)") as refused:
        score_heads(tiny, examples[:1], ablation="resid-slice", checkpoint=tmp_path, progress=False)
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match=r"differs in: method \(exact -> hybrid\), screen .*, top_m \(null -> 3\)"):
        score_heads(tiny, examples[:1], method="hybrid", checkpoint=tmp_path, progress=False)
    score_heads(tiny, examples[1:2], checkpoint=tmp_path, seed=5, task="other", progress=False)  # labels only


def test_bad_arguments_get_clear_errors(tiny, examples):
    bare = tokenize_pair(tiny, "bare", "u", "Write.", "Text")
    cases = [
        (dict(examples=[]), "no examples"),
        (dict(method="magic"), "scan: method must be 'exact', 'attribution' or 'hybrid', got 'magic'"),
        (dict(variant="other"), "scan: variant must be .*, got 'other'"),
        (dict(ablation="half"), "scan: ablation must be 'zero', 'mean' or 'resid-slice', got 'half'"),
        (dict(max_rows=0), "scan: max_rows must be an integer >= 1, got 0"),
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
    too_long = replace(examples[0], target_ids=(5,) * tiny.geometry.n_ctx)
    with pytest.raises(InputError, match="exceeds the model context"):
        score_heads(tiny, [too_long], progress=False)


def test_result_frame_columns(tiny, examples):
    frame = score_heads(tiny, examples[:2], method="attribution", progress=False).to_frame()
    assert list(frame.columns) == ["example_id", "user_id", "layer", "head", "pcs", "exact"]
    assert len(frame) == 2 * tiny.geometry.n_total_heads
    assert isinstance(frame, pd.DataFrame) and not frame["exact"].any()
