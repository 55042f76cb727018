"""The audit stage: the same dev examples scored under several ablation kinds
(`workbench.experiments.audit`), with its figures and the report's section.

`workbench audit` runs it with the kinds and sizes asked for; `workbench run` / `demo` run a small
one (`RUN_AUDIT_KINDS` on the first `RUN_AUDIT_EXAMPLES` dev examples: every head is ablated once
per kind and example, about 30 s each for the default model on 2 idle CPU cores). Its folder holds
the audit's tables, `audit.json`, and `audit_agreement` / `audit_heads` (HTML, and PNG when asked;
PNGs are no part of the fingerprint: a later run that wants them draws the missing ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.experiments.audit import FILES, AuditResult, AuditSettings, audit_ablations
from workbench.figures.audit import agreement_figure, kind_maps
from workbench.figures.export import save_figures
from workbench.pipeline.stage import Stage, model_identity
from workbench.typed_config import flat_values

if TYPE_CHECKING:
    from workbench.data.tokenized import TokenizedExample
    from workbench.engine.lens import Lens

FIGURES = ("audit_agreement", "audit_heads")
RUN_AUDIT_KINDS = ("zero", "resid-slice", "query-zero")  # the paper's definition, the authors' PCS and DPS masks
RUN_AUDIT_EXAMPLES = 2


def run_audit_settings(top_k: int, seed: int, n_heads: int) -> AuditSettings:
    """The small audit of `workbench run` / `demo`."""
    return AuditSettings(kinds=RUN_AUDIT_KINDS, top_k=min(top_k, n_heads - 1), seed=seed)


def audit_stage(
    lens: Lens, folder: Path, settings: AuditSettings, *, data_hash: str, extra: Mapping[str, Any] | None = None
) -> Stage:
    """The stage's fingerprint: every setting, `extra` (the data's label, split, prompt), the examples' content, the model."""
    return Stage("audit", folder, {**flat_values(settings), **(extra or {})},
                 outputs=(*FILES, *(f"{stem}.html" for stem in FIGURES)), model=model_identity(lens), data=data_hash)  # fmt: skip


def run_audit(
    lens: Lens,
    stage: Stage,
    examples: Sequence[TokenizedExample],
    settings: AuditSettings,
    *,
    png: bool = True,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
) -> AuditResult:
    """The audit's tables and figures: reused when the fingerprint matches, else computed."""
    folder = stage.folder

    def compute() -> AuditResult:
        result = audit_ablations(lens, examples, settings, checkpoint=folder / "checkpoint", progress=progress,
                                 say=announce or (lambda _: None))  # fmt: skip
        result.save(folder)
        save_figures(audit_figures(result, folder), png=png)
        return result

    def load() -> AuditResult:
        result = AuditResult.load(folder)
        if png and any(not (folder / f"{stem}.png").is_file() for stem in FIGURES):
            save_figures(audit_figures(result, folder), png=True)
        return result

    return stage.run(compute, load, announce=announce)


def audit_figures(result: AuditResult, folder: Path) -> dict[Path, Any]:
    """The agreement matrix and the per-kind head maps, by the stem they are written to."""
    top = {kind: [tuple(head) for head in heads] for kind, heads in result.record["top_k_heads"].items()}
    return {
        folder / "audit_agreement": agreement_figure(result.agreement),
        folder / "audit_heads": kind_maps(result.grids(), highlights=top, n=result.record["n_examples"]),
    }


def audit_section(folder: Path, heading: str) -> list[str]:
    """The report's lines on the audit in `folder` (tables from its files only)."""
    result = AuditResult.load(folder)
    record, agreement = result.record, result.agreement
    settings = record["settings"]
    k, n = settings["top_k"], record["n_examples"]
    lines = [heading, "",
             f"The same {n} dev examples (with the profile) scored with every head ablated alone under "
             f"{len(settings['kinds'])} ablation kinds ({', '.join(f'`{kind}`' for kind in settings['kinds'])}; "
             f"see docs/audit.md). Intervals: {record['interval']}. With so few examples, read them as descriptive.", "",
             f"| kinds | Spearman ρ (95% CI) | top-{k} shared (95% CI) |", "|---|---|---|"]  # fmt: skip
    for row in agreement.itertuples():
        lines.append(f"| {row.kind_a} vs {row.kind_b} | {row.spearman:.2f} [{row.spearman_low:.2f}, {row.spearman_high:.2f}] "
                     f"| {row.shared_top_k} [{row.shared_low:g}, {row.shared_high:g}] |")  # fmt: skip
    lines += ["", f"Each kind's top-{k} (chosen on the other examples) ablated together under each kind, Δ NLL with the "
              "profile (`audit_cross.csv`; rows: selected by, columns: ablated as):", ""]  # fmt: skip
    cross = result.cross[result.cross["condition"] == "with-profile"]
    kinds = settings["kinds"]
    lines += ["| selected by \\ ablated as | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for selected in kinds:
        cells = []
        for ablated in kinds:
            row = cross[(cross["selected_by"] == selected) & (cross["ablated_as"] == ablated)].iloc[0]
            cells.append(f"{row['delta']:.3f} [{row['low']:.3f}, {row['high']:.3f}]")
        lines.append(f"| {selected} | " + " | ".join(cells) + " |")
    repair = result.self_repair
    if not repair.empty:
        top = {tuple(head) for head in record["top_k_heads"].get("zero", [])}
        chosen = repair[[(layer, head) in top for layer, head in zip(repair["layer"], repair["head"])]]
        if not chosen.empty:
            lines += ["", f"Self-repair of the zero-ablation top-{len(chosen)} (`audit_self_repair.csv`): mean total effect "
                      f"{chosen['total'].mean():.3f}, direct effect {chosen['direct'].mean():.3f}, so later layers made up "
                      f"{chosen['repair'].mean():.3f} nats/token per head on average (direct − total)."]  # fmt: skip
    lines += ["", f"![agreement]({folder.name}/audit_agreement.png)", ""]
    return lines
