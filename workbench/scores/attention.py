"""Reading attention patterns at chosen query positions, for the pattern-based head scores."""

from __future__ import annotations

import torch
from jaxtyping import Float

from workbench.engine.interventions import Recording
from workbench.engine.lens import Lens
from workbench.tensor_types import TokenIds

Patterns = Float[torch.Tensor, "batch layer head query key"]


def attention_rows(lens: Lens, tokens: TokenIds, queries: torch.Tensor) -> Patterns:
    """The attention distributions of every head at the `queries` positions (one clean forward)."""
    index = queries.to(lens.device)
    names = [lens.hook_name("pattern", layer) for layer in range(lens.n_layers)]
    recording = Recording(names, keep=lambda pattern: pattern[:, :, index].float())  # [batch, head, query, key]
    lens.run(tokens, record=recording)
    return torch.stack(recording.values(), dim=1).cpu()


def random_tokens(lens: Lens, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Token ids drawn uniformly from the vocabulary, special tokens excluded."""
    special = set(lens.tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(lens.tokenizer)) if i not in special])
    return allowed[torch.randint(len(allowed), shape, generator=generator)]
