"""The discovery stage: score every head (PCS) on examples and select the top heads.

`workbench discover` and `workbench demo` both run it. Its folder holds `pcs.parquet` (per-example
scores), `heads.json` (the selection) and `checkpoint/` (finished examples, keyed by content, so
a run over more or other examples resumes from those it shares).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.tokenized import TokenizedExample
from workbench.errors import InputError
from workbench.experiments.discovery import SCAN_OPTIONS, DiscoverSettings, discover_heads, scan_options
from workbench.heads import HeadWeights
from workbench.pipeline.stage import Stage, model_identity
from workbench.scores import PCSResult
from workbench.typed_config import flat_values

if TYPE_CHECKING:
    from workbench.engine.lens import Lens
    from workbench.engine.workers import Workers

PCS_FILE, HEADS_FILE = "pcs.parquet", "heads.json"


def discovery_stage(
    lens: Lens,
    folder: Path,
    settings: DiscoverSettings,
    *,
    data: str,
    data_hash: str,
    task: str,
    split: str,
    top_m: int | None = None,
    max_rows: int = 64,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Stage:
    """The stage's fingerprint: every setting, the data's label and content hash, the model."""
    options = {**flat_values(settings), "data": data, "task": task, "split": split, "top_m": top_m,
               "max_rows": max_rows, "seed": seed, **(extra or {})}  # fmt: skip
    return Stage(
        "discover", folder, options, outputs=(PCS_FILE, HEADS_FILE), model=model_identity(lens), data=data_hash,
        resumable=("limit", "data"),  # entries are keyed by example content: other examples reuse the shared ones
    )  # fmt: skip


def run_discovery(
    lens: Lens,
    stage: Stage,
    examples: Sequence[TokenizedExample],
    settings: DiscoverSettings,
    *,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
    workers: Workers | None = None,
) -> tuple[PCSResult, HeadWeights]:
    """Scores and selected heads of the stage: reused when its fingerprint matches, else computed
    (by `workers`, default this process)."""
    options = stage.options
    folder = stage.folder

    def compute() -> tuple[PCSResult, HeadWeights]:
        record = {"fingerprint": stage.digest, **dict(options)}
        scan = scan_options(lens, settings, **{name: options[name] for name in SCAN_OPTIONS})
        result, weights = discover_heads(
            lens, examples, settings, scan, checkpoint=folder / "checkpoint", progress=progress, workers=workers,
            metadata={"split": options["split"], "preset": options.get("preset"), "options": record},
            extra={"task": options["task"], "split": options["split"], "data": options["data"], "preset": options.get("preset"),
                   "options": record},
        )  # fmt: skip
        result.save(folder / PCS_FILE)
        if not weights.heads():
            raise InputError(
                f"no head has PCS >= {settings.min_pcs}, so no heads.json was written (lower --min-pcs); "
                f"{folder / PCS_FILE} is kept"
            )
        weights.save(folder / HEADS_FILE)
        return result, weights

    def load() -> tuple[PCSResult, HeadWeights]:
        return PCSResult.load(folder / PCS_FILE), HeadWeights.load(folder / HEADS_FILE)

    return stage.run(compute, load, announce=announce)
