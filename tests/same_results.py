"""Comparing a sharded or Ray run's files with a single process's: the results bit for bit; only
timings and the record of how a folder was made may differ."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from workbench.heads import HeadWeights
from workbench.scores import PCSResult

BOOKKEEPING = ("seconds", "options", "fingerprint")  # timings and the records of how a folder was made


def without_bookkeeping(value):
    if isinstance(value, dict):
        return {k: without_bookkeeping(v) for k, v in value.items() if k not in BOOKKEEPING}
    return value


def assert_same_results(merged: Path, single: Path, name: str) -> None:
    """The merged run's file holds the single run's results, bit for bit; only timings and the
    record of the options (a single run's stage fingerprint) may differ."""
    a, b = merged / name, single / name
    kind = Path(name).name  # a file of a cluster's folder is compared as its kind
    if name.endswith(".jsonl"):
        lines = lambda path: [without_bookkeeping(json.loads(line)) for line in path.read_text().splitlines()]
        assert lines(a) == lines(b), name
    elif kind == "heads.json":
        first, second = HeadWeights.load(a), HeadWeights.load(b)
        assert torch.equal(first.weights, second.weights) and without_bookkeeping(first.extra) == without_bookkeeping(
            second.extra
        )
    elif name.endswith(".json"):
        assert without_bookkeeping(json.loads(a.read_text())) == without_bookkeeping(json.loads(b.read_text())), name
    elif kind == "pcs.parquet":
        first, second = PCSResult.load(a), PCSResult.load(b)
        assert torch.equal(first.per_example, second.per_example) and torch.equal(first.exact, second.exact)
        assert without_bookkeeping(first.metadata) == without_bookkeeping(second.metadata)
    else:  # tables; a single run's validation names its study in a `heads` column
        read = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        pd.testing.assert_frame_equal(read(a), read(b).drop(columns="heads", errors="ignore"))
