"""`workbench cluster`: embed every user's profile, cluster the users, write `clusters.json`.

One user is one profile (a user with several examples is embedded once, from the union of their
profile items). The output folder gets `clusters.json` (centroids, members, and every option and
input that made them), `cluster_users.parquet`, `cluster_routing.parquet` and the report
`clusters.md` (sizes, silhouette, how peaked the clustered users' routes are), with the stage's
fingerprint (the `cluster` stage `workbench demo` runs): a rerun reuses it, other options are
refused in one line. `workbench discover
--clusters` finds heads per cluster; `workbench evaluate --clusters` routes users to them.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from workbench.commands._shared import OutOption, friendly_errors, quiet_transformers
from workbench.commands.discover import DataOption, SeedOption, TaskOption
from workbench.errors import InputError


@friendly_errors(resumable=False)
def cluster(
    out: OutOption,
    data: DataOption = None,
    task: TaskOption = None,
    split: Annotated[str, typer.Option("--split", help="Split whose users are clustered.")] = "train",
    k: Annotated[int | None, typer.Option("--k", min=1, help="Number of clusters.")] = None,
    group_size: Annotated[
        int | None, typer.Option("--group-size", min=1, help="Or about one cluster per N users (the DPS authors: 100).")
    ] = None,
    profile_text: Annotated[
        str | None,
        typer.Option(
            "--profile-text", help="shots: past inputs and the user's outputs; authors: their text fields. Default: shots."
        ),
    ] = None,
    profile_items: Annotated[
        int | None, typer.Option("--profile-items", min=1, help="Profile items embedded. Default: 5.")
    ] = None,
    embed_tokens: Annotated[
        int | None, typer.Option("--embed-tokens", help="Tokens of the profile text embedded (at most 512). Default: 256.")
    ] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Soft-routing temperature shown in the report (cosine scale).")
    ] = 0.05,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Cluster the users of the first N examples only.")] = None,
    seed: SeedOption = 0,
) -> None:
    """Embed each user's profile (all-MiniLM-L6-v2, offline, cached) and k-means the users."""
    from workbench.data.scoring_examples import choose
    from workbench.data.sources import load_examples, resolve_task
    from workbench.pipeline.clusters import clusters_stage, run_clusters
    from workbench.pipeline.stage import data_digest
    from workbench.users import ProfileText
    from workbench.users.routing import check_temperature

    if (k is None) == (group_size is None):
        raise InputError("give one of --k and --group-size")
    check_temperature(temperature)
    given: dict[str, Any] = {"source": profile_text, "items": profile_items, "max_length": embed_tokens}
    recipe = ProfileText(**{name: value for name, value in given.items() if value is not None})
    task = resolve_task(data, task)
    examples = choose(load_examples(data, task, split), limit)
    users = len({example.user_id for example in examples})
    if limit is not None and k is not None and k > users:
        raise InputError(f"--k {k} needs at least {k} users; the first {limit} examples (--limit) have {users}: "
                         "raise --limit or lower --k")  # fmt: skip
    quiet_transformers()
    stage = clusters_stage(out, task=task, split=split, data=str(data) if data else "demo", data_hash=data_digest(examples),
                           k=k, group_size=group_size, seed=seed, recipe=recipe, temperature=temperature)  # fmt: skip
    file = run_clusters(stage, examples, recipe=recipe, announce=typer.echo)
    score = "n/a" if file.silhouette is None else f"{file.silhouette:.3f}"
    typer.echo(
        f"{sum(file.sizes())} profiles (one per user, from {file.n_examples} examples) in {file.k} clusters "
        f"of {file.sizes()} profiles; silhouette {score}"
    )
    typer.echo(f"wrote {out / 'clusters.json'} and the report {out / 'clusters.md'}")


def register(app: typer.Typer) -> None:
    app.command("cluster", short_help="Embed users' profiles and cluster the users (k-means).")(cluster)
