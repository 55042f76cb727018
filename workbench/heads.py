"""Head weights: which heads count as preference (or retrieval, ...) heads, and how much.

A `HeadWeights` holds an `[n_layers, n_heads]` grid of weights in [0, 1] plus the metadata of
how it was made. DPS suppresses each head by its weight (`scale = 1 - w`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench import io
from workbench.errors import InputError
from workbench.masks import Head, HeadGeometry, HeadMask, Site
from workbench.tensor_types import HeadGrid, HeadReference

FORMAT = "workbench.head_weights/1"


@dataclass
class HeadWeights:
    weights: HeadGrid
    model: str = ""
    task: str = ""
    method: str = ""
    ablation: str = ""
    n_examples: int = 0
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weights = torch.as_tensor(self.weights, dtype=torch.float32).detach().cpu()
        if self.weights.ndim != 2:
            raise InputError(f"head weights must be a [layer, head] grid, got shape {tuple(self.weights.shape)}")
        if not torch.isfinite(self.weights).all():
            raise InputError("head weights contain NaN or infinite values")
        if (self.weights < 0).any() or (self.weights > 1).any():
            raise InputError("head weights must lie in [0, 1]")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weights.shape)  # type: ignore[return-value]

    def heads(self) -> list[Head]:
        """Heads with a non-zero weight, heaviest first (ties: lower layer, then lower head)."""
        nonzero = [(layer, head) for layer, head in torch.nonzero(self.weights > 0).tolist()]
        return sorted(nonzero, key=lambda lh: (-float(self.weights[lh]), lh[0], lh[1]))

    def check(self, geometry: HeadGeometry) -> None:
        """Raise if these weights were made for another head layout."""
        if self.shape != (geometry.n_layers, geometry.n_heads):
            raise InputError(
                f"head weights are for {self.shape[0]} layers x {self.shape[1]} heads"
                f"{f' (model {self.model!r})' if self.model else ''}, but this model has "
                f"{geometry.n_layers} x {geometry.n_heads}"
            )

    def mask(self, *, z_ref: HeadReference | None = None, site: Site = "head-output") -> HeadMask:
        """The suppression mask `scale = 1 - w`."""
        return HeadMask.weighted(self.weights, z_ref=z_ref, site=site)

    # --- controls: same budget, wrong heads ----------------------------------------------------

    @classmethod
    def random_heads(cls, geometry: HeadGeometry, k: int, *, seed: int) -> HeadWeights:
        """`k` heads drawn uniformly without replacement, each with weight 1 (control)."""
        return cls(_random_binary_grid((geometry.n_layers, geometry.n_heads), k, seed), method="random-heads", seed=seed)

    def shuffled(self, *, seed: int) -> HeadWeights:
        """The same multiset of weights on randomly permuted heads (the authors' "random weights")."""
        generator = torch.Generator().manual_seed(seed)
        flat = self.weights.flatten()
        permuted = flat[torch.randperm(flat.numel(), generator=generator)].view_as(self.weights)
        return HeadWeights(permuted, model=self.model, task=self.task, method=f"shuffled({self.method})", seed=seed)

    def random_mask(self, *, seed: int) -> HeadWeights:
        """Weight 1 on as many random heads as this one has non-zero weights ("random mask")."""
        k = int((self.weights > 0).sum())
        grid = _random_binary_grid(self.shape, k, seed)
        return HeadWeights(grid, model=self.model, task=self.task, method=f"random-mask({self.method})", seed=seed)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["weights"] = self.weights.tolist()
        return {"format": FORMAT, **record}

    def save(self, path: str | Path) -> None:
        io.write_json(path, self.to_json())

    @classmethod
    def from_json(cls, record: dict[str, Any], source: str = "head weights") -> HeadWeights:
        if record.get("format") != FORMAT:
            raise InputError(f"{source}: not a workbench head-weights file (format {record.get('format')!r})")
        fields = {k: v for k, v in record.items() if k != "format"}
        try:
            return cls(**fields)
        except TypeError as error:
            raise InputError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> HeadWeights:
        path = Path(path)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}: expected a JSON object")
        return cls.from_json(record, source=str(path))


def _random_binary_grid(shape: tuple[int, int], k: int, seed: int) -> torch.Tensor:
    """A [layer, head] grid with ones on `k` heads drawn without replacement (seeded)."""
    total = shape[0] * shape[1]
    if not 0 < k <= total:
        raise InputError(f"cannot draw {k} heads from a model with {total} heads")
    grid = torch.zeros(total)
    grid[torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k]] = 1.0
    return grid.view(shape)
