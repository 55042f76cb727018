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
from workbench.engine.masks import HeadMask
from workbench.engine.numerics import invariant_grad
from workbench.scores.ablation import Ablation
from workbench.scores.nll import TargetSequence, mean_nll
from workbench.tensor_types import HeadGrid, HeadOutputs, HeadScale


def head_gradients(
    lens: Lens, sequence: TargetSequence, ablation: Ablation, hooks: Sequence[Hook] = (), *, scale: HeadScale | None = None
) -> tuple[list[HeadOutputs], list[HeadOutputs]]:
    """Per layer, the activation at the ablation site and the gradient of the target NLL with
    respect to it, both as `[row, pos, head, d_head]` (a residual slice counts as a head), with
    `hooks` acting in the forward.

    With `scale` (`[row, layer, head]`), row r runs with every head at `z_ref + s · (z − z_ref)`
    (the ablation's mask at scales `scale[r]`); the activation is then the one the mask meets
    and the gradient is taken after it, so that `(z_ref − z) · gradient` is minus the derivative
    of the row's NLL along the head's scale."""
    geometry = lens.geometry
    sites = [lens.site_hook_name(ablation.site, layer) for layer in range(geometry.n_layers)]
    recording = Recording(sites, differentiable=True)
    tokens: torch.Tensor | list[int] = list(sequence.ids)
    before: list[Hook] = []
    if scale is not None:
        unmasked = Recording(sites)
        before = [*unmasked.hooks, *lens.mask_hooks(HeadMask(scale, ablation.z_ref, ablation.site))]
        tokens = lens.as_batch(tokens).expand(scale.shape[0], -1)
    # Only the target positions reach the final norm and unembedding (forward and backward).
    logits = lens.run(tokens, hooks=[*before, *hooks], record=recording, positions=sequence.positions, grad=True).logits
    ordered = recording.values()
    gradients = invariant_grad(mean_nll(logits, sequence.targets).sum(), ordered)
    activations = ordered if scale is None else unmasked.values()

    def per_head(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().reshape(*tensor.shape[:2], geometry.n_heads, -1)

    return [per_head(a) for a in activations], [per_head(g) for g in gradients]


def ablation_terms(
    activations: Sequence[HeadOutputs],
    gradients: Sequence[HeadOutputs],
    ablation: Ablation,
    positions: torch.Tensor | None = None,
) -> tuple[HeadGrid, HeadGrid]:
    """Per head, the terms `(z_ref − z) ⊙ gradient` averaged over the rows (the points of a path;
    one row: the clean point), then summed over the head's dimensions and the sequence's positions
    (only `positions`, an index or boolean mask, when given): the estimate, and the sum of the
    absolute averaged terms, as float64 `[layer, head]` grids."""
    estimates, magnitudes = [], []
    for layer, (activation, gradient) in enumerate(zip(activations, gradients)):
        if positions is not None:
            activation, gradient = activation[:, positions], gradient[:, positions]
        reference = 0.0 if ablation.z_ref is None else ablation.z_ref[layer].to(activation)[None, None]
        terms = ((reference - activation).double() * gradient.double()).mean(dim=0)
        estimates.append(terms.sum(dim=(0, 2)))
        magnitudes.append(terms.abs().sum(dim=(0, 2)))
    return torch.stack(estimates).cpu(), torch.stack(magnitudes).cpu()


def attribution_terms(
    lens: Lens, sequence: TargetSequence, ablation: Ablation, hooks: Sequence[Hook] = ()
) -> tuple[HeadGrid, HeadGrid]:
    """The estimated `NLL(head ablated) − NLL(clean)` of every head and its magnitude (the sum of
    the absolute terms), as float64 `[layer, head]` grids."""
    return ablation_terms(*head_gradients(lens, sequence, ablation, hooks), ablation)


def attribution_deltas(lens: Lens, sequence: TargetSequence, ablation: Ablation) -> HeadGrid:
    """Estimated `NLL(head ablated) − NLL(clean)` for every head, as a float64 `[layer, head]` grid."""
    return attribution_terms(lens, sequence, ablation)[0]
