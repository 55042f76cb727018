"""Reading attention patterns at chosen query positions, for the pattern-based head scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float

from workbench.lens import Lens
from workbench.tensor_types import TokenIds

Patterns = Float[torch.Tensor, "batch layer head query key"]


def attention_rows(lens: Lens, tokens: TokenIds, queries: torch.Tensor) -> Patterns:
    """The attention distributions of every head at the `queries` positions (one clean forward)."""
    rows: dict[int, torch.Tensor] = {}
    index = queries.to(lens.device)

    def record(layer: int) -> Callable[..., None]:
        def hook(pattern: torch.Tensor, hook: Any) -> None:  # [batch, head, query, key]
            rows[layer] = pattern[:, :, index].detach().float()

        return hook

    hooks = [(lens.hook_name("pattern", layer), record(layer)) for layer in range(lens.n_layers)]
    with torch.no_grad(), lens.intervene(None, extra_hooks=hooks):
        lens.bridge(lens.as_batch(tokens), return_type=None)
    return torch.stack([rows[layer] for layer in range(lens.n_layers)], dim=1).cpu()


def random_tokens(lens: Lens, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Token ids drawn uniformly from the vocabulary, special tokens excluded."""
    special = set(lens.tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(lens.tokenizer)) if i not in special])
    return allowed[torch.randint(len(allowed), shape, generator=generator)]
