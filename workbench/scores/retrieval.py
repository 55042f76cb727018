"""Retrieval score, after Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context
Factuality"): the heads that copy a needle out of a haystack.

A trial is a haystack of random tokens with `cue ‖ needle` hidden at a random depth, followed by
`cue ‖ needle` again (the copy, teacher-forced rather than generated). At each copy step, a head
counts a hit when its most-attended position lies inside the hidden needle and holds the token
being copied (Wu et al.'s copy-paste condition). The score is the fraction of copy steps that hit,
over all trials: an `[layer, head]` grid in [0, 1], used as retrieval heads for DeCoRe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.engine.lens import Lens
from workbench.errors import InputError
from workbench.scores.attention import attention_rows, random_tokens
from workbench.tensor_types import HeadGrid

CUE = " The secret passphrase is:"
DEFAULT_HAYSTACK = 200


@dataclass(frozen=True)
class Trial:
    """One haystack: its tokens, where the hidden needle starts, and the needle."""

    tokens: torch.Tensor
    needle_start: int
    needle: torch.Tensor

    @property
    def copy_steps(self) -> torch.Tensor:
        """The positions whose next token is a copied needle token (the copy ends the sequence)."""
        length = len(self.tokens)
        return torch.arange(length - len(self.needle) - 1, length - 1)


def haystack_trials(lens: Lens, n_trials: int, haystack_len: int | None, needle_len: int, seed: int) -> list[Trial]:
    """Seeded trials: `[BOS] ‖ hay[:d] ‖ cue ‖ needle ‖ hay[d:] ‖ cue ‖ needle` at random depths d.
    `haystack_len` None: `DEFAULT_HAYSTACK` tokens, or fewer if the model's context is shorter."""
    bos = lens.tokenizer.bos_token_id
    prefix = [] if bos is None else [bos]
    cue = lens.encode(CUE)
    if haystack_len is None:
        haystack_len = min(DEFAULT_HAYSTACK, lens.geometry.n_ctx - len(prefix) - 2 * (len(cue) + needle_len))
    if n_trials < 1 or needle_len < 1 or haystack_len < 1:
        raise InputError(
            f"retrieval scores need positive n_trials, haystack_len and needle_len, got {n_trials}, {haystack_len}, {needle_len}"
        )
    length = len(prefix) + haystack_len + 2 * (len(cue) + needle_len)
    if length > lens.geometry.n_ctx:
        raise InputError(f"a retrieval trial of {length} tokens exceeds the model context of {lens.geometry.n_ctx}")
    generator = torch.Generator().manual_seed(seed)
    trials = []
    for _ in range(n_trials):
        haystack = random_tokens(lens, (haystack_len,), generator).tolist()
        depth = int(torch.randint(haystack_len + 1, (1,), generator=generator))
        needle = _distinct_tokens(lens, needle_len, generator)
        hidden = prefix + haystack[:depth] + cue
        tokens = hidden + needle.tolist() + haystack[depth:] + cue + needle.tolist()
        trials.append(Trial(torch.tensor(tokens), len(hidden), needle))
    return trials


def retrieval_scores(
    lens: Lens,
    *,
    n_trials: int = 8,
    haystack_len: int | None = None,
    needle_len: int = 8,
    seed: int = 0,
) -> HeadGrid:
    """Fraction of copy steps at which each head's top attention retrieves the copied needle token."""
    hits = torch.zeros(lens.n_layers, lens.n_heads, dtype=torch.float64)
    trials = haystack_trials(lens, n_trials, haystack_len, needle_len, seed)
    for trial in trials:
        top = attention_rows(lens, trial.tokens[None], trial.copy_steps)[0].argmax(dim=-1)  # [layer, head, step]
        in_needle = (top >= trial.needle_start) & (top < trial.needle_start + needle_len)
        copies = trial.tokens[top] == trial.needle  # the attended token is the one copied at that step
        hits += (in_needle & copies).double().sum(dim=-1)
    return hits / (len(trials) * needle_len)


def _distinct_tokens(lens: Lens, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` different random tokens, so that a copied token names one needle position."""
    pool = random_tokens(lens, (count * 8,), generator).unique()
    if len(pool) < count:
        raise InputError(f"the vocabulary has too few ordinary tokens for a needle of {count}")
    return pool[torch.randperm(len(pool), generator=generator)[:count]]
