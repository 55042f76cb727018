"""Attribution PCS: one forward and one backward per sequence instead of one run per head.

The first-order estimate of a head's ablation effect is `(z_ref − z) · ∂NLL/∂z`, summed over
positions and the head's dimensions (`z_ref = 0` for zero ablation). For `resid-slice` the same
is taken on the residual slice the authors' code zeroes. Cheap, but only an estimate: the
hybrid method re-scores its best candidates exactly.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from workbench.lens import SITE_HOOKS, Lens
from workbench.scores.ablation import Ablation
from workbench.scores.nll import TargetSequence, mean_nll
from workbench.tensor_types import HeadGrid, HeadOutputs


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

    hooks = [(SITE_HOOKS[ablation.site](layer), keep(layer)) for layer in range(geometry.n_layers)]
    tokens = lens.as_batch(list(sequence.ids))
    with torch.enable_grad(), lens.intervene(None, extra_hooks=hooks):
        logits = lens.bridge(tokens, return_type="logits")
        nll = mean_nll(logits[:, sequence.positions.to(logits.device)], sequence.targets).sum()
        ordered = [activations[layer] for layer in range(geometry.n_layers)]
        gradients = torch.autograd.grad(nll, ordered)

    def per_head(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().reshape(*tensor.shape[:2], geometry.n_heads, -1)

    return [per_head(a) for a in ordered], [per_head(g) for g in gradients]


def attribution_deltas(lens: Lens, sequence: TargetSequence, ablation: Ablation) -> HeadGrid:
    """Estimated `NLL(head ablated) − NLL(clean)` for every head, as a float64 `[layer, head]` grid."""
    activations, gradients = head_gradients(lens, sequence, ablation)
    rows = []
    for layer, (activation, gradient) in enumerate(zip(activations, gradients)):
        reference = 0.0 if ablation.z_ref is None else ablation.z_ref[layer].to(activation)[None, None]
        rows.append(((reference - activation).double() * gradient.double()).sum(dim=(0, 1, 3)))
    return torch.stack(rows).cpu()
