"""The main job: the whole method on the bundled demo set, with its controls, in one run.

Stages, each in its own folder of the run with a fingerprint (`workbench.stages`), in order:

1. `profile-effect`: the reference output's NLL on dev users with their profile, without it and
   with another user's profile (does *this* user's profile help?).
2. `discover-standard`, `discover-profile-contrast`: preference heads on train users with the
   paper's PCS and with the profile-contrast PCS.
3. `validation`: both head sets ablated on dev users against random head sets and retrieval /
   induction heads, with and without the profile; a sweep over the number of heads K.
4. `eval/<run>`: decoding on dev users: greedy with and without the profile, CAD, DPS with each
   head set (and other γ), DPS with random heads of the same budget.
5. `comparison`: every run paired against greedy (bootstrap intervals, permutation p-values).
6. `figures`, 7. `report.md`: the paper's figures and a report that reads only from the tables.

The same stage functions serve `workbench discover`, `validate` and `evaluate`. Every stage's
fingerprint is planned before any model work, so a run into a folder made with other options
stops at once with one line naming the option; an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench import io
from workbench.comparison import compare_runs
from workbench.data.examples import Example
from workbench.data.files import read_json
from workbench.data.prompts import PromptConfig, tokenized_examples
from workbench.data.sources import demo_folder, load_examples
from workbench.decoding import make_decoder
from workbench.discovery import DiscoverSettings
from workbench.errors import InputError
from workbench.lens import Lens
from workbench.profile_effect import profile_nll
from workbench.runs import EvalConfig
from workbench.scores import METHODS
from workbench.stages.base import Stage, data_digest, model_identity
from workbench.stages.discovery import discovery_stage, run_discovery
from workbench.stages.evaluation import evaluation_stage, run_evaluation
from workbench.stages.figures import draw_figures
from workbench.stages.validation import run_validation

VARIANTS = ("standard", "profile-contrast")
CONFIG_FILE = "demo-config.json"
COMPARISON, CONTROL_COMPARISON = "comparison.parquet", "vs-random-heads/comparison.parquet"
GAMMA_SWEEP = "sweep_gamma.csv"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. `preset` names the defaults the values came from (recorded only)."""

    task: str = "LaMP-4"
    n_train: int = 8
    n_dev: int = 12
    top_k: int = 5
    method: str = "hybrid"
    n_random: int = 20
    gamma: float = 1.0
    gammas: tuple[float, ...] = ()  # further γ for DPS with the profile-contrast heads (the γ sweep)
    sweep_k: tuple[int, ...] = (1, 2, 3, 5)  # K of the number-of-heads sweep (at most top_k)
    profile_k: int = 5  # profile items retrieved (BM25) into each few-shot prompt
    max_new_tokens: int | None = None  # answer length cap of the decoding study (None: the task's)
    seed: int = 0
    figures_png: bool = True
    preset: str = "default"

    def __post_init__(self) -> None:
        for name in ("n_train", "n_dev", "top_k", "n_random", "profile_k", *(["max_new_tokens"] if self.max_new_tokens else [])):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.method not in METHODS:
            raise InputError(f"unknown PCS method {self.method!r}; choose one of {', '.join(METHODS)}")
        for gamma in (self.gamma, *self.gammas):
            if not math.isfinite(gamma) or gamma < 0:
                raise InputError(f"gamma must be a finite number >= 0, got {gamma}")
        if any(k < 1 for k in self.sweep_k):
            raise InputError(f"sweep_k must hold numbers of heads >= 1, got {list(self.sweep_k)}")
        object.__setattr__(self, "sweep_k", tuple(sorted({k for k in self.sweep_k if k <= self.top_k} | {self.top_k})))
        demo_folder(self.task)  # refuses tasks the demo set does not have

    @property
    def prompt(self) -> PromptConfig:
        """The prompts of every stage: plain few-shot, `profile_k` BM25-retrieved profile items."""
        return PromptConfig(profile_k=self.profile_k, seed=self.seed)


PRESETS: dict[str, DemoConfig] = {
    "default": DemoConfig(),
    # the paper-sized run: more users, the paper's ~4 % of heads on the default model, a γ sweep
    "full": DemoConfig(n_train=32, n_dev=33, top_k=10, n_random=20, gammas=(0.5, 2.0), sweep_k=(1, 2, 5, 10), preset="full"),
}


def demo_config(preset: str = "default", **options: Any) -> DemoConfig:
    """A preset's configuration with the options given (not None) replacing its values."""
    if preset not in PRESETS:
        raise InputError(f"unknown demo preset {preset!r}; the presets are {', '.join(PRESETS)}")
    given = {name: value for name, value in options.items() if value is not None}
    return dataclasses.replace(PRESETS[preset], preset=preset, **given)


@dataclass
class DemoData:
    """The demo's examples, loaded (and so checked) before any model is."""

    train: list[Example]
    dev: list[Example]  # every dev example: the swapped-profile partners are drawn among them
    dev_split: list[Example]  # the whole dev split (its content hash fingerprints the evaluations)

    @classmethod
    def load(cls, config: DemoConfig) -> DemoData:
        train = load_examples(None, config.task, "train")
        dev = load_examples(None, config.task, "dev")
        for split, examples, wanted in (("train", train, config.n_train), ("dev", dev, config.n_dev)):
            if wanted > len(examples):
                raise InputError(f"the demo's {split} split of {config.task} has {len(examples)} examples, not {wanted}")
        return cls(train[: config.n_train], dev[: config.n_dev], dev)


@dataclass
class Plan:
    """Every stage of a demo run, with its fingerprint, before anything is computed."""

    out: Path
    profile_effect: Stage
    discovery: dict[str, Stage]
    validation: Stage
    evaluations: dict[str, tuple[Stage, EvalConfig]]
    comparison: Stage
    figures: Stage
    report: Stage
    settings: dict[str, DiscoverSettings] = field(default_factory=dict)

    @property
    def stages(self) -> list[Stage]:
        return [self.profile_effect, *self.discovery.values(), self.validation,
                *(stage for stage, _ in self.evaluations.values()), self.comparison, self.figures, self.report]  # fmt: skip


def evaluation_runs(config: DemoConfig) -> dict[str, tuple[str, str | None, dict[str, Any], dict[str, Any]]]:
    """`run name: (decoder, heads variant, decoder options, prompt options)` of the decoding study."""
    runs: dict[str, tuple[str, str | None, dict[str, Any], dict[str, Any]]] = {
        "greedy": ("greedy", None, {}, {}),
        "greedy-no-profile": ("greedy", None, {}, {"profile_k": 0}),
        "cad": ("cad", None, {}, {}),
        "dps-standard": ("dps", "standard", {"gamma": config.gamma}, {}),
        "dps-profile-contrast": ("dps", "profile-contrast", {"gamma": config.gamma}, {}),
        "random-heads": ("random-heads", "profile-contrast", {"gamma": config.gamma, "control_seed": config.seed}, {}),
    }
    for gamma in config.gammas:
        runs[f"dps-profile-contrast-gamma-{gamma:g}"] = ("dps", "profile-contrast", {"gamma": gamma}, {})
    return runs


def plan_demo(lens: Lens, config: DemoConfig, data: DemoData, out: Path) -> Plan:
    """The fingerprints of every stage (pure functions of the options, the model and the data)."""
    prompt = config.prompt
    model = model_identity(lens)
    dev_hash = data_digest(data.dev)
    profile_effect = Stage("profile-effect", out / "profile-effect", {"task": config.task, "split": "dev", **asdict(prompt)},
                           outputs=("profile_effect.parquet",), model=model, data=dev_hash)  # fmt: skip
    settings, discovery = {}, {}
    for variant in VARIANTS:
        settings[variant] = DiscoverSettings(prompt=prompt, method=config.method, variant=variant, top_k=config.top_k)
        discovery[variant] = discovery_stage(
            lens, out / f"discover-{variant}", settings[variant], data="demo", data_hash=data_digest(data.train),
            task=config.task, split="train", seed=config.seed,
        )  # fmt: skip
    validation = Stage(
        "validate", out / "validation",
        {"k": config.top_k, "n_random": config.n_random, "match_layers": False, "pattern_heads": True, "ablation": "zero",
         "seed": config.seed, "sweep": list(config.sweep_k), "data": "demo", "task": config.task, "split": "dev",
         **asdict(prompt)},
        outputs=("validation.parquet", "validation_summary.csv", "sweep_k.csv"), model=model, data=dev_hash,
        inputs=dict(discovery),
    )  # fmt: skip
    evaluations = {}
    for name, (method, variant, decoder_options, prompt_options) in evaluation_runs(config).items():
        heads = None if variant is None else str(out / f"discover-{variant}" / "heads.json")
        eval_config = EvalConfig(
            task=config.task, split="dev", model=lens.name, decoder=make_decoder(method, **decoder_options), heads=heads,
            prompt=dataclasses.replace(prompt, **prompt_options), seed=config.seed, limit=config.n_dev,
            max_new_tokens=config.max_new_tokens,
        )  # fmt: skip
        stage = evaluation_stage(lens, out / "eval" / name, eval_config, data.dev_split,
                                 heads_from=None if variant is None else discovery[variant])  # fmt: skip
        evaluations[name] = (stage, eval_config)
    eval_stages = {name: stage for name, (stage, _) in evaluations.items()}
    comparison = Stage("compare", out / "comparison", {"baseline": "greedy", "seed": config.seed},
                       outputs=(COMPARISON, CONTROL_COMPARISON, *([GAMMA_SWEEP] if config.gammas else [])),
                       inputs=eval_stages)  # fmt: skip
    every = {"profile-effect": profile_effect, **discovery, "validation": validation, **eval_stages, "comparison": comparison}
    figures = Stage("figures", out / "figures", {"png": config.figures_png}, outputs=("index.md",), inputs=every)
    report = Stage("report", out, {"config": asdict(config)}, outputs=("report.md",), inputs={**every, "figures": figures})
    return Plan(out, profile_effect, discovery, validation, evaluations, comparison, figures, report, settings)


def check_plan(plan: Plan, config: DemoConfig) -> None:
    """Refuse, in one line, a run folder made with other options (before any model work)."""
    path = plan.out / CONFIG_FILE
    if path.is_file():
        stored = read_json(path)
        wanted = config_record(config)
        changed = [key for key in wanted if key != "figures_png" and stored.get(key) != wanted[key]]
        if changed:
            shown = "; ".join(f"{key} {stored.get(key)!r} -> {wanted[key]!r}" for key in changed)
            raise InputError(
                f"{plan.out} holds a demo run made with other options ({shown}); "
                f"use another --out, or delete {plan.out} to start afresh"
            )
    for stage in plan.stages:
        stage.check()


def config_record(config: DemoConfig) -> dict[str, Any]:
    """The configuration as `demo-config.json` records it (JSON values: tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))


def run_demo(
    lens: Lens,
    config: DemoConfig,
    out: str | Path,
    *,
    data: DemoData | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Run (or resume) every stage into `out`; returns the paired comparison table."""
    out = Path(out)
    data = data or DemoData.load(config)
    plan = plan_demo(lens, config, data, out)
    check_plan(plan, config)
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / CONFIG_FILE, {**config_record(config), "model": model_identity(lens),
                                      "stages": {str(s.folder.relative_to(out)): s.digest for s in plan.stages}})  # fmt: skip
    prompt = config.prompt
    steps = 7
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

    header(3, f"validation: top-{config.top_k} heads vs {config.n_random} random sets on {len(data.dev)} dev examples, "
              "with and without the profile")  # fmt: skip
    dev = tokenized_examples(lens, data.dev, prompt, partners=data.dev_split)
    run_validation(lens, plan.validation, dev, heads, progress=progress, announce=say)

    header(4, f"decoding: {len(plan.evaluations)} runs on {len(data.dev)} dev examples")
    for name, (stage, eval_config) in plan.evaluations.items():
        say(f"  {name}")
        run_evaluation(lens, stage, data.dev_split, eval_config, progress=progress, announce=say)

    header(5, "comparison: every run paired against greedy, DPS against DPS with random heads")
    comparison = plan.comparison.run(lambda: _compare(plan, config), lambda: pd.read_parquet(plan.comparison.folder / COMPARISON),
                                     announce=say)  # fmt: skip

    header(6, f"figures into {plan.figures.folder}")
    plan.figures.run(lambda: _figures(out, plan.figures.folder, config.figures_png, say), lambda: None,
                     announce=say)  # fmt: skip

    header(7, f"report: {out / 'report.md'}")
    from workbench.stages.report import write_report

    plan.report.run(lambda: write_report(out, config, lens, plan), lambda: None, announce=say)
    return comparison


def _profile_effect(lens: Lens, data: DemoData, prompt: PromptConfig, folder: Path, progress: bool) -> pd.DataFrame:
    table = profile_nll(lens, data.dev, prompt, progress=progress)
    io.write_parquet(folder / "profile_effect.parquet", table)
    return table


def _compare(plan: Plan, config: DemoConfig) -> pd.DataFrame:
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
    io.write_parquet(plan.comparison.folder / COMPARISON, against_greedy)
    return against_greedy


def _figures(run: Path, out: Path, png: bool, say: Callable[[str], None]) -> None:
    """The figures stage (`workbench figures all`), and `index.md`: what was drawn, what skipped."""
    notes: list[str] = []
    written = draw_figures(run, out, png=png, say=lambda note: (notes.append(note), say(f"  {note}")))
    lines = [f"- `{path.stem}`" for path in written if path.suffix == ".html"] + [f"- {note}" for note in notes]
    io.write_text(out / "index.md", "# Figures of this run\n\n" + "\n".join(lines) + "\n")
