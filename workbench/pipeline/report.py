"""A run's `report.md`: what was run, every table with its intervals, and a reading of them.

Every number in the report is formatted from the table file it names (`fmt`, three decimals);
the reading is written from those numbers by fixed rules (an interval that excludes 0, a p-value
below 0.05), never by hand, so it cannot claim what the tables do not show.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from workbench import io
from workbench.data.files import read_json
from workbench.data.tasks import task_spec
from workbench.engine.lens import Lens
from workbench.figures.overlap import jaccard
from workbench.heads import HeadWeights
from workbench.pipeline.audit import audit_section
from workbench.pipeline.plan import CLUSTER_VARIANT, ROUTED, ROUTING_COMPARISON, Plan, RunConfig, report_options
from workbench.pipeline.stage import model_identity
from workbench.scores import PCSResult
from workbench.scores.certificate import Certificate
from workbench.stats import bootstrap_mean_ci
from workbench.users.cluster_heads import ClusterHeads
from workbench.users.clusters import ClusterFile

ALPHA = 0.05


def fmt(value: Any) -> str:
    """How the report writes a number: three decimals (a p-value too); `n/a` for NaN or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}"


def interval(value: float, low: float, high: float) -> str:
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def markdown_table(frame: pd.DataFrame) -> str:
    """A Markdown table with every number through `fmt`."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(fmt(value.item() if hasattr(value, "item") else value) for value in row) + " |"
            for row in frame.itertuples(index=False)]  # fmt: skip
    return "\n".join([header, rule, *rows])


def excludes_zero(low: float, high: float) -> bool:
    return not (math.isnan(low) or math.isnan(high)) and (low > 0 or high < 0)


# How the report describes the PCS method that made its numbers (and no other).
METHOD_READING = {
    "exact": "every head ablated exactly on every example",
    "attribution": "every head estimated from one forward and one backward pass per example",
    "hybrid": "attribution for every head, then exact PCS for 3 x K candidates",
}


def profile_effect_table(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Mean reference NLL per condition and its paired difference to "with the profile"."""
    rows = []
    with_profile = torch.tensor(table["nll_with_profile"].to_numpy())
    for condition, column in (("own profile", "nll_with_profile"), ("no profile", "nll_without_profile"),
                              ("another user's profile", "nll_swapped_profile")):  # fmt: skip
        values = torch.tensor(table[column].to_numpy())
        kept = ~values.isnan()
        difference = with_profile[kept] - values[kept]
        low, high = bootstrap_mean_ci(difference, seed=seed) if condition != "own profile" else (math.nan, math.nan)
        rows.append({"prompt": condition, "mean NLL": float(values[kept].mean()), "n": int(kept.sum()),
                     "own minus this": float(difference.mean()) if condition != "own profile" else math.nan,
                     "low": float(low), "high": float(high)})  # fmt: skip
    return pd.DataFrame(rows)


def top_heads_table(result: PCSResult, weights: HeadWeights, seed: int) -> pd.DataFrame:
    low, high = result.bootstrap_ci(seed=seed)
    mean, exact = result.mean(), result.exact
    rows = [{"head": f"L{layer}H{head}", "mean PCS": float(mean[layer, head]), "low": float(low[layer, head]),
             "high": float(high[layer, head]), "exact": bool(exact[layer, head]), "weight": float(weights.weights[layer, head])}
            for layer, head in weights.heads()]  # fmt: skip
    return pd.DataFrame(rows)


def verification_lines(result: PCSResult) -> list[str]:
    """What a certified or raced hybrid scan guarantees about its candidates (docs/certified_hybrid.md)."""
    lines = []
    certificate, racing = result.metadata.get("certificate"), result.metadata.get("racing")
    if certificate:
        lines.append(f"Certificate (`--miss-rate {certificate['target']:g}`): {Certificate(**certificate).describe()}; "
                     f"sampled heads are scored exactly (`exact`), so one above the K-th candidate can be selected.")  # fmt: skip
    if racing:
        lines.append(f"Raced exact phase (confidence {result.metadata['confidence']:g}): {racing['head_examples']} of "
                     f"{racing['head_examples_without_racing']} head-example ablations run; a head settled early has its "
                     "mean over the examples it was scored on (its interval is too narrow).")  # fmt: skip
    return [*lines, ""] if lines else []


def comparison_rows(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "run": [Path(run).name for run in table["run"]], "baseline": [Path(run).name for run in table["baseline"]],
        "metric": table["metric"], "baseline value": table["baseline_value"], "value": table["value"],
        "difference": table["difference"], "low": table["low"], "high": table["high"], "p": table["p_value"],
        "n": table["n"],
    })  # fmt: skip


def write_report(out: Path, config: RunConfig, lens: Lens, plan: Plan) -> None:
    io.write_text(out / "report.md", report_markdown(out, config, lens, plan))


def report_markdown(out: Path, config: RunConfig, lens: Lens, plan: Plan) -> str:

    seed = config.seed
    model = model_identity(lens)
    decoded_at = sorted(
        {
            count
            for stage, _ in plan.evaluations.values()
            for count in read_json(stage.folder / "metrics.json").get("threads", [])
        },
        key=lambda count: (count is None, count or 0),
    )
    lines = [
        f"# Run: preference heads on {'the bundled demo set' if config.data is None else f'`{config.data}`'} ({config.task})",
        "",
        "Every number below is read from the table file named above it; intervals are 95 % bootstrap intervals over",
        "examples (seeded), p-values are permutation p-values. Heads are discovered on **train** users and validated and",
        "evaluated on **dev** users, who are other people.",
        "",
        "## What was run",
        "",
        f"- model: `{model['name']}`, weights digest `{model['weights']}`, on {lens.device.type}",
        f"- numerics: scores and validation do not depend on the torch thread count; predictions were decoded at "
        f"{', '.join('GPU' if count is None else str(count) for count in decoded_at)} torch thread(s)"
        + ("" if len(decoded_at) < 2 else " (decoding steps are not bit-equal across thread counts)")
        + " (docs/numerics.md)",
        f"- data: {'the bundled demo set' if config.data is None else f'`{config.data}`'}, {config.task}; train examples: "
        f"{config.n_train} of split `{plan.discovery['standard'].options['split']}` (content hash `{plan.discovery['standard'].data}`), "
        f"dev examples: {config.n_dev} of split `{plan.validation.options['split']}` (content hash of the dev split "
        f"`{plan.profile_effect.data}`)" + (f"; {plan.split_note}" if plan.split_note else ""),
        f"- preset `{config.preset}`; every option: "
        + ", ".join(f"`{name}={value}`" for name, value in json.loads(json.dumps(report_options(config), default=list)).items()),
        f"- prompt: the plain few-shot format, {config.profile_k} BM25-retrieved profile items (none for `greedy-no-profile`, "
        "another dev user's of similar size for `greedy-swapped-profile`, seeded); "
        f"answers up to {config.max_new_tokens or 'the task default of'} new tokens"
        + ("" if config.max_new_tokens else f" {task_spec(config.task).max_new_tokens}")
        + "; discovery and validation use zero ablation at",
        "  `hook_z`; PCS method `"
        + config.method
        + f"` ({METHOD_READING[config.method]}"
        + (f"; certified to a miss-rate bound of {config.miss_rate:g}" if config.miss_rate is not None else "")
        + ("; raced" if config.racing else "")
        + (f" at confidence {config.confidence:g}" if config.miss_rate is not None or config.racing else "")
        + ")",
        f"- users' habits scored in decoding: {', '.join(f'`{h}` (`{h}_match`)' for h in plan.habits) if plan.habits else 'none (the dev golds show none)'}",
        "",
        "| stage | folder | fingerprint |",
        "|---|---|---|",
        *(
            f"| {stage.name} | `{stage.folder.relative_to(out) if stage.folder != out else '.'}` | `{stage.digest}` |"
            for stage in plan.stages
        ),
        "",
    ]

    # 1. profile effect
    effect = profile_effect_table(pd.read_parquet(plan.profile_effect.folder / "profile_effect.parquet"), seed)
    lines += ["## 1. Does the profile help? (`profile-effect/profile_effect.parquet`)", "",
              "Mean NLL (nats/token) of the dev users' reference outputs; `own minus this` < 0 means the own profile gives",
              "the lower NLL.", "", markdown_table(effect), ""]  # fmt: skip

    # 2. discovery
    sets: dict[str, list[tuple[int, int]]] = {}
    lines += ["## 2. Preference heads on train users", ""]
    for variant, stage in plan.discovery.items():
        result = PCSResult.load(stage.folder / "pcs.parquet")
        weights = HeadWeights.load(stage.folder / "heads.json")
        sets[variant] = weights.heads()
        lines += [f"### {variant} PCS (`{stage.folder.name}/pcs.parquet`, `heads.json`)", "",
                  f"Top {config.top_k} of {lens.geometry.n_total_heads} heads by mean PCS over {result.n_examples} examples "
                  "(`exact`: scored by ablation, else the attribution estimate):", "",
                  markdown_table(top_heads_table(result, weights, seed)), "", *verification_lines(result)]  # fmt: skip
    first, second = (set(sets[v]) for v in plan.discovery)
    jaccard = len(first & second) / len(first | second) if first | second else 1.0
    lines += [f"Overlap of the two head sets: {len(first & second)} shared heads, Jaccard {fmt(jaccard)}.", ""]

    # 3. validation
    summary = pd.read_csv(plan.validation.folder / "validation_summary.csv")
    sweep = pd.read_csv(plan.validation.folder / "sweep_k.csv")
    smallest_p = 1 / (1 + config.n_random)
    lines += ["## 3. Validation on dev users (`validation/validation_summary.csv`)", "",
              "Each head set ablated together; Δ NLL of the reference (nats/token). `profile-specific` = with minus without",
              f"the profile. p: share of the {config.n_random} random {config.top_k}-head sets with a mean at least as large",
              f"(the smallest attainable p is {fmt(smallest_p)}).", "",
              markdown_table(summary[["heads", "head_set", "condition", "mean_delta_nll", "ci_low", "ci_high", "p_value_vs_random",
                                      "n_examples"]]),
              "", "### Number of heads (`validation/sweep_k.csv`): Δ NLL with the profile of the top k heads", "",
              markdown_table(sweep[["group", "k", "value", "low", "high"]]), ""]  # fmt: skip
    if plan.audit is not None:
        lines += audit_section(plan.audit.folder, "### Ablation audit on dev users (`audit/`)")

    # 4. decoding
    metric_rows = []
    for name, (stage, _) in plan.evaluations.items():
        metrics = json.loads((stage.folder / "metrics.json").read_text())
        for metric, value in metrics["metrics"].items():
            metric_rows.append({"run": name, "metric": metric, "value": value["value"], "low": value["low"],
                                "high": value["high"], "n": metrics["n"],
                                "s/example": metrics.get("seconds", math.nan) / max(metrics["n"], 1)})  # fmt: skip
    comparison = pd.read_parquet(plan.comparison.folder / "comparison.parquet")
    lines += ["## 4. Decoding on dev users (`eval/*/metrics.json`)", "",
              markdown_table(pd.DataFrame(metric_rows)), "",
              "### Paired against greedy (`comparison/comparison.parquet`)", "",
              markdown_table(comparison_rows(comparison)), ""]  # fmt: skip
    gamma_path = plan.comparison.folder / "sweep_gamma.csv"
    if gamma_path.is_file():
        lines += ["### DPS (profile-contrast heads) against γ (`comparison/sweep_gamma.csv`)", "",
                  markdown_table(pd.read_csv(gamma_path)[["gamma", "metric", "value", "low", "high"]]), ""]  # fmt: skip
    control_path = plan.comparison.folder / "vs-random-heads" / "comparison.parquet"
    control = pd.read_parquet(control_path) if control_path.is_file() else None
    if control is not None:
        lines += ["### DPS against DPS with random heads of the same budget (`comparison/vs-random-heads/comparison.parquet`)", "",
                  markdown_table(comparison_rows(control)), ""]  # fmt: skip

    routing = routing_table(plan)
    lines += clusters_section(out, config, plan, routing)
    lines += [
        "## 6. Reading",
        "",
        *reading(effect, summary, comparison, control, config),
        *routing_reading(routing, out, plan),
        "",
    ]
    index = plan.figures.folder / "index.md"
    if index.is_file():
        lines += ["## Figures (`figures/`)", "", *[line for line in index.read_text().splitlines()[2:] if line], ""]
    return "\n".join(lines)


def clusters_table(plan: Plan) -> pd.DataFrame:
    """Per cluster: users, examples, its heads and their overlap with the global heads of the same PCS."""

    clusters = ClusterFile.load(plan.clusters.folder / "clusters.json")
    heads = ClusterHeads.load(plan.cluster_discovery.folder)
    global_heads = set(HeadWeights.load(plan.discovery[CLUSTER_VARIANT].folder / "heads.json").heads())
    rows = []
    for cluster, weights in enumerate(heads.weights):
        chosen = set(weights.heads())
        rows.append({"cluster": cluster, "users": clusters.sizes()[cluster], "examples": len(clusters.example_ids[cluster]),
                     "heads": " ".join(f"L{layer}H{head}" for layer, head in weights.heads()),
                     "shared with global": len(chosen & global_heads), "Jaccard": jaccard(chosen, global_heads)})  # fmt: skip
    return pd.DataFrame(rows)


def routing_table(plan: Plan) -> pd.DataFrame:
    """The routing diagnostics of each routed run, as its `routing.json` summary records them."""

    rows = []
    for name in ROUTED:
        stage, _ = plan.evaluations[name]
        summary = json.loads((stage.folder / "routing.json").read_text())["summary"]
        rows.append({"run": name, "routing": summary["mode"], "T": summary["temperature"], "users": summary["n_users"],
                     "new users": summary["n_new_users"], "mean entropy": summary["mean_entropy"],
                     "ln K": summary["uniform_entropy"], "mean top weight": summary["mean_top_weight"],
                     "mean cosine to global": summary["mean_cosine_to_global"],
                     "min cosine to global": summary["min_cosine_to_global"],
                     "mean heads > 0.5": summary["mean_heads_over_half"]})  # fmt: skip
    return pd.DataFrame(rows)


def clusters_section(out: Path, config: RunConfig, plan: Plan, routing: pd.DataFrame) -> list[str]:

    clusters = ClusterFile.load(plan.clusters.folder / "clusters.json")
    recipe = clusters.profile_text
    silhouette = "n/a (needs 2 <= k < users)" if clusters.silhouette is None else fmt(clusters.silhouette)
    routed = pd.read_parquet(plan.comparison.folder / ROUTING_COMPARISON)
    return [
        "## 5. Clusters and routing (`clusters/clusters.json`, `discover-clusters/`, `eval/dps-routed-*/routing.json`)", "",
        f"The users of the {config.n_train} train examples, each embedded from their profile ({recipe.source}, first "
        f"{recipe.items} items, {recipe.max_length} tokens; {clusters.embedder['name']}) and clustered by k-means (seed "
        f"{clusters.seed}) into K = {clusters.k} clusters; silhouette (cosine) {silhouette}. Heads per cluster with the "
        f"paper's PCS (`{CLUSTER_VARIANT}`), method `{config.method}`, top {config.top_k}, from the per-example scores of "
        f"`discover-{CLUSTER_VARIANT}`; `shared with global` counts the cluster's heads among that global top {config.top_k}.",
        "", markdown_table(clusters_table(plan)), "",
        "Routing of the dev users (not clustered: embedded and routed on the fly) to the cluster heads, DPS at γ = "
        f"{fmt(config.gamma)} with each user's routed mix. Entropy of the route in nats against ln K (uniform); cosine "
        "between the user's routed head map and the global map (the plain mean of the cluster maps); heads a user "
        "suppresses more than half (mean over users):", "",
        markdown_table(routing), "",
        "### Routing comparison, paired against greedy (`comparison/routing/comparison.parquet`)", "",
        f"Global DPS (`dps-{CLUSTER_VARIANT}`: the global heads of the same PCS), hard- and soft-routed DPS, and DPS with "
        "random heads:", "",
        markdown_table(comparison_rows(routed)), "",
    ]  # fmt: skip


def routing_reading(routing: pd.DataFrame, out: Path, plan: Plan) -> list[str]:
    """What the routing tables show, by fixed rules: how peaked the routes are, and whether a
    routed run's interval against greedy lies wholly above the global run's."""

    said = []
    for _, row in routing.iterrows():
        said.append(
            f"- {row['run']}: mean route entropy {fmt(row['mean entropy'])} of ln K = {fmt(row['ln K'])}, mean cosine to the "
            f"global map {fmt(row['mean cosine to global'])} (lowest {fmt(row['min cosine to global'])}): "
            + ("the routed maps are the global map (a cosine of 1 for every user)." if row["min cosine to global"] > 0.999
               else "users get head maps that differ from the global one.")
        )  # fmt: skip
    table = pd.read_parquet(plan.comparison.folder / ROUTING_COMPARISON)
    table = table.assign(name=[Path(run).name for run in table["run"]])
    for metric, part in table.groupby("metric", sort=False):
        rows = part.set_index("name")
        base = rows.loc[f"dps-{CLUSTER_VARIANT}"]
        better = [name for name in routing["run"] if rows.loc[name, "low"] > base["high"]]
        said.append(
            f"- {metric}: routed DPS against greedy "
            + "; ".join(f"{name} {interval(rows.loc[name, 'difference'], rows.loc[name, 'low'], rows.loc[name, 'high'])}"
                        for name in routing["run"])
            + f"; global {interval(base['difference'], base['low'], base['high'])}: "
            + ("routing is better than global DPS for " + ", ".join(better) + " (its interval lies above)." if better
               else "no routed run's interval lies above the global run's, so these users give no evidence for routing.")
        )  # fmt: skip
    return said


def reading(
    effect: pd.DataFrame, summary: pd.DataFrame, comparison: pd.DataFrame, control: pd.DataFrame | None, config: RunConfig
) -> list[str]:
    """What the tables show, by fixed rules (see the module docstring)."""
    said = []
    no_profile, swapped = effect.iloc[1], effect.iloc[2]
    helps = no_profile["high"] < 0
    said.append(
        f"- Profile: the own profile changes the reference NLL by {interval(no_profile['own minus this'], no_profile['low'], no_profile['high'])} "
        f"against no profile ({'it helps' if helps else 'no clear help'}), and by "
        f"{interval(swapped['own minus this'], swapped['low'], swapped['high'])} against another user's profile "
        + ("(this user's profile helps more than someone else's)." if swapped["high"] < 0
           else "(not distinguishable from another user's profile: much of the help is having *a* profile).")
    )  # fmt: skip
    for variant, part in summary.groupby("heads", sort=False):
        rows = part.set_index(["head_set", "condition"])
        with_profile, without, specific = (rows.loc[("preference", c)] for c in ("profile", "no-profile", "profile-specific"))
        rank = (
            "above every random set"
            if with_profile["p_value_vs_random"] <= 1 / (1 + config.n_random)
            else (f"p = {fmt(with_profile['p_value_vs_random'])} against the random sets")
        )
        share = without["mean_delta_nll"] / with_profile["mean_delta_nll"] if with_profile["mean_delta_nll"] else math.nan
        said.append(
            f"- {variant} heads: ablating them raises the dev users' reference NLL by "
            f"{interval(with_profile['mean_delta_nll'], with_profile['ci_low'], with_profile['ci_high'])} ({rank}); without the "
            f"profile by {interval(without['mean_delta_nll'], without['ci_low'], without['ci_high'])} ({fmt(share)} of it). "
            f"The part that needs the profile is {interval(specific['mean_delta_nll'], specific['ci_low'], specific['ci_high'])}: "
            + ("profile-specific (the interval excludes 0)." if excludes_zero(specific["ci_low"], specific["ci_high"])
               and specific["mean_delta_nll"] > 0 else
               "not distinguishable from 0 or negative: these heads are needed by every output, not by the profile.")
        )  # fmt: skip
    said += profile_control_reading(comparison)
    significant = comparison[
        (comparison["p_value"] < ALPHA) & comparison.apply(lambda r: excludes_zero(r["low"], r["high"]), axis=1)
    ]
    said.append(
        f"- Decoding ({int(comparison['n'].iloc[0])} dev examples, {len(comparison)} paired comparisons against greedy, "
        f"no correction for multiple comparisons): "
        + ("no difference from greedy is significant (p < 0.05 with an interval excluding 0)." if significant.empty else
           "significant: " + "; ".join(f"{Path(r['run']).name} {r['metric']} {fmt(r['difference'])} (p = {fmt(r['p_value'])})"
                                       for _, r in significant.iterrows()) + ".")
    )  # fmt: skip
    if control is not None:
        beats = control[(control["p_value"] < ALPHA) & (control["difference"] > 0)]
        said.append(
            "- Against DPS with random heads of the same budget: "
            + ("no DPS run differs significantly, so a DPS gain here cannot be credited to the preference heads."
               if beats.empty else "better on " + "; ".join(f"{Path(r['run']).name} {r['metric']}" for _, r in beats.iterrows()) + ".")
        )  # fmt: skip
    widest = float((comparison["high"] - comparison["low"]).max() / 2)
    said.append(
        f"- What would change this: differences smaller than about {fmt(widest)} (the widest interval's half-width) cannot be "
        f"seen with {config.n_dev} dev examples; DPS gains here are a lead, not a result, until they hold on more users "
        "(`--preset full`), other seeds and other models."
    )
    return said


def profile_control_reading(comparison: pd.DataFrame) -> list[str]:
    """What the person's own profile adds in decoding: greedy with it against greedy with no profile
    (which also loses the prompt's examples of the answer's form) and with another user's profile
    (the same form, someone else's content), per metric."""
    runs = {Path(run).name: part for run, part in comparison.groupby("run", sort=False)}
    controls = [name for name in ("greedy-no-profile", "greedy-swapped-profile") if name in runs]
    if not controls:
        return []
    lines = []
    for name in controls:
        rows = runs[name]
        shown = "; ".join(f"{r['metric']} {interval(-r['difference'], -r['high'], -r['low'])}" for _, r in rows.iterrows())
        lines.append(f"- Own profile minus {name.removeprefix('greedy-').replace('-', ' ')} (greedy decoding): {shown}.")
    lines.append(
        "  No profile also removes the prompt's examples of the answer's form, so it measures the format as much as the "
        "person; another user's profile keeps the form, so own minus swapped is what *this* user's profile adds."
    )
    return lines
