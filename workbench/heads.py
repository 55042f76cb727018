"""Head weights: which heads count as preference (or retrieval, ...) heads, and how much.

A `HeadWeights` holds an `[n_layers, n_heads]` grid of weights in [0, 1] plus the metadata of
how it was made. DPS suppresses each head by its weight (`scale = 1 - w`).

Selection from scores follows the reference (`detect_cluster_heads.py`): keep the top K heads,
weight `max(score, 0)` for those with score >= `min_score`, normalise (max, sum or none), then
raise to `power`. Ranking is deterministic: higher score first, ties to the lower layer, then the
lower head (the reference's bf16 scores tie often, and its order there is arbitrary).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench import io
from workbench.engine.masks import Head, HeadGeometry, HeadMask, Site
from workbench.errors import InputError
from workbench.scores.ranking import REFERENCE_TOP_PERCENT, ranked_heads
from workbench.tensor_types import HeadGrid, HeadReference

if TYPE_CHECKING:
    from workbench.scores.results import PCSResult

FORMAT = "workbench.head_weights/1"
NORMS: tuple[str, ...] = ("max", "sum", "none")


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

    # --- selection from scores -------------------------------------------------------------

    @classmethod
    def from_scores(
        cls,
        scores: PCSResult | HeadGrid,
        *,
        top_k: int | None = None,
        top_percent: float | None = None,
        min_score: float = 0.0,
        norm: str = "max",
        power: float = 1.0,
        **metadata: Any,
    ) -> HeadWeights:
        """Weights on the top heads of a score grid (or a `PCSResult`'s mean); see the module
        docstring. Exactly one of `top_k` and `top_percent` (a fraction of all heads, at least
        one head). A `PCSResult` supplies the metadata; keyword arguments override it."""
        extra = metadata.pop("extra", {})
        if not isinstance(scores, torch.Tensor) and hasattr(scores, "per_example"):
            inherited = {k: scores.metadata.get(k) for k in ("model", "task", "method", "ablation", "n_examples", "seed")}
            metadata = {**{k: v for k, v in inherited.items() if v is not None}, **metadata}
            certified = {"certificate": scores.metadata["certificate"]} if scores.metadata.get("certificate") else {}
            extra = {"variant": scores.metadata.get("variant"), **certified, **extra}
            scores = scores.mean()
        grid = torch.as_tensor(scores, dtype=torch.float64).detach().cpu()
        if grid.ndim != 2:
            raise InputError(f"head scores must be a [layer, head] grid, got shape {tuple(grid.shape)}")
        k = _selection_size(grid.numel(), top_k, top_percent)
        if norm not in NORMS:
            raise InputError(f"unknown normalisation {norm!r}; choose one of {', '.join(NORMS)}")
        if not (math.isfinite(power) and power > 0):
            raise InputError(f"power must be a positive number, got {power}")
        if math.isnan(min_score):
            raise InputError("min_score is NaN")
        weights = torch.zeros_like(grid)
        for layer, head in ranked_heads(grid)[:k]:
            if grid[layer, head] >= min_score:
                weights[layer, head] = max(float(grid[layer, head]), 0.0)
        total = {"max": weights.max(), "sum": weights.sum(), "none": torch.tensor(1.0)}[norm]
        weights = weights / (total if total > 0 else 1.0)
        if power != 1.0:
            weights = weights**power
        if (weights > 1).any():
            raise InputError(
                f"norm='none' leaves weights up to {weights.max().item():g}; weights must lie in [0, 1] (use max or sum)"
            )
        extra = {"top_k": k, "min_score": min_score, "norm": norm, "power": power, **extra}
        return cls(weights, extra=extra, **metadata)

    @classmethod
    def from_reference(
        cls,
        path: str | Path,
        *,
        geometry: HeadGeometry | None = None,
        top_k: int | None = None,
        top_percent: float | None = None,
        min_score: float = 0.0,
        norm: str = "max",
        power: float = 1.0,
    ) -> HeadWeights:
        """Import the authors' files: `head_weights.json` (an L×H grid), `*_top_heads.json`
        (weight 1 on each listed head) or `*_ranked.json` (mean PCS per head, selected with the
        options here; default their 4 %). Without `geometry`, the grid's size is taken from the
        file (`num_layers` / `num_heads`, else the largest indices listed)."""
        path = Path(path)
        record = read_json_object(path)
        model, task = str(record.get("model", "")), str(record.get("task", ""))
        if "head_weights" in record:
            grid = _numeric_grid(record["head_weights"], path)
            if geometry is not None and tuple(grid.shape) != (geometry.n_layers, geometry.n_heads):
                raise InputError(
                    f"{path}: head_weights is {grid.shape[0]} x {grid.shape[1]} but the model has {geometry.n_layers} layers x {geometry.n_heads} heads"
                )
            params: dict[str, Any] = {
                k: record[k] for k in ("cluster_id", "top_percent", "pcs_norm", "pcs_min", "pcs_power") if k in record
            }
            return cls(grid, model=model, task=task, method="reference", extra={"source": str(path), **params})
        if "preference_heads" in record:
            heads = [_reference_head(entry, path, "preference_heads") for entry in record["preference_heads"]]
            grid = torch.zeros(_reference_shape(record, heads, geometry, path))
            for layer, head in heads:
                grid[layer, head] = 1.0
            return cls(grid, model=model, task=task, method="reference", extra={"source": str(path)})
        if "ranked_heads" in record:
            entries = record["ranked_heads"]
            if not isinstance(entries, list):
                raise InputError(f"{path}: ranked_heads must be a list")
            heads = [_reference_head(entry, path, "ranked_heads") for entry in entries]
            scores = torch.full(_reference_shape(record, heads, geometry, path), -math.inf, dtype=torch.float64)
            for (layer, head), entry in zip(heads, entries):
                value = entry.get("avg_pcs")
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    raise InputError(f"{path}: ranked head ({layer}, {head}) has avg_pcs {value!r}, expected a number")
                scores[layer, head] = value
            if top_k is None and top_percent is None:
                top_percent = REFERENCE_TOP_PERCENT
            return cls.from_scores(
                scores,
                top_k=top_k,
                top_percent=top_percent,
                min_score=min_score,
                norm=norm,
                power=power,
                model=model,
                task=task,
                method="reference",
                n_examples=int(record.get("num_samples", 0) or 0),
                extra={"source": str(path)},
            )
        raise InputError(f"{path}: not a reference head file (no head_weights, preference_heads or ranked_heads field)")

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
        return cls.from_json(read_json_object(Path(path)), source=str(path))

    @classmethod
    def load_any(cls, path: str | Path, *, geometry: HeadGeometry | None = None) -> HeadWeights:
        """A workbench head-weights file, or else one of the authors' formats (`from_reference`)."""
        if read_json_object(Path(path)).get("format") == FORMAT:
            weights = cls.load(path)
            if geometry is not None:
                weights.check(geometry)
            return weights
        return cls.from_reference(path, geometry=geometry)


def _selection_size(n_total: int, top_k: int | None, top_percent: float | None) -> int:
    if (top_k is None) == (top_percent is None):
        raise InputError("give exactly one of top_k and top_percent")
    if top_k is not None:
        if not 1 <= top_k <= n_total:
            raise InputError(f"top_k must lie in 1..{n_total} (the model's number of heads), got {top_k}")
        return int(top_k)
    if not (top_percent is not None and 0 < top_percent <= 1):
        raise InputError(f"top_percent is a fraction of all heads in (0, 1], got {top_percent}")
    return max(1, math.floor(top_percent * n_total))


def read_json_object(path: Path, made_by: str = "") -> dict[str, Any]:
    """The JSON object in `path`, or a one-line InputError naming what is wrong (a missing file's
    names `made_by`, what writes such a file, when given)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found" + (f" ({made_by})" if made_by else "")) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: expected a JSON object")
    return record


def _numeric_grid(value: Any, path: Path) -> torch.Tensor:
    try:
        grid = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError):
        raise InputError(f"{path}: head_weights must be a rectangular list of lists of numbers") from None
    if grid.ndim != 2 or grid.numel() == 0:
        raise InputError(f"{path}: head_weights must be a non-empty [layer][head] list of lists, got shape {tuple(grid.shape)}")
    return grid


def _reference_head(entry: Any, path: Path, field_name: str) -> Head:
    """A head from `[layer, head]` or `{"layer": .., "head": ..}`."""
    pair = [entry.get("layer"), entry.get("head")] if isinstance(entry, dict) else entry
    if not (
        isinstance(pair, (list, tuple))
        and len(pair) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair)
    ):
        raise InputError(f"{path}: {field_name} entry {entry!r} is not a (layer, head) pair of non-negative integers")
    return int(pair[0]), int(pair[1])


def _reference_shape(record: dict[str, Any], heads: list[Head], geometry: HeadGeometry | None, path: Path) -> tuple[int, int]:
    if not heads:
        raise InputError(f"{path}: lists no heads")
    if geometry is not None:
        shape = (geometry.n_layers, geometry.n_heads)
    elif isinstance(record.get("num_layers"), int) and isinstance(record.get("num_heads"), int):
        shape = (record["num_layers"], record["num_heads"])
    else:
        shape = (max(layer for layer, _ in heads) + 1, max(head for _, head in heads) + 1)
    for layer, head in heads:
        if layer >= shape[0] or head >= shape[1]:
            raise InputError(f"{path}: head ({layer}, {head}) out of range for {shape[0]} layers x {shape[1]} heads")
    return shape


def _random_binary_grid(shape: tuple[int, int], k: int, seed: int) -> torch.Tensor:
    """A [layer, head] grid with ones on `k` heads drawn without replacement (seeded)."""
    total = shape[0] * shape[1]
    if not 0 < k <= total:
        raise InputError(f"cannot draw {k} heads from a model with {total} heads")
    grid = torch.zeros(total)
    grid[torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k]] = 1.0
    return grid.view(shape)
