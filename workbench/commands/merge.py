"""`workbench merge RUN_DIR`: join the shards of a discover, validate or evaluate run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import friendly_errors


@friendly_errors(resumable=False)
def merge(
    run_dir: Annotated[Path, typer.Argument(help="The --out folder the shards (--shard I/N) were written into.")],
) -> None:
    """Join the finished shards in RUN_DIR/shards into the files one process writes (pcs.parquet and
    heads.json, or per cluster and cluster_heads.json; validation.parquet and validation_summary.csv;
    predictions.jsonl and metrics.json, and a routed run's routing files)."""
    from workbench.execution.shards import merge_run

    written = merge_run(run_dir)
    print(f"merged the shards of {run_dir}: wrote {', '.join(str(path) for path in written)}")


def register(app: typer.Typer) -> None:
    app.command("merge", short_help="Join the shards (--shard I/N) of a run into its outputs.")(merge)
