"""Attribution PCS: one forward and one backward per sequence instead of one run per head.

The first-order estimate of a head's ablation effect is `(z_ref − z) · ∂NLL/∂z`, summed over
positions and the head's dimensions (`z_ref = 0` for zero ablation). For `resid-slice` the same
is taken on the residual slice the authors' code zeroes. Cheap, but only an estimate: the
hybrid method re-scores its best candidates exactly.

Where a head's effect is far from linear, the estimate can even have the wrong sign (on the
default model, one of the exact top-10 heads of the benchmark ranked 263rd of 270).
The *magnitude* `Σ |(z_ref − z) ⊙ ∂NLL/∂z|` (the same terms without cancellation) bounds how
far the linear terms can move the loss; the hybrid method also screens candidates by it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from workbench.lens import Lens
from workbench.numerics import invariant_grad
from workbench.scores.ablation import Ablation
from workbench.scores.nll import TargetSequence, mean_nll
from workbench.tensor_types import HeadGrid, HeadOutputs

FINAL_NORM_INPUT = "ln_final.hook_in"


def head_gradients(lens: Lens, sequence: TargetSequence, ablation: Ablation) -> tuple[list[HeadOutputs], list[HeadOutputs]]:
    """Per layer, the activation at the ablation site and the gradient of the target NLL with
    respect to it, both as `[batch, pos, head, d_head]` (a residual slice counts as a head)."""
    geometry = lens.geometry
    activations: dict[int, torch.Tensor] = {}

    def keep(layer: int) -> Callable[..., torch.Tensor]:
        def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            # The weights carry no gradient, so the first recorded activation starts the graph.
            if not activation.requires_grad:
                activation = activation.detach().requires_grad_(True)
            activations[layer] = activation
            return activation

        return hook

    positions = sequence.positions
    hooks = [(lens.site_hook_name(ablation.site, layer), keep(layer)) for layer in range(geometry.n_layers)]
    # Only the target positions reach the final norm and unembedding (forward and backward).
    hooks.append((FINAL_NORM_INPUT, lambda residual, hook: residual[:, positions.to(residual.device)]))
    tokens = lens.as_batch(list(sequence.ids))
    with torch.enable_grad(), lens.intervene(None, extra_hooks=hooks):
        logits = lens.bridge(tokens, return_type="logits")
        nll = mean_nll(logits, sequence.targets).sum()
        ordered = [activations[layer] for layer in range(geometry.n_layers)]
        gradients = invariant_grad(nll, ordered)

    def per_head(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().reshape(*tensor.shape[:2], geometry.n_heads, -1)

    return [per_head(a) for a in ordered], [per_head(g) for g in gradients]


def attribution_terms(lens: Lens, sequence: TargetSequence, ablation: Ablation) -> tuple[HeadGrid, HeadGrid]:
    """The estimated `NLL(head ablated) − NLL(clean)` of every head and its magnitude (the sum of
    the absolute terms), as float64 `[layer, head]` grids."""
    activations, gradients = head_gradients(lens, sequence, ablation)
    estimates, magnitudes = [], []
    for layer, (activation, gradient) in enumerate(zip(activations, gradients)):
        reference = 0.0 if ablation.z_ref is None else ablation.z_ref[layer].to(activation)[None, None]
        terms = (reference - activation).double() * gradient.double()
        estimates.append(terms.sum(dim=(0, 1, 3)))
        magnitudes.append(terms.abs().sum(dim=(0, 1, 3)))
    return torch.stack(estimates).cpu(), torch.stack(magnitudes).cpu()


def attribution_deltas(lens: Lens, sequence: TargetSequence, ablation: Ablation) -> HeadGrid:
    """Estimated `NLL(head ablated) − NLL(clean)` for every head, as a float64 `[layer, head]` grid."""
    return attribution_terms(lens, sequence, ablation)[0]
