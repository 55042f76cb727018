"""Attribution PCS against finite differences through the lens's own head masks."""

from __future__ import annotations

import pytest
import torch

from workbench.engine.masks import HeadMask
from workbench.scores.ablation import make_ablation
from workbench.scores.attribution import attribution_deltas, attribution_terms, head_gradients
from workbench.scores.nll import TargetSequence, mean_nll


def nll_with_scale(lens, sequence, ablation, head, scale):
    """Target NLL with one head's output at `z_ref + scale · (z − z_ref)`."""
    mask = ablation.together(lens, [head])
    grid = mask.scale.clone()
    grid[0, head[0], head[1]] = scale
    logits = lens.forward(list(sequence.ids), mask=HeadMask(grid, mask.z_ref, mask.site))
    return mean_nll(logits[:, sequence.positions], sequence.targets)[0]


@pytest.mark.parametrize("ablation", ["zero", "mean", "resid-slice"])
def test_attribution_equals_finite_differences(tiny, ablation):
    # (z_ref − z)·∂NLL/∂z = −dNLL/dscale at scale 1, since dz'/dscale = z − z_ref.
    sequence = TargetSequence(tuple(tiny.encode_chat("I hike on weekends.")), tuple(tiny.encode("Trail notes")))
    chosen = make_ablation(tiny, ablation, [sequence.ids])
    estimate = attribution_deltas(tiny, sequence, chosen)
    eps = 1e-2
    for layer, head in [(0, 0), (0, 3), (1, 1), (2, 2)]:
        below = nll_with_scale(tiny, sequence, chosen, (layer, head), 1 - eps)
        above = nll_with_scale(tiny, sequence, chosen, (layer, head), 1 + eps)
        expected = (below - above) / (2 * eps)
        assert abs(estimate[layer, head] - expected) < 1e-3 + 1e-2 * abs(expected), (layer, head)
    assert estimate.abs().max() > 1e-2


def test_gradients_match_autograd_on_a_single_layer_perturbation(tiny):
    """Directional derivative along a random direction of one head's z equals <grad, direction>."""
    sequence = TargetSequence(tuple(tiny.encode_chat("abc")), tuple(tiny.encode("def")))
    chosen = make_ablation(tiny, "zero")
    activations, gradients = head_gradients(tiny, sequence, chosen)
    layer, head = 1, 2
    direction = torch.randn(activations[layer][..., head, :].shape, generator=torch.Generator().manual_seed(0))
    eps = 1e-3

    def shifted(sign):
        def hook(z, hook):
            z = z.clone()
            z[..., head, :] += sign * eps * direction
            return z

        with tiny.intervene(None, [(f"blocks.{layer}.attn.hook_z", hook)]):
            logits = tiny.forward(list(sequence.ids))
        return mean_nll(logits[:, sequence.positions], sequence.targets)[0]

    expected = (shifted(1) - shifted(-1)) / (2 * eps)
    got = (gradients[layer][..., head, :].double() * direction.double()).sum()
    assert abs(got - expected) < 1e-3 + 1e-2 * abs(expected)
    assert abs(expected) > 1e-3


def test_magnitude_sums_the_absolute_terms_of_the_estimate(tiny):
    sequence = TargetSequence(tuple(tiny.encode_chat("I hike on weekends.")), tuple(tiny.encode("Trail notes")))
    chosen = make_ablation(tiny, "mean", [sequence.ids])
    estimate, magnitude = attribution_terms(tiny, sequence, chosen)
    activations, gradients = head_gradients(tiny, sequence, chosen)
    layer, head = 2, 1
    terms = (chosen.z_ref[layer, head].double() - activations[layer][0, :, head].double()) * gradients[layer][0, :, head].double()
    torch.testing.assert_close(magnitude[layer, head], terms.abs().sum())
    torch.testing.assert_close(estimate[layer, head], terms.sum())
    assert (magnitude >= estimate.abs() - 1e-12).all() and (magnitude > estimate.abs() + 1e-6).any()
