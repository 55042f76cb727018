"""`workbench select`: choose the top heads of a finished PCS scan again, without scoring again.

Reads the `pcs.parquet` of `workbench discover` and writes `OUT/heads.json` as discover does, recording
the scan it came from and the K; of a hybrid scan only the heads it verified exactly count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import _checked_out_folder, friendly_errors
from workbench.errors import InputError


@friendly_errors(resumable=False)
def select(
    scores: Annotated[Path, typer.Option("--scores", help="pcs.parquet of `workbench discover` (its per-example scores).")],
    top_k: Annotated[int, typer.Option("--top-k", help="Number of heads to select.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output folder for heads.json. Default: top-K beside the scores.", callback=_checked_out_folder
        ),
    ] = None,
    norm: Annotated[
        str | None, typer.Option("--norm", help="Weight normalisation: max, sum or none. Default: the scan's.")
    ] = None,
    min_pcs: Annotated[
        float | None, typer.Option("--min-pcs", help="Selected heads need at least this score. Default: the scan's.")
    ] = None,
) -> None:
    """Select the top-K heads of an existing scan (pcs.parquet) into a new heads.json."""
    from workbench.experiments.discovery import reselect
    from workbench.scores import PCSResult

    if not scores.is_file():
        raise InputError(f"--scores: {scores}: file not found")
    out = scores.parent / f"top-{top_k}" if out is None else out
    weights = reselect(PCSResult.load(scores), top_k, norm=norm, min_pcs=min_pcs, source=str(scores))
    if not weights.heads():
        raise InputError(f"no head of {scores} has PCS >= {weights.extra['min_score']} (lower --min-pcs); nothing written")
    out.mkdir(parents=True, exist_ok=True)
    weights.save(out / "heads.json")
    eligible = "verified heads" if weights.extra["verified_only"] else "heads"
    print(f"selected {len(weights.heads())} of the scan's {eligible} from {scores}:")
    for layer, head in weights.heads():
        print(f"  layer {layer:>2} head {head:>2}  weight {weights.weights[layer, head]:.3f}")
    print(f"wrote {out / 'heads.json'}")


def register(app: typer.Typer) -> None:
    app.command("select", short_help="Re-select the top-K heads of a finished scan.")(select)
