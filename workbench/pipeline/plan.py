"""What a run of the main job is before anything is computed: its configuration, its data and the
plan of its stages (each a `Stage` with its fingerprint), and the names of the files it writes."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.examples import Example
from workbench.data.prompts import PromptConfig
from workbench.data.sources import demo_folder, load_examples
from workbench.errors import InputError
from workbench.experiments.discovery import DiscoverSettings
from workbench.experiments.evaluation import EvalConfig
from workbench.pipeline.stage import Stage
from workbench.scores import METHODS
from workbench.users.routing import DEFAULT_TEMPERATURE, check_temperature

VARIANTS = ("standard", "profile-contrast")
CONFIG_FILE = "demo-config.json"
COMPARISON, CONTROL_COMPARISON = "comparison.parquet", "vs-random-heads/comparison.parquet"
ROUTING_COMPARISON = "routing/comparison.parquet"
CLUSTER_VARIANT = "standard"  # the paper's PCS: what per-cluster discovery and routing use
ROUTED = {"dps-routed-hard": "hard", "dps-routed-soft": "soft"}
ROUTING_RUNS = (f"dps-{CLUSTER_VARIANT}", *ROUTED, "random-heads")  # the routing comparison: global, hard, soft, random
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
    n_clusters: int = 2  # clusters of the train users (per-cluster discovery, routed DPS)
    routing_temperature: float = DEFAULT_TEMPERATURE  # soft routing's T on cosine similarities
    max_new_tokens: int | None = None  # answer length cap of the decoding study (None: the task's)
    seed: int = 0
    figures_png: bool = True
    preset: str = "default"

    def __post_init__(self) -> None:
        for name in ("n_train", "n_dev", "top_k", "n_random", "profile_k", "n_clusters",
                     *(["max_new_tokens"] if self.max_new_tokens else [])):  # fmt: skip
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.method not in METHODS:
            raise InputError(f"unknown PCS method {self.method!r}; choose one of {', '.join(METHODS)}")
        for gamma in (self.gamma, *self.gammas):
            if not math.isfinite(gamma) or gamma < 0:
                raise InputError(f"gamma must be a finite number >= 0, got {gamma}")
        if self.n_clusters > self.n_train:
            raise InputError(f"n_clusters must be at most n_train ({self.n_train} train examples), got {self.n_clusters}")
        check_temperature(self.routing_temperature)
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
    "full": DemoConfig(
        n_train=32, n_dev=33, top_k=10, n_random=20, gammas=(0.5, 2.0), sweep_k=(1, 2, 5, 10), n_clusters=4, preset="full"
    ),
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
        users = len({example.user_id for example in train[: config.n_train]})
        if config.n_clusters > users:
            raise InputError(f"cannot make {config.n_clusters} clusters of the {users} users of the first {config.n_train} "
                             f"train examples (lower n_clusters or raise n_train)")  # fmt: skip
        return cls(train[: config.n_train], dev[: config.n_dev], dev)


@dataclass
class Plan:
    """Every stage of a demo run, with its fingerprint, before anything is computed."""

    out: Path
    profile_effect: Stage
    discovery: dict[str, Stage]
    clusters: Stage
    cluster_discovery: Stage
    validation: Stage
    evaluations: dict[str, tuple[Stage, EvalConfig]]
    comparison: Stage
    figures: Stage
    report: Stage
    settings: dict[str, DiscoverSettings] = field(default_factory=dict)

    @property
    def stages(self) -> list[Stage]:
        return [self.profile_effect, *self.discovery.values(), self.clusters, self.cluster_discovery, self.validation,
                *(stage for stage, _ in self.evaluations.values()), self.comparison, self.figures, self.report]  # fmt: skip


def evaluation_runs(config: DemoConfig) -> dict[str, tuple[str, str | None, dict[str, Any], dict[str, Any]]]:
    """`run name: (decoder, heads, decoder options, prompt options)` of the decoding study; heads:
    a discovery variant, `routed` (each user's routed mix of the cluster heads) or None."""
    runs: dict[str, tuple[str, str | None, dict[str, Any], dict[str, Any]]] = {
        "greedy": ("greedy", None, {}, {}),
        "greedy-no-profile": ("greedy", None, {}, {"profile_k": 0}),
        "cad": ("cad", None, {}, {}),
        "dps-standard": ("dps", "standard", {"gamma": config.gamma}, {}),
        "dps-profile-contrast": ("dps", "profile-contrast", {"gamma": config.gamma}, {}),
        "random-heads": ("random-heads", "profile-contrast", {"gamma": config.gamma, "control_seed": config.seed}, {}),
        **{name: ("dps", "routed", {"gamma": config.gamma}, {}) for name in ROUTED},
    }
    for gamma in config.gammas:
        runs[f"dps-profile-contrast-gamma-{gamma:g}"] = ("dps", "profile-contrast", {"gamma": gamma}, {})
    return runs


def report_options(config: DemoConfig) -> dict[str, Any]:
    """The options that make the report's numbers (all but `figures_png`, the PNG export)."""
    return {name: value for name, value in asdict(config).items() if name != "figures_png"}


def config_record(config: DemoConfig) -> dict[str, Any]:
    """The configuration as `demo-config.json` records it (JSON values: tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))
