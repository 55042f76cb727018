"""A head's direct effect on the loss: its output removed from the final residual stream only.

Zero-ablating a head changes the loss along two routes: directly (its output, written into the
residual stream, no longer reaches the unembedding) and through every later layer that reads it;
later layers often make up for part of the loss ("self-repair", the "Hydra effect" of McGrath et
al., 2023). The direct effect isolates the first route: the head's contribution to the residual
stream, `c = W_O[h] · z_h` (the output projection of its `z` alone, bias excluded), is subtracted
from the residual entering the final norm, whose scale is frozen at the clean run's (so that the
removal acts linearly, as the head's write does), and the target NLL is taken again. Total effect
minus direct effect is what the later layers changed; direct minus total is their repair.

Only for pre-norm families (`FINISHED_BLOCK_FAMILIES`): Gemma's norm after the attention makes a
head's write a non-linear function of all heads' outputs.
"""

from __future__ import annotations

import warnings

import torch

from workbench.engine.interventions import Recording
from workbench.engine.lens import FINAL_NORM_INPUT, Lens
from workbench.engine.tail import FINISHED_BLOCK_FAMILIES
from workbench.errors import InputError
from workbench.scores.nll import TargetSequence, token_nll
from workbench.tensor_types import HeadGrid

FINAL_NORM_SCALE = "ln_final.hook_scale"


def direct_effects(lens: Lens, sequence: TargetSequence) -> HeadGrid:
    """`NLL(head's write removed at the final norm's input, norm scale frozen) − NLL(clean)` for
    every head, a float64 `[layer, head]` grid."""
    if lens.adapter.family not in FINISHED_BLOCK_FAMILIES:
        raise InputError(f"direct effects need a pre-norm family ({', '.join(sorted(FINISHED_BLOCK_FAMILIES))}), "
                         f"not {lens.adapter.family!r}")  # fmt: skip
    geometry = lens.geometry
    z_names = [lens.hook_name("z", layer) for layer in range(geometry.n_layers)]
    recording = Recording([*z_names, FINAL_NORM_INPUT, FINAL_NORM_SCALE])
    logits = lens.run(list(sequence.ids), record=recording).logits
    positions = sequence.positions.to(logits.device)
    clean = token_nll(logits[:, positions], sequence.targets)[0]
    final = recording[FINAL_NORM_INPUT][:, positions]  # [1, target, d_model]
    scale = recording[FINAL_NORM_SCALE][:, positions]  # [1, target, 1]
    frozen = [(FINAL_NORM_SCALE, lambda activation, hook: scale.to(activation).expand_as(activation))]
    n_heads = geometry.n_heads
    deltas = torch.zeros(geometry.n_layers, n_heads, dtype=torch.float64)
    for layer, name in enumerate(z_names):
        z = recording[name][0, positions.to(recording[name].device)]  # [target, head, d_head]
        alone = torch.zeros(n_heads, *z.shape, dtype=z.dtype, device=z.device)  # row h: head h's z, the rest 0
        for head in range(n_heads):
            alone[head, :, head] = z[:, head]
        projection = lens.bridge.blocks[layer].attn.o
        with torch.no_grad():
            writes = projection(alone.flatten(-2)) - projection(
                torch.zeros_like(alone[:1]).flatten(-2)
            )  # [head, target, d_model]
            with warnings.catch_warnings(), lens.bridge.hooks(fwd_hooks=frozen):
                warnings.simplefilter("ignore")  # the bridge warns that an edited scale rebuilds the norm's output
                ablated = lens.unembed(final.to(writes.device) - writes)
        deltas[layer] = (token_nll(ablated, sequence.targets).mean(dim=1) - clean.mean()).cpu()
    return deltas
