"""What a run of the main job is before anything is computed: its configuration, its data and the
plan of its stages (each a `Stage` with its fingerprint), and the names of the files it writes.

A run takes the bundled demo set (`data` None) or the researcher's own data: a LaMP folder as the
official download unpacks, a LongLaMP export or a generic JSONL (`workbench.data.sources`).
Discovery uses the data's `train_split`, validation and decoding its `dev_split`, whose users
are other people; data with only one of the two splits is cut by user, seeded (`dev_share` of the
users to dev), and the report says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.data.examples import Example
from workbench.data.prompts import PromptConfig
from workbench.data.sources import demo_folder, load_examples
from workbench.errors import InputError
from workbench.experiments.discovery import DiscoverSettings
from workbench.experiments.evaluation import EvalConfig
from workbench.experiments.metrics import detected_habits
from workbench.pipeline.stage import Stage
from workbench.scores import METHODS, Method, Variant
from workbench.users.routing import DEFAULT_TEMPERATURE, check_temperature

VARIANTS: tuple[Variant, ...] = ("standard", "profile-contrast")
CONFIG_FILE = "run-config.json"
COMPARISON, CONTROL_COMPARISON = "comparison.parquet", "vs-random-heads/comparison.parquet"
ROUTING_COMPARISON = "routing/comparison.parquet"
CLUSTER_VARIANT = "standard"  # the paper's PCS: what per-cluster discovery and routing use
ROUTED: dict[str, Literal["hard", "soft"]] = {"dps-routed-hard": "hard", "dps-routed-soft": "soft"}
ROUTING_RUNS = (f"dps-{CLUSTER_VARIANT}", *ROUTED, "random-heads")  # the routing comparison: global, hard, soft, random
GAMMA_SWEEP = "sweep_gamma.csv"


@dataclass(frozen=True)
class RunConfig:
    """What a run runs. `data`: the data's path (None: the bundled demo set); `preset` names the
    defaults the values came from (recorded only)."""

    task: str = "LaMP-4"
    data: str | None = None
    train_split: str = "train"
    dev_split: str = "dev"
    dev_share: float = 0.5  # of the users, when the data has only one of the two splits
    n_train: int = 8
    n_dev: int = 12
    top_k: int = 5
    method: Method = "hybrid"
    miss_rate: float | None = None  # hybrid: certify the candidates to this miss-rate bound (None: not certified)
    racing: bool = False  # hybrid: race the exact phase
    confidence: float = 0.95  # of the certificate and the race
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
        for name in ("miss_rate", "confidence"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise InputError(f"{name} must lie strictly between 0 and 1, got {value}")
        if self.method != "hybrid" and (self.miss_rate is not None or self.racing):
            raise InputError(f"miss_rate and racing verify the hybrid method's candidates, not the {self.method} method")
        for gamma in (self.gamma, *self.gammas):
            if not math.isfinite(gamma) or gamma < 0:
                raise InputError(f"gamma must be a finite number >= 0, got {gamma}")
        if self.n_clusters > self.n_train:
            raise InputError(f"n_clusters must be at most n_train ({self.n_train} train examples), got {self.n_clusters}")
        check_temperature(self.routing_temperature)
        if any(k < 1 for k in self.sweep_k):
            raise InputError(f"sweep_k must hold numbers of heads >= 1, got {list(self.sweep_k)}")
        object.__setattr__(self, "sweep_k", tuple(sorted({k for k in self.sweep_k if k <= self.top_k} | {self.top_k})))
        if not 0 < self.dev_share < 1:
            raise InputError(f"dev_share must lie strictly between 0 and 1, got {self.dev_share}")
        if self.train_split == self.dev_split:
            raise InputError(f"the train and dev splits must differ (both {self.train_split!r}); a single split is cut by user")
        if self.data is None:
            demo_folder(self.task)  # refuses tasks the demo set does not have

    @property
    def data_label(self) -> str:
        """How stages record the data: its path, or "demo"."""
        return "demo" if self.data is None else self.data

    @property
    def prompt(self) -> PromptConfig:
        """The prompts of every stage: plain few-shot, `profile_k` BM25-retrieved profile items."""
        return PromptConfig(profile_k=self.profile_k, seed=self.seed)


PRESETS: dict[str, RunConfig] = {
    "default": RunConfig(),
    # the paper-sized run: more users, the paper's ~4 % of heads on the default model, a γ sweep
    "full": RunConfig(
        n_train=32, n_dev=33, top_k=10, n_random=20, gammas=(0.5, 2.0), sweep_k=(1, 2, 5, 10), n_clusters=4, preset="full"
    ),
}


def run_config(preset: str = "default", **options: Any) -> RunConfig:
    """A preset's configuration with the options given (not None) replacing its values."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; the presets are {', '.join(PRESETS)}")
    given = {name: value for name, value in options.items() if value is not None}
    return dataclasses.replace(PRESETS[preset], preset=preset, **given)


@dataclass
class RunData:
    """A run's examples, loaded (and so checked) before any model is. `train_label` / `dev_label`
    name the splits in the records; `split_note` says how they were made when the data has only
    one split (None: its own splits); `habits`: the users' writing habits the dev golds show
    (`workbench.experiments.metrics.detected_habits`), scored in the decoding study."""

    train: list[Example]
    dev: list[Example]  # the dev examples the run uses
    dev_split: list[
        Example
    ]  # the whole dev split (swap partners are drawn among it; its content hash fingerprints the evaluations)
    train_label: str = "train"
    dev_label: str = "dev"
    split_note: str | None = None
    habits: tuple[str, ...] = ()

    @classmethod
    def load(cls, config: RunConfig) -> RunData:
        where = "the demo set" if config.data is None else config.data
        train, dev, labels, note = _splits(config)
        for split, examples, wanted in (("train", train, config.n_train), ("dev", dev, config.n_dev)):
            if wanted > len(examples):
                raise InputError(f"{where}: the {split} examples of {config.task} are {len(examples)}, not {wanted} "
                                 f"(lower --n-{split})")  # fmt: skip
        shared = {e.user_id for e in train} & {e.user_id for e in dev}
        if shared:
            raise InputError(
                f"{where}: user {sorted(shared)[0]!r} is in both the train and the dev split; dev users must be other people"
            )
        users = len({example.user_id for example in train[: config.n_train]})
        if config.n_clusters > users:
            raise InputError(f"cannot make {config.n_clusters} clusters of the {users} users of the first {config.n_train} "
                             f"train examples (lower --n-clusters or raise --n-train)")  # fmt: skip
        habits = detected_habits([e.output for e in dev[: config.n_dev] if e.output is not None])
        return cls(train[: config.n_train], dev[: config.n_dev], dev, *labels, note, habits)


def _splits(config: RunConfig) -> tuple[list[Example], list[Example], tuple[str, str], str | None]:
    """The train and dev examples and their labels: the data's own splits, or one split cut by user (seeded)."""
    loaded: dict[str, list[Example]] = {}
    missing: dict[str, InputError] = {}
    for split in (config.train_split, config.dev_split):
        try:
            loaded[split] = load_examples(config.data, config.task, split)
        except InputError as error:
            missing[split] = error
    if not missing:
        return loaded[config.train_split], loaded[config.dev_split], (config.train_split, config.dev_split), None
    if len(missing) == 2:
        raise missing[config.train_split]
    ((present, examples),) = loaded.items()
    users = sorted({e.user_id for e in examples})
    random.Random(f"{config.seed}:dev-users").shuffle(users)
    dev_users = set(users[: max(1, round(config.dev_share * len(users)))])
    if len(dev_users) == len(users):
        raise InputError(f"{config.data}: only one split ({present!r}) with one user; a held-out dev split needs other users")
    note = (f"the data has only the {present!r} split: its users were cut at random (seed {config.seed}) into "
            f"{len(users) - len(dev_users)} train and {len(dev_users)} dev users ({config.dev_share:.0%} to dev)")  # fmt: skip
    train = [e for e in examples if e.user_id not in dev_users]
    labels = (f"{present} (train users)", f"{present} (dev users)")
    return train, [e for e in examples if e.user_id in dev_users], labels, note


@dataclass
class Plan:
    """Every stage of a run, with its fingerprint, before anything is computed."""

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
    split_note: str | None = None  # how train and dev were cut from a single split (`RunData.split_note`)
    habits: tuple[str, ...] = ()
    audit: Stage | None = None  # the ablation audit (`workbench.pipeline.audit`); None with fewer than 2 dev examples

    @property
    def stages(self) -> list[Stage]:
        return [self.profile_effect, *self.discovery.values(), self.clusters, self.cluster_discovery, self.validation,
                *([self.audit] if self.audit else []), *(stage for stage, _ in self.evaluations.values()), self.comparison,
                self.figures, self.report]  # fmt: skip


def evaluation_runs(config: RunConfig) -> dict[str, tuple[str, str | None, dict[str, Any], dict[str, Any]]]:
    """`run name: (decoder, heads, decoder options, prompt options)` of the decoding study; heads:
    a discovery variant, `routed` (each user's routed mix of the cluster heads) or None."""
    runs: dict[str, tuple[str, str | None, dict[str, Any], dict[str, Any]]] = {
        "greedy": ("greedy", None, {}, {}),
        "greedy-no-profile": ("greedy", None, {}, {"profile_k": 0}),
        "greedy-swapped-profile": ("greedy", None, {}, {"profile": "swapped"}),
        "cad": ("cad", None, {}, {}),
        "dps-standard": ("dps", "standard", {"gamma": config.gamma}, {}),
        "dps-profile-contrast": ("dps", "profile-contrast", {"gamma": config.gamma}, {}),
        "random-heads": ("random-heads", "profile-contrast", {"gamma": config.gamma, "control_seed": config.seed}, {}),
        **{name: ("dps", "routed", {"gamma": config.gamma}, {}) for name in ROUTED},
    }
    for gamma in config.gammas:
        runs[f"dps-profile-contrast-gamma-{gamma:g}"] = ("dps", "profile-contrast", {"gamma": gamma}, {})
    return runs


def report_options(config: RunConfig) -> dict[str, Any]:
    """The options that make the report's numbers (all but `figures_png`, the PNG export)."""
    return {name: value for name, value in asdict(config).items() if name != "figures_png"}


def config_record(config: RunConfig) -> dict[str, Any]:
    """The configuration as `run-config.json` records it (JSON values: tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))
