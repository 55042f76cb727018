"""`workbench audit`: which heads matter, under each way of removing a head."""

from __future__ import annotations

from typing import Annotated

import typer

from workbench.commands._shared import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    OutOption,
    friendly_errors,
    load_lens,
)
from workbench.commands.discover import DataOption, FormatOption, ProfileKOption, RetrieverOption, SeedOption, TaskOption
from workbench.errors import InputError

KINDS_HELP = (
    "Comma-separated ablation kinds: zero, mean (the mean z over every position of the examples), "
    "resample (another example's z, seeded), resid-slice (the authors' PCS), query-zero (the authors' DPS mask: "
    "uniform attention), scaled (z x (1 - alpha)). Default: all."
)


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """`--layers`: comma-separated layers and ranges (`20-29`, `0,5,10-12`); None for all."""
    if not text:
        return None
    layers: list[int] = []
    for part in text.split(","):
        bounds = part.strip().split("-")
        if len(bounds) > 2 or not all(bound.strip().isdigit() for bound in bounds):
            raise InputError(f"--layers: {part.strip()!r} is not a layer or a range like 20-29 (layers count from 0)")
        first, last = int(bounds[0]), int(bounds[-1])
        if last < first:
            raise InputError(f"--layers: the range {part.strip()!r} runs backwards")
        layers += range(first, last + 1)
    return tuple(sorted(set(layers)))


def audit_settings(
    kinds: str | None, alpha: float, top_k: int, resamples: int, seed: int, self_repair: bool, limit: int, layers: str | None
):
    """The audit's settings from the command line; one line naming the flag when one is wrong."""
    from workbench.experiments.audit import KINDS, AuditSettings

    chosen = tuple(kind.strip() for kind in kinds.split(",") if kind.strip()) if kinds else KINDS
    unknown = [kind for kind in chosen if kind not in KINDS]
    if unknown:
        raise InputError(f"--kinds: unknown ablation kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
    if len(chosen) < 2:
        raise InputError(f"--kinds: name at least two ablation kinds to compare, got {', '.join(chosen) or 'none'}")
    if len(set(chosen)) != len(chosen):
        raise InputError(f"--kinds: a kind is named twice in {kinds!r}")
    if not 0 < alpha <= 1:
        raise InputError(f"--alpha: scaled ablation multiplies z by 1 - alpha, so alpha must lie in (0, 1], got {alpha:g}")
    for flag, value in (("--top-k", top_k), ("--resamples", resamples)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    if limit < 2:
        why = "resample ablation takes a head's output from another example, and " if "resample" in chosen else ""
        raise InputError(f"--limit: the audit needs at least 2 examples, got {limit}: {why}each example's top-K heads are "
                         "chosen on the other examples")  # fmt: skip
    return AuditSettings(kinds=chosen, alpha=alpha, top_k=top_k, seed=seed, resamples=resamples, self_repair=self_repair,
                         layers=parse_layers(layers))  # fmt: skip


@friendly_errors
def audit(
    out: OutOption,
    data: DataOption = None,
    model: ModelOption = None,
    task: TaskOption = None,
    split: Annotated[str, typer.Option("--split", help="Split of the examples (held-out users: dev).")] = "dev",
    prompt_format: FormatOption = None,
    profile_k: ProfileKOption = None,
    retriever: RetrieverOption = None,
    limit: Annotated[int, typer.Option("--limit", help="Audit the first N examples (at least 2).")] = 4,
    kinds: Annotated[str | None, typer.Option("--kinds", help=KINDS_HELP)] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="The scaled kind's strength: z x (1 - alpha), in (0, 1].")] = 0.5,
    top_k: Annotated[int, typer.Option("--top-k", help="K of each kind's top-K heads (overlap, cross-ablation).")] = 10,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples over examples.")] = 1000,
    self_repair: Annotated[
        bool, typer.Option("--self-repair/--no-self-repair", help="Estimate self-repair: direct vs total effect of each head.")
    ] = True,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers",
            help="Score only the heads of these layers (e.g. 20-29 or 0,5,10-12): a head in layer l costs "
            "the layers above it, so the top layers are the cheap ones. Default: all.",
        ),
    ] = None,
    png: Annotated[bool, typer.Option("--png/--no-png", help="Also write the figures as PNG.")] = True,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Score every head on the same examples under several ablation kinds and compare them: rank
    agreement and top-K overlap between kinds, each kind's top-K ablated under every kind (with and
    without the profile) and self-repair; writes OUT/audit_*.csv|parquet, OUT/audit.json and figures."""
    from workbench.data.prompts import PromptConfig
    from workbench.data.scoring_examples import check_source, load_scoring_examples
    from workbench.experiments.audit import check_audit
    from workbench.pipeline.audit import audit_stage, run_audit
    from workbench.pipeline.stage import data_digest
    from workbench.typed_config import flat_values

    settings = audit_settings(kinds, alpha, top_k, resamples, seed, self_repair, limit, layers)
    prompt = PromptConfig(  # PromptConfig checks the choices
        format=prompt_format or "plain",  # type: ignore[arg-type]
        profile_k=5 if profile_k is None else profile_k,
        retriever=retriever or "bm25",  # type: ignore[arg-type]
        seed=seed,
    )
    task = check_source(data, task)
    lens = load_lens(model, device, dtype, device_map)
    examples = load_scoring_examples(lens, data, task, split, prompt, limit=limit)
    try:
        check_audit(settings, len(examples), lens.geometry.n_layers, lens.geometry.n_heads)
    except InputError as error:
        raise InputError(f"{str(error).removeprefix('audit: ')} (--layers, --top-k, --limit)") from None
    extra = {"data": str(data) if data else "demo", "task": task, "split": split, "limit": limit, **flat_values(prompt)}
    stage = audit_stage(lens, out, settings, data_hash=data_digest(examples), extra=extra)
    result = run_audit(lens, stage, examples, settings, png=png, announce=print)
    print(result.agreement.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote the audit's tables and figures into {out}")


def register(app: typer.Typer) -> None:
    app.command("audit", short_help="Compare ways of removing a head and the heads each picks.")(audit)
