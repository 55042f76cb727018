"""The main job: the whole method, with its controls, in one run, on the bundled demo set
(`workbench demo`) or on the researcher's own data (`workbench run --data DIR`; `workbench.pipeline.plan`).

Stages, each in its own folder of the run with a fingerprint (`workbench.pipeline.stage`), in order:

1. `profile-effect`: the reference output's NLL on dev users with their profile, without it and
   with another user's profile (does *this* user's profile help?).
2. `discover-standard`, `discover-profile-contrast`: preference heads on train users with the
   paper's PCS and with the profile-contrast PCS.
3. `clusters`, `discover-clusters`: the train users clustered by their profiles (`n_clusters`),
   and heads per cluster with the paper's PCS (the variant routing uses), reusing the
   per-example scores of `discover-standard` (a cluster's PCS is the mean over its members).
4. `validation`: both head sets ablated on dev users against random head sets and retrieval /
   induction heads, with and without the profile; a sweep over the number of heads K.
5. `eval/<run>`: decoding on dev users: greedy with the profile, without it and with another
   user's profile (a seeded swap of the same format and length class), CAD, DPS with each
   head set (and other γ), DPS with random heads of the same budget, and DPS with each dev user
   routed to the clusters' heads (hard and soft; dev users were never clustered: they are
   embedded and routed on the fly), with the routing diagnostics in its folder.
   The users' habit (`area_match` for commit subjects) is scored where the dev golds show one.
6. `comparison`: every run paired against greedy (bootstrap intervals, permutation p-values);
   `comparison/routing/` holds the rows of the routing comparison (global, hard, soft, random).
7. `figures`, 8. `report.md`: the paper's figures and a report that reads only from the tables.

The same stage functions serve `workbench discover` (also `--clusters`), `cluster`, `validate` and
`evaluate`. Every stage's fingerprint is planned before any model work, so a run into a folder
made with other options stops at once with one line naming the option; an interrupted run resumes.
PNG export (`figures_png`) is no part of any fingerprint: asking for it later draws what is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from workbench import io
from workbench.data.files import read_json
from workbench.data.prompts import PromptConfig, tokenized_examples
from workbench.data.tasks import task_spec
from workbench.decoding import make_decoder
from workbench.engine.lens import Lens
from workbench.errors import InputError
from workbench.experiments.comparison import compare_runs
from workbench.experiments.cost import (
    PROFILE_EFFECT,
    Passes,
    StagePlan,
    audit_passes,
    calibrate,
    cluster_discovery_passes,
    decoding_passes,
    discovery_passes,
    plan_lines,
    typical_tokens,
    validation_passes,
)
from workbench.experiments.discovery import DiscoverSettings
from workbench.experiments.evaluation import EvalConfig
from workbench.experiments.profile_effect import profile_nll
from workbench.pipeline.audit import RUN_AUDIT_EXAMPLES, RUN_AUDIT_KINDS, audit_stage, run_audit, run_audit_settings
from workbench.pipeline.clusters import cluster_discovery_stage, clusters_stage, run_cluster_discovery, run_clusters
from workbench.pipeline.discovery import discovery_stage, run_discovery
from workbench.pipeline.evaluation import evaluation_stage, run_evaluation
from workbench.pipeline.figures import draw_figures
from workbench.pipeline.plan import (
    CLUSTER_VARIANT,
    COMPARISON,
    CONFIG_FILE,
    CONTROL_COMPARISON,
    GAMMA_SWEEP,
    ROUTED,
    ROUTING_COMPARISON,
    ROUTING_RUNS,
    VARIANTS,
    Plan,
    RunConfig,
    RunData,
    config_record,
    evaluation_runs,
    report_options,
)
from workbench.pipeline.report import write_report
from workbench.pipeline.stage import Stage, data_digest, model_identity
from workbench.pipeline.validation import run_validation
from workbench.users.profiles import ProfileText
from workbench.users.routing import DEFAULT_TEMPERATURE, RoutingConfig


def plan_run(lens: Lens, config: RunConfig, data: RunData, out: Path) -> Plan:
    """The fingerprints of every stage (pure functions of the options, the model and the data)."""
    prompt = config.prompt
    model = model_identity(lens)
    dev_hash = data_digest(data.dev)
    profile_effect = Stage("profile-effect", out / "profile-effect", {"task": config.task, "split": data.dev_label, **asdict(prompt)},
                           outputs=("profile_effect.parquet",), model=model, data=dev_hash)  # fmt: skip
    settings: dict[str, DiscoverSettings] = {}
    discovery: dict[str, Stage] = {}
    for scan in VARIANTS:
        settings[scan] = DiscoverSettings(prompt=prompt, method=config.method, variant=scan, top_k=config.top_k,
                                          miss_rate=config.miss_rate, racing=config.racing, confidence=config.confidence)  # fmt: skip
        discovery[scan] = discovery_stage(
            lens, out / f"discover-{scan}", settings[scan], data=config.data_label, data_hash=data_digest(data.train),
            task=config.task, split=data.train_label, seed=config.seed,
        )  # fmt: skip
    clusters = clusters_stage(out / "clusters", task=config.task, split=data.train_label, data=config.data_label, data_hash=data_digest(data.train),
                              k=config.n_clusters, seed=config.seed, recipe=ProfileText(),
                              temperature=config.routing_temperature)  # fmt: skip
    cluster_discovery = cluster_discovery_stage(
        lens, out / "discover-clusters", settings[CLUSTER_VARIANT], clusters, data=config.data_label, data_hash=data_digest(data.train),
        task=config.task, split=data.train_label, seed=config.seed,
    )  # fmt: skip
    validation = Stage(
        "validate", out / "validation",
        {"k": config.top_k, "n_random": config.n_random, "match_layers": False, "pattern_heads": True, "ablation": "zero",
         "seed": config.seed, "sweep": list(config.sweep_k), "data": config.data_label, "task": config.task, "split": data.dev_label,
         **asdict(prompt)},
        outputs=("validation.parquet", "validation_summary.csv", "sweep_k.csv"), model=model, data=dev_hash,
        inputs=dict(discovery),
    )  # fmt: skip
    evaluations = {}
    for name, (method, variant, decoder_options, prompt_options) in evaluation_runs(config).items():
        routed = variant == "routed"
        heads = None if variant is None or routed else str(out / f"discover-{variant}" / "heads.json")
        routing = None
        if routed:
            soft = ROUTED[name] == "soft"
            routing = RoutingConfig(clusters=str(clusters.folder / "clusters.json"), cluster_heads=str(cluster_discovery.folder),
                                    mode=ROUTED[name], temperature=config.routing_temperature if soft else DEFAULT_TEMPERATURE)  # fmt: skip
        eval_config = EvalConfig(
            task=config.task, split=data.dev_label, model=lens.name, decoder=make_decoder(method, **decoder_options), heads=heads,
            data=config.data_label, prompt=dataclasses.replace(prompt, **prompt_options), seed=config.seed, limit=config.n_dev,
            max_new_tokens=config.max_new_tokens, routing=routing, habits=data.habits,
        )  # fmt: skip
        heads_from = None if variant is None else cluster_discovery if routed else discovery[variant]
        stage = evaluation_stage(lens, out / "eval" / name, eval_config, data.dev_split, heads_from=heads_from)
        evaluations[name] = (stage, eval_config)
    audit = None
    if len(data.dev) >= 2:
        audited = data.dev[:RUN_AUDIT_EXAMPLES]
        audit = audit_stage(lens, out / "audit", run_audit_settings(config.top_k, config.seed, lens.geometry.n_total_heads),
                            data_hash=data_digest(audited), extra={"data": config.data_label, "task": config.task,
                                                                   "split": data.dev_label, **asdict(prompt)})  # fmt: skip
    eval_stages = {name: stage for name, (stage, _) in evaluations.items()}
    comparison = Stage("compare", out / "comparison", {"baseline": "greedy", "seed": config.seed},
                       outputs=(COMPARISON, CONTROL_COMPARISON, ROUTING_COMPARISON, *([GAMMA_SWEEP] if config.gammas else [])),
                       inputs=eval_stages)  # fmt: skip
    every = {"profile-effect": profile_effect, **discovery, "clusters": clusters, "discover-clusters": cluster_discovery,
             "validation": validation, **({"audit": audit} if audit else {}), **eval_stages, "comparison": comparison}  # fmt: skip
    # PNG export is not part of what the figures and numbers are: the figures stage draws missing PNGs when asked
    figures = Stage("figures", out / "figures", {}, outputs=("index.md",), inputs=every)
    report = Stage(
        "report", out, {"config": report_options(config)}, outputs=("report.md",), inputs={**every, "figures": figures}
    )
    return Plan(out, profile_effect, discovery, clusters, cluster_discovery, validation, evaluations, comparison, figures, report,
                settings, data.split_note, data.habits, audit)  # fmt: skip


def check_plan(plan: Plan, config: RunConfig) -> None:
    """Refuse, in one line, a run folder made with other options (before any model work)."""
    path = plan.out / CONFIG_FILE
    if path.is_file():
        stored = read_json(path)
        wanted = config_record(config)
        changed = [key for key in wanted if key != "figures_png" and stored.get(key) != wanted[key]]
        if changed:
            shown = "; ".join(f"{key} {stored.get(key)!r} -> {wanted[key]!r}" for key in changed)
            raise InputError(
                f"{plan.out} holds a run made with other options ({shown}); "
                f"use another --out, or delete {plan.out} to start afresh"
            )
    for stage in plan.stages:
        stage.check()


def stage_plans(plan: Plan, config: RunConfig, data: RunData, lens: Lens) -> list[StagePlan]:
    """Each model stage's examples and passes per example (`workbench.experiments.cost`); a stage
    whose finished outputs will be reused is marked done and costs nothing."""
    n_layers, n_heads = lens.geometry.n_layers, lens.geometry.n_heads
    n_train, n_dev = len(data.train), len(data.dev)
    rows = [StagePlan("profile effect", n_dev, PROFILE_EFFECT, plan.profile_effect.check())]
    for variant, stage in plan.discovery.items():
        passes = discovery_passes(plan.settings[variant], n_layers, n_heads)
        rows.append(StagePlan(f"discovery, {variant} ({config.method} PCS)", n_train, passes, stage.check()))
    passes = cluster_discovery_passes(plan.settings[CLUSTER_VARIANT], n_layers, n_heads)
    rows.append(StagePlan("per-cluster discovery (at most)", n_train, passes, plan.cluster_discovery.check()))
    sweeps = sum(1 for k in config.sweep_k if k < config.top_k)  # the sweep's k = top_k is the preference set itself
    n_sets = len(VARIANTS) * (1 + sweeps) + config.n_random + 2  # random and pattern sets are shared by both head sets
    rows.append(StagePlan(f"validation ({n_sets} head sets)", n_dev, validation_passes(n_sets), plan.validation.check()))
    if plan.audit is not None:
        passes = audit_passes(len(RUN_AUDIT_KINDS), n_layers, n_heads)
        label = f"ablation audit ({len(RUN_AUDIT_KINDS)} kinds, every head)"
        rows.append(StagePlan(label, min(n_dev, RUN_AUDIT_EXAMPLES), passes, plan.audit.check()))
    tokens = config.max_new_tokens or task_spec(config.task).max_new_tokens
    pending = [eval_config.decoder.name for stage, eval_config in plan.evaluations.values() if not stage.check()]
    passes = sum((decoding_passes(method, tokens) for method in pending), Passes())
    label = f"decoding ({len(pending)} of {len(plan.evaluations)} runs to do, {tokens} new tokens)"
    rows.append(StagePlan(label, n_dev, passes, not pending))
    return rows


def run_estimate(plan: Plan, config: RunConfig, data: RunData, lens: Lens) -> list[str]:
    """The run's plan with times from a calibration on `lens` and the cheaper routes."""
    rows = stage_plans(plan, config, data, lens)
    if all(row.done for row in rows):
        return ["plan: every model stage is done; their outputs are reused"]
    sample = tokenized_examples(lens, data.dev[:8], config.prompt, partners=data.dev_split)
    hints = [*(["--preset default"] if config.preset != "default" else []),
             *(["--method attribution"] if config.method != "attribution" else []), "--n-train / --n-dev (fewer examples)"]  # fmt: skip
    return plan_lines(rows, calibrate(lens, typical_tokens(sample)), hint=", ".join(hints))


def run_pipeline(
    lens: Lens,
    config: RunConfig,
    out: str | Path,
    *,
    data: RunData | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Run (or resume) every stage into `out`; returns the paired comparison table."""
    out = Path(out)
    data = data or RunData.load(config)
    plan = plan_run(lens, config, data, out)
    check_plan(plan, config)
    for line in run_estimate(plan, config, data, lens):
        say(line)
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / CONFIG_FILE, {**config_record(config), "model": model_identity(lens),
                                      "stages": {str(s.folder.relative_to(out)): s.digest for s in plan.stages}})  # fmt: skip
    prompt = config.prompt
    steps = 8
    header = lambda number, text: say(f"[{number}/{steps}] {text}")

    header(1, f"profile effect: reference NLL of {len(data.dev)} dev examples with, without and with a swapped profile")
    plan.profile_effect.run(
        lambda: _profile_effect(lens, data, prompt, plan.profile_effect.folder, progress),
        lambda: pd.read_parquet(plan.profile_effect.folder / "profile_effect.parquet"),
        announce=say,
    )

    header(2, f"discovery: {config.method} PCS of every head on {len(data.train)} train examples, standard and profile-contrast")
    train = tokenized_examples(lens, data.train, prompt, partners=data.train)
    heads = {}
    for variant, stage in plan.discovery.items():
        _, heads[variant] = run_discovery(lens, stage, train, plan.settings[variant], progress=progress, announce=say)
        say(f"  {variant}: top {config.top_k} heads " + ", ".join(f"L{layer}H{head}" for layer, head in heads[variant].heads()))

    header(3, f"clusters: {len(data.train)} train examples' users in {config.n_clusters} clusters, {config.method} PCS "
              f"({CLUSTER_VARIANT}) per cluster from the per-example scores of discover-{CLUSTER_VARIANT}")  # fmt: skip
    clusters = run_clusters(plan.clusters, data.train, recipe=ProfileText(), announce=say)
    say(f"  cluster sizes (users): {clusters.sizes()}")
    _, cluster_heads = run_cluster_discovery(
        lens, plan.cluster_discovery, train, clusters, plan.settings[CLUSTER_VARIANT],
        checkpoint=plan.discovery[CLUSTER_VARIANT].folder / "checkpoint", progress=progress, announce=say,
    )  # fmt: skip
    for cluster, weights in enumerate(cluster_heads.weights):
        say(f"  cluster {cluster}: heads " + ", ".join(f"L{layer}H{head}" for layer, head in weights.heads()))

    header(4, f"validation: top-{config.top_k} heads vs {config.n_random} random sets on {len(data.dev)} dev examples, "
              "with and without the profile")  # fmt: skip
    dev = tokenized_examples(lens, data.dev, prompt, partners=data.dev_split)
    run_validation(lens, plan.validation, dev, heads, progress=progress, announce=say)
    if plan.audit is not None:
        audited = dev[:RUN_AUDIT_EXAMPLES]
        say(f"  ablation audit: every head under {', '.join(plan.audit.options['kinds'])} on {len(audited)} dev examples")
        run_audit(lens, plan.audit, audited, run_audit_settings(config.top_k, config.seed, lens.geometry.n_total_heads),
                  png=config.figures_png, progress=progress, announce=say)  # fmt: skip

    header(5, f"decoding: {len(plan.evaluations)} runs on {len(data.dev)} dev examples")
    for name, (stage, eval_config) in plan.evaluations.items():
        say(f"  {name}")
        run_evaluation(lens, stage, data.dev_split, eval_config, progress=progress, announce=say)

    header(6, "comparison: every run paired against greedy, DPS against DPS with random heads")
    comparison = plan.comparison.run(lambda: _compare(plan, config), lambda: pd.read_parquet(plan.comparison.folder / COMPARISON),
                                     announce=say)  # fmt: skip

    header(7, f"figures into {plan.figures.folder}")
    plan.figures.run(lambda: _figures(out, plan.figures.folder, config.figures_png, say),
                     lambda: _missing_pngs(out, plan.figures.folder, config.figures_png), announce=say)  # fmt: skip

    header(8, f"report: {out / 'report.md'}")
    plan.report.run(lambda: write_report(out, config, lens, plan), lambda: None, announce=say)
    return comparison


def _profile_effect(lens: Lens, data: RunData, prompt: PromptConfig, folder: Path, progress: bool) -> pd.DataFrame:
    table = profile_nll(lens, data.dev, prompt, progress=progress)
    io.write_parquet(folder / "profile_effect.parquet", table)
    return table


def _compare(plan: Plan, config: RunConfig) -> pd.DataFrame:
    """Every run against greedy (`comparison.parquet`), the DPS runs against the random-heads
    control (`vs-random-heads/comparison.parquet`) and, with more than one γ, the γ sweep of DPS
    with the profile-contrast heads (`sweep_gamma.csv`: each run's metrics with their intervals)."""
    seed = config.seed
    folders = {name: stage.folder for name, (stage, _) in plan.evaluations.items()}
    if config.gammas:
        runs = {config.gamma: "dps-profile-contrast", **{g: f"dps-profile-contrast-gamma-{g:g}" for g in config.gammas}}
        rows = [
            {"group": "dps-profile-contrast", "gamma": gamma, "metric": metric, "value": value["value"], "low": value["low"],
             "high": value["high"]}
            for gamma, name in sorted(runs.items())
            for metric, value in read_json(folders[name] / "metrics.json")["metrics"].items()
        ]  # fmt: skip
        io.write_text(plan.comparison.folder / GAMMA_SWEEP, pd.DataFrame(rows).to_csv(index=False))
    against_greedy = compare_runs([folders.pop("greedy"), *folders.values()], seed=seed)
    dps = [folder for name, folder in folders.items() if name.startswith("dps-")]
    io.write_parquet(plan.comparison.folder / CONTROL_COMPARISON, compare_runs([folders["random-heads"], *dps], seed=seed))
    routing = against_greedy[against_greedy["run"].isin([str(folders[name]) for name in ROUTING_RUNS])]
    io.write_parquet(plan.comparison.folder / ROUTING_COMPARISON, routing.reset_index(drop=True))
    io.write_parquet(plan.comparison.folder / COMPARISON, against_greedy)
    return against_greedy


def _figures(run: Path, out: Path, png: bool, say: Callable[[str], None]) -> None:
    """The figures stage (`workbench figures all`), and `index.md`: what was drawn, what skipped."""
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        say(f"  {text}")

    written = draw_figures(run, out, png=png, say=note)
    lines = [f"- `{path.stem}`" for path in written if path.suffix == ".html"] + [f"- {note}" for note in notes]
    io.write_text(out / "index.md", "# Figures of this run\n\n" + "\n".join(lines) + "\n")


def _missing_pngs(run: Path, out: Path, png: bool) -> None:
    """On reuse of the figures stage: draw the figures again when PNGs are wanted and some are missing."""
    if png and any(not page.with_suffix(".png").is_file() for page in out.glob("*.html")):
        draw_figures(run, out, png=True, say=lambda _: None)
