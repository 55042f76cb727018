"""The main job: the whole method on the bundled demo set, with its controls, in one run.

1. Discover preference heads on the demo *train* users twice: with the paper's standard PCS and
   with the profile-contrast PCS (ablation effect with the profile minus without it).
2. Validate both head sets on held-out *dev* users: ablate the top-K together and compare the NLL
   rise with random K-head sets, retrieval and induction heads, with and without the profile.
3. Evaluate decoding on dev users: greedy, DPS with each head set, DPS with random heads (the
   control) and CAD, with paired bootstrap comparisons against greedy.
4. Draw the figures (PCS heatmaps, head-set overlap, validation bars) and write a summary.

Every stage writes its files atomically and resumes from what an interrupted run left.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from workbench import io
from workbench.comparison import compare_runs
from workbench.data.prompts import PromptConfig, tokenized_examples
from workbench.data.sources import demo_folder, load_examples
from workbench.decoding import make_decoder
from workbench.errors import InputError
from workbench.figures import overlap_heatmap, pcs_heatmap, save_figure, validation_figure
from workbench.heads import HeadWeights
from workbench.lens import Lens
from workbench.runs import EvalConfig, evaluate
from workbench.scores import METHODS, PCSResult, induction_scores, retrieval_scores, score_heads
from workbench.validation import validate_heads

VARIANTS = ("standard", "profile-contrast")


@dataclass(frozen=True)
class DemoConfig:
    task: str = "LaMP-4"
    n_train: int = 16
    n_dev: int = 16
    top_k: int = 10
    method: str = "hybrid"
    n_random: int = 20
    gamma: float = 1.0
    seed: int = 0
    figures_png: bool = True

    def __post_init__(self) -> None:
        for name in ("n_train", "n_dev", "top_k", "n_random"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.method not in METHODS:
            raise InputError(f"unknown PCS method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not math.isfinite(self.gamma) or self.gamma < 0:
            raise InputError(f"gamma must be a finite number >= 0, got {self.gamma}")
        demo_folder(self.task)  # refuses tasks the demo set does not have


def discover(lens: Lens, config: DemoConfig, out: Path, variant: str, prompt: PromptConfig) -> tuple[PCSResult, HeadWeights]:
    folder = out / f"discover-{variant}"
    if (folder / "pcs.parquet").is_file() and (folder / "heads.json").is_file():
        return PCSResult.load(folder / "pcs.parquet"), HeadWeights.load(folder / "heads.json")
    examples = tokenized_examples(lens, load_examples(None, config.task, "train")[: config.n_train], prompt)
    result = score_heads(
        lens, examples, method=config.method, variant=variant, checkpoint=folder / "checkpoint",
        top_k=config.top_k, seed=config.seed, task=config.task,
    )  # fmt: skip
    result.metadata["split"] = "train"
    result.save(folder / "pcs.parquet")
    weights = HeadWeights.from_scores(result, top_k=config.top_k, extra={"split": "train", "data": "demo"})
    weights.save(folder / "heads.json")
    return result, weights


def run_demo(lens: Lens, config: DemoConfig, out: str | Path, *, progress: bool = True) -> pd.DataFrame:
    """Run every stage into `out`; returns the decoding comparison table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / "demo-config.json", {**asdict(config), "model": lens.name})
    prompt = PromptConfig(seed=config.seed)
    figures = out / "figures"

    heads: dict[str, HeadWeights] = {}
    for variant in VARIANTS:
        result, heads[variant] = discover(lens, config, out, variant, prompt)
        figure = pcs_heatmap(result, highlight=heads[variant].heads())
        save_figure(figure, figures / f"pcs-{variant}", png=config.figures_png)
    save_figure(
        overlap_heatmap({variant: weights.heads() for variant, weights in heads.items()}, title=f"top-{config.top_k} head sets"),
        figures / "overlap", png=config.figures_png,
    )  # fmt: skip

    dev_examples = load_examples(None, config.task, "dev")[: config.n_dev]
    dev = tokenized_examples(lens, dev_examples, prompt)
    validation_file = out / "validation.parquet"
    if validation_file.is_file():
        validation = pd.read_parquet(validation_file)
    else:
        retrieval, induction = retrieval_scores(lens, seed=config.seed), induction_scores(lens, seed=config.seed)
        tables = []
        for variant, weights in heads.items():
            table = validate_heads(
                lens, dev, weights, n_random=config.n_random, retrieval=retrieval, induction=induction,
                seed=config.seed, progress=progress,
            )  # fmt: skip
            tables.append(table.assign(heads=variant))
        validation = pd.concat(tables, ignore_index=True)
        io.write_parquet(validation_file, validation)
    for variant, part in validation.groupby("heads", sort=False):
        save_figure(validation_figure(part, k=config.top_k, label=f"{variant} heads on held-out users"),
                    figures / f"validation-{variant}", png=config.figures_png)  # fmt: skip

    runs = {
        "greedy": None,
        "dps-standard": "standard",
        "dps-profile-contrast": "profile-contrast",
        "random-heads": "profile-contrast",
        "cad": None,
    }
    folders = []
    for name, variant in runs.items():
        method = "dps" if name.startswith("dps") else name
        heads_file = None if variant is None else str(out / f"discover-{variant}" / "heads.json")
        decoder = make_decoder(method, **({"gamma": config.gamma} if method in ("dps", "random-heads") else {}))
        eval_config = EvalConfig(
            task=config.task, split="dev", decoder=decoder, model=lens.name, heads=heads_file,
            prompt=prompt, seed=config.seed, limit=config.n_dev,
        )  # fmt: skip
        evaluate(lens, dev_examples, eval_config, out / "eval" / name, progress=progress)
        folders.append(out / "eval" / name)
    comparison = compare_runs(folders, seed=config.seed)
    io.write_parquet(out / "comparison.parquet", comparison)
    io.write_text(out / "SUMMARY.md", summary_markdown(config, lens, heads, validation, comparison))
    return comparison


def summary_markdown(
    config: DemoConfig, lens: Lens, heads: dict[str, HeadWeights], validation: pd.DataFrame, comparison: pd.DataFrame
) -> str:
    """A short report of what the run found, with every number's interval."""
    lines = [
        f"# Demo run: {config.task} demo set, {lens.name}",
        "",
        f"Heads discovered on {config.n_train} train examples ({config.method} PCS), validated and evaluated on "
        f"{config.n_dev} dev examples of other users. Intervals are 95% bootstrap intervals over examples.",
        "",
        "## Top heads",
        "",
    ]
    for variant, weights in heads.items():
        lines.append(f"- {variant}: " + ", ".join(f"L{layer}H{head}" for layer, head in weights.heads()))
    lines += ["", "## Validation (Δ NLL of the reference when the head set is ablated together)", ""]
    columns = ["heads", "head_set", "condition", "mean_delta_nll", "ci_low", "ci_high", "p_value_vs_random"]
    lines += [validation[columns].to_markdown(index=False, floatfmt=".3f"), ""]
    lines += ["## Decoding on dev users (paired against greedy)", ""]
    columns = ["run", "metric", "baseline_value", "value", "difference", "low", "high", "p_value"]
    named = comparison.assign(run=comparison["run"].map(lambda folder: Path(folder).name))
    lines += [named[columns].to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(lines)
