"""PCS results: per-example scores for every head, their summaries, and Parquet files.

`per_example[i, l, h]` is example i's score of head (l, h); `exact[l, h]` says whether that
value is a true ablation effect or an attribution estimate (the hybrid method mixes both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from jaxtyping import Float

from workbench import io
from workbench.errors import InputError
from workbench.stats import bootstrap_mean_ci
from workbench.tensor_types import HeadGrid, HeadSelection

PerExample = Float[torch.Tensor, "example layer head"]
METADATA_KEY = b"workbench.pcs"
COLUMNS = ["example_id", "user_id", "layer", "head", "pcs", "exact"]


@dataclass
class PCSResult:
    per_example: PerExample
    exact: HeadSelection
    example_ids: list[str]
    user_ids: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.per_example = torch.as_tensor(self.per_example, dtype=torch.float64)
        self.exact = torch.as_tensor(self.exact, dtype=torch.bool)
        n = self.per_example.shape[0]
        if self.per_example.ndim != 3 or tuple(self.exact.shape) != tuple(self.per_example.shape[1:]):
            raise ValueError(f"PCS shapes disagree: per_example {tuple(self.per_example.shape)}, exact {tuple(self.exact.shape)}")
        if n == 0 or len(self.example_ids) != n or len(self.user_ids) != n:
            raise ValueError(f"PCS result needs one example id and user id per example ({n} examples)")

    @property
    def n_examples(self) -> int:
        return self.per_example.shape[0]

    def mean(self) -> HeadGrid:
        return self.per_example.mean(dim=0)

    def stderr(self) -> HeadGrid:
        """Standard error of the mean over examples (NaN with a single example)."""
        if self.n_examples < 2:
            return torch.full_like(self.mean(), float("nan"))
        return self.per_example.std(dim=0, unbiased=True) / self.n_examples**0.5

    def bootstrap_ci(self, *, level: float = 0.95, n_resamples: int = 2000, seed: int | None = None) -> tuple[HeadGrid, HeadGrid]:
        """Percentile bootstrap interval of the mean, resampling examples (seeded: the run's
        seed unless given)."""
        seed = self.metadata.get("seed", 0) if seed is None else seed
        return bootstrap_mean_ci(self.per_example, level=level, n_resamples=n_resamples, seed=int(seed or 0))

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows `example_id, user_id, layer, head, pcs, exact`."""
        n, n_layers, n_heads = self.per_example.shape
        layer, head = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
        return pd.DataFrame(
            {
                "example_id": np.repeat(np.asarray(self.example_ids, dtype=object), n_layers * n_heads),
                "user_id": np.repeat(np.asarray(self.user_ids, dtype=object), n_layers * n_heads),
                "layer": np.tile(layer.ravel(), n),
                "head": np.tile(head.ravel(), n),
                "pcs": self.per_example.numpy().ravel(),
                "exact": np.tile(self.exact.numpy().ravel(), n),
            }
        )

    def save(self, path: str | Path) -> None:
        """Parquet with the tidy rows; the metadata rides in the file's schema metadata."""
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(self.metadata, sort_keys=True, default=str)})
        with io.atomic_path(path) as temporary:
            pq.write_table(table, temporary)

    @classmethod
    def load(cls, path: str | Path) -> PCSResult:
        path = Path(path)
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except pa.ArrowException as error:
            raise InputError(f"{path}: not a Parquet file ({error})") from None
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise InputError(f"{path}: not a PCS file (missing columns {', '.join(missing)})")
        metadata = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
        frame = table.to_pandas()
        examples = frame.drop_duplicates("example_id")
        n_layers, n_heads = int(frame["layer"].max()) + 1, int(frame["head"].max()) + 1
        if len(frame) != len(examples) * n_layers * n_heads:
            raise InputError(f"{path}: expected {n_layers} x {n_heads} heads for each of {len(examples)} examples")
        frame = frame.sort_values(["example_id", "layer", "head"], key=_in_order_of(examples["example_id"]))
        per_example = torch.from_numpy(
            frame["pcs"].to_numpy(dtype=np.float64, copy=True).reshape(len(examples), n_layers, n_heads)
        )
        exact = torch.from_numpy(frame["exact"].to_numpy(dtype=bool, copy=True)[: n_layers * n_heads].reshape(n_layers, n_heads))
        return cls(per_example, exact, list(examples["example_id"]), list(examples["user_id"]), metadata)


def _in_order_of(ordered: pd.Series):
    """A sort key that keeps examples in file order and heads in (layer, head) order."""
    rank = {value: index for index, value in enumerate(ordered)}
    return lambda column: column.map(rank) if column.name == "example_id" else column
