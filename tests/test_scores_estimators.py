"""Head-score estimators against hand-written references: exact single-head ablation (integrated
gradients converge to it), the joint ablation of every head (the shared path's completeness),
gradients of forwards with detached residual updates (GradDrop), ablation at the scored positions
only by a hand-written hook (target-exact), and bit-equal results at 1, 2 and 3 threads."""

from __future__ import annotations

import pytest
import torch
from test_numerics import threads

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.engine.adapters import FAMILIES
from workbench.engine.interventions import Recording
from workbench.engine.masks import HeadMask
from workbench.engine.models import tiny_model
from workbench.errors import InputError
from workbench.scores import score_heads
from workbench.scores.ablation import make_ablation
from workbench.scores.attribution import attribution_terms, head_gradients
from workbench.scores.estimators import (
    Estimator,
    estimate_heads,
    graddrop,
    integrated_gradients,
    shared_path_gradients,
    target_ablation_deltas,
    target_exact,
)
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence, mean_nll
from workbench.scores.pcs import hybrid_candidates


@pytest.fixture(scope="module")
def sequence(tiny):
    return TargetSequence(tuple(tiny.encode_chat("I hike on weekends.")), tuple(tiny.encode("Trail notes")))


def target_nll(lens, sequence, mask=None, hooks=()):
    logits = lens.run(list(sequence.ids), mask=mask, hooks=hooks).logits
    return mean_nll(logits[:, sequence.positions], sequence.targets)


@pytest.mark.parametrize("ablation", ["zero", "mean", "resid-slice"])
def test_integrated_gradients_converge_to_exact_single_head_ablation(tiny, sequence, ablation):
    chosen = make_ablation(tiny, ablation, [sequence.ids])
    exact = exact_deltas(tiny, sequence, chosen)
    coarse = integrated_gradients(tiny, sequence, chosen, 1).estimate
    fine = integrated_gradients(tiny, sequence, chosen, 24, max_rows=7).estimate
    # the midpoint rule's error falls as 1/steps²: 24 steps are ~500 times closer than 1 where the
    # effect is not linear in the head's scale
    assert (fine - exact).abs().max() < 2e-4 + 1e-3 * exact.abs().max()
    assert (coarse - exact).abs().max() > 10 * (fine - exact).abs().max()
    assert exact.abs().max() > 1e-2


def test_integrated_gradients_magnitude_sums_the_absolute_path_averaged_terms(tiny, sequence):
    """One step: the terms at the midpoint of each head's path, from a full forward by hand."""
    chosen = make_ablation(tiny, "mean", [sequence.ids])
    found = integrated_gradients(tiny, sequence, chosen, 1)
    layer, head = 1, 2
    scale = torch.ones(1, tiny.n_layers, tiny.n_heads)
    scale[0, layer, head] = 0.5
    activations, gradients = head_gradients(tiny, sequence, chosen, scale=scale)
    terms = (chosen.z_ref[layer, head].double() - activations[layer][0, :, head].double()) * gradients[layer][0, :, head].double()
    torch.testing.assert_close(found.estimate[layer, head], terms.sum())
    torch.testing.assert_close(found.magnitude[layer, head], terms.abs().sum())


def test_scaled_rows_get_the_derivative_of_their_own_forward(tiny, sequence):
    """Rows with different head scales: `(z_ref − z) · gradient` of row r equals minus the finite
    difference of row r's NLL along the head's scale, each side a forward with a one-row mask."""
    chosen = make_ablation(tiny, "mean", [sequence.ids])
    scale = torch.ones(3, tiny.n_layers, tiny.n_heads)
    scale[0, 0, 1] = 0.3
    scale[1, 1] = 0.6
    scale[2] = 0.5
    activations, gradients = head_gradients(tiny, sequence, chosen, scale=scale)
    eps = 1e-2
    for row in range(3):
        for layer, head in [(0, 1), (1, 2), (2, 0)]:
            difference = chosen.z_ref[layer, head].double() - activations[layer][row, :, head].double()
            got = (difference * gradients[layer][row, :, head].double()).sum()
            nll = []
            for sign in (1, -1):
                shifted = scale[row : row + 1].clone()
                shifted[0, layer, head] += sign * eps
                nll.append(target_nll(tiny, sequence, HeadMask(shifted, chosen.z_ref))[0])
            expected = -(nll[0] - nll[1]) / (2 * eps)
            assert abs(got - expected) < 1e-3 + 1e-2 * abs(expected), (row, layer, head)


def test_the_shared_path_adds_up_to_ablating_every_head_at_once(tiny, sequence):
    """Completeness of integrated gradients: the heads' shares sum to the joint ablation's effect."""
    chosen = make_ablation(tiny, "mean", [sequence.ids])
    shares = shared_path_gradients(tiny, sequence, chosen, 32).estimate
    every = HeadMask.ablate(tiny.geometry, tiny.geometry.all_heads(), z_ref=chosen.z_ref)
    joint = float(target_nll(tiny, sequence, every)[0] - target_nll(tiny, sequence)[0])
    assert abs(float(shares.sum()) - joint) < 1e-3 * max(1.0, abs(joint))
    assert abs(joint) > 1e-2


def test_graddrop_equals_attribution_through_forwards_with_detached_block_updates(tiny, sequence):
    """GradDrop by its definition: for each block b, a forward whose block-b attention and MLP
    outputs are detached, differentiated at every head output; Σ_b |attribution| / (L − 1)."""
    chosen = make_ablation(tiny, "zero")
    found = graddrop(tiny, sequence, chosen)
    torch.testing.assert_close(found.estimate, attribution_terms(tiny, sequence, chosen)[0])
    total = torch.zeros(tiny.n_layers, tiny.n_heads, dtype=torch.float64)
    for block in range(tiny.n_layers):
        detached = [(tiny.hook_name(kind, block), lambda x, hook: x.detach()) for kind in ("attn_out", "mlp_out")]
        heads = Recording([tiny.hook_name("z", layer) for layer in range(tiny.n_layers)], differentiable=True)
        with torch.enable_grad():
            logits = tiny.run(list(sequence.ids), hooks=detached, record=heads, grad=True).logits
            nll = mean_nll(logits[:, sequence.positions], sequence.targets)[0]
            gradients = torch.autograd.grad(nll, heads.values(), allow_unused=True)
        for layer, (z, gradient) in enumerate(zip(heads.values(), gradients)):
            if gradient is not None:
                z = z.detach().reshape(*z.shape[:2], tiny.n_heads, -1)
                gradient = gradient.reshape(z.shape)
                total[layer] += (-z.double() * gradient.double()).sum(dim=(0, 1, 3)).abs()
    torch.testing.assert_close(found.magnitude, total / (tiny.n_layers - 1), atol=1e-7, rtol=1e-5)
    assert (found.magnitude - found.estimate.abs()).abs().max() > 1e-4  # the cut paths matter


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_target_ablation_equals_a_hook_that_ablates_only_the_scored_positions(tiny, sequence, ablation):
    chosen = make_ablation(tiny, ablation, [sequence.ids])
    positions = sequence.positions
    deltas = target_ablation_deltas(tiny, sequence, chosen, max_rows=5)  # chunks that start mid-layer
    clean = target_nll(tiny, sequence)[0]
    for layer, head in tiny.geometry.all_heads():

        def ablate(z, hook, head=head, layer=layer):
            z = z.clone()
            z[:, positions, head] = 0.0 if chosen.z_ref is None else chosen.z_ref[layer, head]
            return z

        expected = target_nll(tiny, sequence, hooks=[(tiny.hook_name("z", layer), ablate)])[0] - clean
        assert abs(deltas[layer, head] - expected) < 1e-5, (layer, head)
    assert deltas.abs().max() > 1e-2


def test_target_exact_adds_attribution_outside_the_scored_positions(tiny, sequence):
    chosen = make_ablation(tiny, "mean", [sequence.ids])
    found = target_exact(tiny, sequence, chosen)
    exact_part = target_ablation_deltas(tiny, sequence, chosen)
    activations, gradients = head_gradients(tiny, sequence, chosen)
    outside = [p for p in range(len(sequence.ids)) if p not in set(sequence.positions.tolist())]
    layer, head = 1, 3
    terms = (chosen.z_ref[layer, head].double() - activations[layer][0, outside, head].double()) * gradients[layer][
        0, outside, head
    ].double()
    torch.testing.assert_close(found.estimate[layer, head], exact_part[layer, head] + terms.sum())
    torch.testing.assert_close(found.magnitude[layer, head], exact_part[layer, head].abs() + terms.abs().sum())


def test_estimator_names_and_steps_are_checked():
    assert Estimator.parse("ig:4") == Estimator("ig", 4) and Estimator.parse("ig:4").describe() == "ig:4"
    assert Estimator.parse("graddrop").describe() == "graddrop"
    for bad, words in [("gradient", "unknown estimator"), ("ig:0", "at least 1 step"), ("graddrop:2", "take a step count"),
                       ("ig:x", "whole number")]:  # fmt: skip
        with pytest.raises(InputError, match=words):
            Estimator.parse(bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_estimators_are_bit_equal_at_any_thread_count(family):
    lens = tiny_model(family=family)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (90,), generator=generator).tolist()
    sequence = TargetSequence(tuple(ids[:70]), tuple(ids[70:]))
    ablation = make_ablation(lens, "mean", [ids])
    names = ["graddrop", "eap-ig:2"] + (["target-exact"] if lens.fast_path_refusal() is None else [])
    names += ["ig:1"] if family in ("llama", "gemma3") else []  # its own restart path; two families keep the test short
    results = {}
    for count in (1, 2, 3):
        with threads(count):
            results[count] = [estimate_heads(lens, sequence, ablation, Estimator.parse(name)) for name in names]
    for count in (2, 3):
        for name, first, other in zip(names, results[1], results[count]):
            assert torch.equal(first.estimate, other.estimate) and torch.equal(first.magnitude, other.magnitude), (name, count)


@pytest.fixture(scope="module")
def examples(tiny):
    return [
        tokenize_pair(tiny, f"e{i}", f"u{i}", f"Profile: likes {topic}. Write a post.", f"All about {topic}!")
        for i, topic in enumerate(["cats", "rain", "jazz"])
    ]


def test_attribution_and_hybrid_scans_score_heads_by_the_chosen_estimator(tiny, examples, tmp_path):
    """The scan's estimates are the estimator's (reference: the estimator called on each example
    with the scan's mean-ablation reference), the hybrid takes its candidates from them, and a
    checkpoint made with one estimator refuses another."""
    estimator = Estimator("target-exact")
    ablation = make_ablation(tiny, "mean", [[*e.prompt_ids, *e.target_ids] for e in examples])
    found = [estimate_heads(tiny, TargetSequence(e.prompt_ids, e.target_ids), ablation, estimator) for e in examples]
    scan = score_heads(tiny, examples, method="attribution", ablation="mean", estimator="target-exact", progress=False)
    torch.testing.assert_close(scan.per_example, torch.stack([f.estimate for f in found]))
    assert scan.metadata["estimator"] == "target-exact"
    hybrid = score_heads(tiny, examples, method="hybrid", ablation="mean", estimator="target-exact", top_m=4,
                         checkpoint=tmp_path / "scan", progress=False)  # fmt: skip
    estimate, magnitude = (torch.stack([getattr(f, name) for f in found]).mean(dim=0) for name in ("estimate", "magnitude"))
    assert set(map(tuple, hybrid.exact.nonzero().tolist())) == set(hybrid_candidates(estimate, magnitude, 4))
    assert set(hybrid_candidates(estimate, magnitude, 4)) != set(
        hybrid_candidates(*attribution_mean(tiny, examples, ablation), 4)
    )
    with pytest.raises(InputError, match="estimator"):
        score_heads(tiny, examples, method="hybrid", ablation="mean", estimator="graddrop", top_m=4,
                    checkpoint=tmp_path / "scan", progress=False)  # fmt: skip


def attribution_mean(lens, examples, ablation):
    grids = [attribution_terms(lens, TargetSequence(e.prompt_ids, e.target_ids), ablation) for e in examples]
    return torch.stack([g[0] for g in grids]).mean(dim=0), torch.stack([g[1] for g in grids]).mean(dim=0)


@pytest.mark.slow
def test_target_exact_is_bit_equal_at_1_and_2_threads_on_the_default_model(default_lens):
    """Its cached steps have few rows, whose products sum in a thread-dependent order (about 4e-6
    nats apart on this model before they ran on one thread)."""
    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples

    example = tokenized_examples(default_lens, load_examples(None, "LaMP-4", "train")[:1], PromptConfig())[0]
    sequence = TargetSequence(example.prompt_ids, example.target_ids)
    ablation = make_ablation(default_lens, "zero")
    results = {}
    for count in (1, 2):
        with threads(count):
            results[count] = target_exact(default_lens, sequence, ablation)
    assert torch.equal(results[1].estimate, results[2].estimate) and torch.equal(results[1].magnitude, results[2].magnitude)
