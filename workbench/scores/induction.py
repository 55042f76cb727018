"""Induction score: on a random token sequence repeated twice, the attention each head pays from
a token of the second copy to the token that followed the same token in the first copy (the
standard induction-head diagnostic). Returns an `[layer, head]` grid in [0, 1]."""

from __future__ import annotations

import torch

from workbench.engine.lens import Lens
from workbench.errors import InputError
from workbench.scores.attention import attention_rows, random_tokens
from workbench.tensor_types import HeadGrid


def repeated_random_tokens(lens: Lens, n_sequences: int, length: int, seed: int) -> tuple[torch.Tensor, int]:
    """`[BOS] ‖ r ‖ r` for `n_sequences` seeded random `r` of `length` tokens, and where `r` starts."""
    if n_sequences < 1 or length < 2:
        raise InputError(f"induction scores need n_sequences >= 1 and length >= 2, got {n_sequences}, {length}")
    bos = lens.tokenizer.bos_token_id
    prefix = [] if bos is None else [bos]
    if len(prefix) + 2 * length > lens.geometry.n_ctx:
        raise InputError(f"two copies of {length} tokens exceed the model context of {lens.geometry.n_ctx}")
    first = random_tokens(lens, (n_sequences, length), torch.Generator().manual_seed(seed))
    return torch.cat([torch.tensor(prefix, dtype=torch.long).expand(n_sequences, -1), first, first], dim=1), len(prefix)


def induction_scores(lens: Lens, *, n_sequences: int = 8, length: int = 50, seed: int = 0) -> HeadGrid:
    """Mean induction attention over `n_sequences` seeded random sequences of `length` tokens."""
    tokens, start = repeated_random_tokens(lens, n_sequences, length, seed)
    # The second copy's token i (at start+length+i) should attend to start+i+1.
    queries = torch.arange(start + length, start + 2 * length - 1)
    keys = torch.arange(start + 1, start + length)
    patterns = attention_rows(lens, tokens, queries)  # [batch, layer, head, query, key]
    on_target = patterns[..., torch.arange(len(queries)), keys]  # [batch, layer, head, query]
    return on_target.double().mean(dim=(0, 3))
