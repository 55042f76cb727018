"""The evaluation stage: generate with one decoder on one split, score, write a run folder.

`workbench evaluate` and `workbench demo` both run it; `workbench.experiments.evaluation.evaluate` does the work
(predictions appended per batch, so an interrupted run resumes). The fingerprint adds to the
run's own `config.json` what it cannot know: the model's weights, the content of the split's
data and the stages whose head weights the decoder reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.checkpoint import digest
from workbench.data.examples import Example
from workbench.data.files import read_json
from workbench.experiments.evaluation import METRICS, PREDICTIONS, RESUME_INDEPENDENT, EvalConfig, evaluate
from workbench.heads import HeadWeights
from workbench.pipeline.stage import Stage, data_digest, model_identity

if TYPE_CHECKING:
    from workbench.engine.lens import Lens
    from workbench.engine.workers import Workers


def evaluation_stage(
    lens: Lens, folder: Path, config: EvalConfig, examples: Sequence[Example], *, heads_from: Stage | None = None
) -> Stage:
    """The fingerprint: every option of `config` (the decoder's and the prompt's included), the
    split's content (all of it: `limit` may grow on a resume), the model, and the head weights:
    the fingerprint of the stage `heads_from` that writes them, else a digest of the file's weights."""
    heads_digest = None
    if config.heads and heads_from is None:
        heads_digest = digest(HeadWeights.load_any(config.heads).weights.tolist())
    return Stage(
        "evaluate", folder, {**config.as_dict(), "heads_digest": heads_digest}, outputs=(PREDICTIONS, METRICS),
        model=model_identity(lens), data=data_digest(examples), inputs={"heads": heads_from} if heads_from else {},
        resumable=RESUME_INDEPENDENT,
    )  # fmt: skip


def run_evaluation(
    lens: Lens,
    stage: Stage,
    examples: Sequence[Example],
    config: EvalConfig,
    *,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
    workers: Workers | None = None,
) -> dict[str, Any]:
    """The run's metrics (`metrics.json`): computed (resuming; by `workers`, default this process),
    or reused when the fingerprint matches."""
    return stage.run(
        lambda: evaluate(lens, examples, config, stage.folder, progress=progress, workers=workers),
        lambda: read_json(stage.folder / METRICS),
        announce=announce,
    )
