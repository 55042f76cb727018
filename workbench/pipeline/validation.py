"""The validation stage: ablate each selected head set together on held-out examples, against
random head sets and the retrieval and induction heads, with and without the profile.

`workbench validate` and `workbench demo` both run it. Its folder holds `validation.parquet` (per
example; a `heads` column names the head file of each row), `validation_summary.csv` and, with a
sweep over K, `sweep_k.csv` (the profile condition's mean ΔNLL of each set's top k heads, with a
bootstrap interval). `checkpoint/` keeps finished examples, so an interrupted study resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench import io
from workbench.checkpoint import digest
from workbench.data.tokenized import TokenizedExample
from workbench.experiments.validation import HeadSets, head_sets, summarize_validation, validation_deltas
from workbench.heads import HeadWeights
from workbench.pipeline.stage import Stage, model_identity
from workbench.scores import induction_scores, retrieval_scores
from workbench.stats import bootstrap_mean_ci

if TYPE_CHECKING:
    from workbench.engine.lens import Lens
    from workbench.engine.workers import Workers

DELTAS_FILE, SUMMARY_FILE, SWEEP_FILE = "validation.parquet", "validation_summary.csv", "sweep_k.csv"
SWEEP_SET = "top-k"  # head-set name of the sweep's sets (draw = k); kept out of the study's tables


def validation_stage(
    lens: Lens,
    folder: Path,
    heads: Mapping[str, HeadWeights],
    *,
    options: Mapping[str, Any],
    data_hash: str,
    inputs: Mapping[str, Stage] | None = None,
) -> Stage:
    """The fingerprint: `options` (k, n_random, match_layers, pattern_heads, ablation, seed,
    sweep, data, split, prompt), the head sets' weights, the examples' content, the model."""
    weights = {name: digest(w.weights.tolist()) for name, w in heads.items()}
    outputs = (DELTAS_FILE, SUMMARY_FILE) + ((SWEEP_FILE,) if options.get("sweep") else ())
    return Stage(
        "validate", folder, {**options, "heads": weights}, outputs=outputs, model=model_identity(lens), data=data_hash,
        inputs=dict(inputs or {}), resumable=("limit", "data"),  # the checkpoint is keyed by example content
    )  # fmt: skip


def run_validation(
    lens: Lens,
    stage: Stage,
    examples: Sequence[TokenizedExample],
    heads: Mapping[str, HeadWeights],
    *,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
    workers: Workers | None = None,
) -> pd.DataFrame:
    """The study's summary table (see the module docstring); computed (by `workers`, default this
    process), or reused when the fingerprint matches."""
    options = stage.options
    folder = stage.folder

    def compute() -> pd.DataFrame:

        grids = {}
        if options.get("pattern_heads", True):
            scorers: dict[str, Callable[..., torch.Tensor]] = {"retrieval": retrieval_scores, "induction": induction_scores}
            for name in tqdm(scorers, desc="retrieval and induction heads", unit="score", disable=not progress):
                grids[name] = scorers[name](lens, seed=options["seed"])
        studies: dict[str, HeadSets] = {}
        for name, weights in heads.items():
            sets = head_sets(lens, weights, k=options.get("k"), n_random=options["n_random"],
                             match_layers=options.get("match_layers", False), seed=options["seed"], **grids)  # fmt: skip
            ranked = weights.heads()
            sets += [(SWEEP_SET, k, ranked[:k]) for k in options.get("sweep") or () if k <= len(ranked)]
            studies[name] = sets
        deltas = validation_deltas(lens, examples, studies, ablation=options.get("ablation", "zero"),
                                   checkpoint=folder / "checkpoint", progress=progress, workers=workers)  # fmt: skip
        sweep = deltas[deltas["head_set"] == SWEEP_SET]
        deltas = deltas[deltas["head_set"] != SWEEP_SET].reset_index(drop=True)
        summary = summarize_validation(deltas, seed=options["seed"])
        if options.get("sweep"):
            io.write_text(folder / SWEEP_FILE, sweep_table(sweep, seed=options["seed"]).to_csv(index=False))
        io.write_parquet(folder / DELTAS_FILE, deltas)
        io.write_text(folder / SUMMARY_FILE, summary.to_csv(index=False))
        return summary

    return stage.run(compute, lambda: pd.read_csv(folder / SUMMARY_FILE), announce=announce)


def sweep_table(sweep: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """`group, k, metric, value, low, high`: mean ΔNLL (profile condition) of each set's top k
    heads ablated together, with a bootstrap interval over examples."""
    rows = []
    for (group, k), part in sweep[sweep["condition"] == "profile"].groupby(["heads", "draw"], sort=False):
        values = torch.tensor(part["delta_nll"].to_numpy())
        low, high = bootstrap_mean_ci(values, seed=seed)
        rows.append({"group": group, "k": int(k), "metric": "ΔNLL",
                     "value": float(values.mean()), "low": float(low), "high": float(high)})  # fmt: skip
    return pd.DataFrame(rows, columns=["group", "k", "metric", "value", "low", "high"])
