"""Choosing the next token from a row of scores: greedy argmax, or seeded sampling with
temperature, top-k and top-p (nucleus) filtering.

Each prompt draws from its own random generator, seeded from `(seed, prompt index)`, so a
sampled continuation does not depend on which other prompts share its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.errors import InputError
from workbench.tensor_types import StepLogits


@dataclass(frozen=True)
class Sampling:
    """Sample instead of taking the argmax: `softmax(scores / temperature)` restricted to the
    `top_k` highest scores and to the smallest set whose probability reaches `top_p`."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InputError(f"sampling temperature must be > 0, got {self.temperature} (use sampling=None for greedy)")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise InputError(f"sampling top_k must be a positive integer or None, got {self.top_k!r}")
        if not (0 < self.top_p <= 1):
            raise InputError(f"sampling top_p must lie in (0, 1], got {self.top_p}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"sampling seed must be a non-negative integer, got {self.seed!r}")

    def generator(self, prompt_index: int, device: torch.device) -> torch.Generator:
        """The random generator of one prompt (the same for the same seed and prompt index)."""
        return torch.Generator(device=device).manual_seed(hash((self.seed, prompt_index)) & (2**63 - 1))

    def filtered_logprobs(self, scores: StepLogits) -> StepLogits:
        """Log-probabilities after temperature, top-k and top-p; filtered tokens get -inf."""
        scores = scores.float() / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth_best = scores.topk(self.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth_best, -math.inf)
        logprobs = scores.log_softmax(dim=-1)
        if self.top_p < 1:
            ordered, order = logprobs.sort(dim=-1, descending=True)
            mass_before = ordered.exp().cumsum(dim=-1) - ordered.exp()
            drop = torch.zeros_like(logprobs, dtype=torch.bool).scatter(-1, order, mass_before >= self.top_p)
            logprobs = logprobs.masked_fill(drop, -math.inf).log_softmax(dim=-1)
        return logprobs


def choose_tokens(
    scores: StepLogits,
    sampling: Sampling | None = None,
    generators: list[torch.Generator] | None = None,
) -> Int[Tensor, " batch"]:
    """The next token of every row: the argmax, or one draw per row from its own generator."""
    if sampling is None:
        return scores.argmax(dim=-1)
    probabilities: Float[Tensor, "batch vocab"] = sampling.filtered_logprobs(scores).exp()
    assert generators is not None and len(generators) == scores.shape[0]
    draws = [torch.multinomial(row, 1, generator=generator) for row, generator in zip(probabilities, generators)]
    return torch.cat(draws)
