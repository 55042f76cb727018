"""The loss PCS is built on: the mean negative log-likelihood of the reference output tokens.

For a sequence `prompt ‖ target` with `P` prompt and `T` target tokens, the logits at positions
`P-1 … P+T-2` predict the target. Log-probabilities are taken in float32, the mean in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.tensor_types import Logits

if TYPE_CHECKING:
    from workbench.data.tokenized import TokenizedExample


def target_positions(prompt_len: int, target_len: int) -> Int[Tensor, " target"]:
    """The positions whose logits predict the target tokens."""
    return torch.arange(prompt_len - 1, prompt_len + target_len - 1)


def token_nll(logits: Logits, targets: Int[Tensor, " target"]) -> Float[Tensor, "batch target"]:
    """NLL of each of `targets` (float64) under logits already restricted to the target positions."""
    log_probs = logits.float().log_softmax(dim=-1)
    index = targets.to(logits.device)[None, :, None].expand(logits.shape[0], -1, 1)
    return -log_probs.gather(-1, index)[..., 0].double()


def mean_nll(logits: Logits, targets: Int[Tensor, " target"]) -> Float[Tensor, " batch"]:
    """Mean NLL of `targets` under logits already restricted to the target positions."""
    return token_nll(logits, targets).mean(dim=-1)


class TargetSequence:
    """`prompt ‖ target` token ids, with where the target starts."""

    def __init__(self, prompt_ids: tuple[int, ...], target_ids: tuple[int, ...]):
        self.ids = tuple(prompt_ids) + tuple(target_ids)
        self.prompt_len = len(prompt_ids)
        self.positions = target_positions(len(prompt_ids), len(target_ids))
        self.targets = torch.tensor(target_ids, dtype=torch.long)


def reference_sequences(examples: Sequence[TokenizedExample]) -> list[tuple[int, ...]]:
    """Every example's `prompt ‖ target`: the sequences a mean ablation averages over."""
    return [TargetSequence(e.prompt_ids, e.target_ids).ids for e in examples]
