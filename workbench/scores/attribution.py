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

from collections.abc import Sequence

import torch

from workbench.engine.interventions import Hook, Recording
from workbench.engine.lens import Lens
from workbench.engine.numerics import invariant_grad
from workbench.scores.ablation import Ablation
from workbench.scores.nll import TargetSequence, mean_nll
from workbench.tensor_types import HeadGrid, HeadOutputs


def head_gradients(
    lens: Lens, sequence: TargetSequence, ablation: Ablation, hooks: Sequence[Hook] = ()
) -> tuple[list[HeadOutputs], list[HeadOutputs]]:
    """Per layer, the activation at the ablation site and the gradient of the target NLL with
    respect to it, both as `[batch, pos, head, d_head]` (a residual slice counts as a head), with
    `hooks` acting in the forward."""
    geometry = lens.geometry
    recording = Recording([lens.site_hook_name(ablation.site, layer) for layer in range(geometry.n_layers)], differentiable=True)
    # Only the target positions reach the final norm and unembedding (forward and backward).
    logits = lens.run(list(sequence.ids), hooks=hooks, record=recording, positions=sequence.positions, grad=True).logits
    ordered = recording.values()
    gradients = invariant_grad(mean_nll(logits, sequence.targets).sum(), ordered)

    def per_head(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().reshape(*tensor.shape[:2], geometry.n_heads, -1)

    return [per_head(a) for a in ordered], [per_head(g) for g in gradients]


def attribution_terms(
    lens: Lens, sequence: TargetSequence, ablation: Ablation, hooks: Sequence[Hook] = ()
) -> tuple[HeadGrid, HeadGrid]:
    """The estimated `NLL(head ablated) − NLL(clean)` of every head and its magnitude (the sum of
    the absolute terms), as float64 `[layer, head]` grids."""
    activations, gradients = head_gradients(lens, sequence, ablation, hooks)
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
