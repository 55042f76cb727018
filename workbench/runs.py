"""The evaluation runner: generate with one method on one split, score, and write the results.

`OUT/predictions.jsonl` gets one line per example (id, prediction, gold, per-example scores) as
soon as its batch is decoded; a rerun reads it back, drops a torn last line or a duplicate id
(keeping the first), and generates only the examples still missing, so an interrupted run loses
at most one batch and never writes an example twice. `OUT/config.json` pins the configuration:
resuming with another one is an error. `OUT/metrics.json` (atomic) holds the metric values with
seeded bootstrap intervals, n, the configuration, package versions and any warnings, e.g. that
the heads were discovered on the split being evaluated (allowed, but recorded).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from workbench import io
from workbench.comparison import metric_statistic
from workbench.data.examples import Example
from workbench.data.files import read_json
from workbench.data.prompts import PromptConfig, build_prompt
from workbench.data.tasks import TaskSpec, task_spec
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.lens import Lens
from workbench.metrics import aggregate, score_example
from workbench.stats import Interval, bootstrap_interval

METHODS = ("greedy", "dps", "cad", "dola", "decore", "random-heads")
NEEDS_HEADS = ("dps", "decore", "random-heads")
PREDICTIONS, METRICS, CONFIG = "predictions.jsonl", "metrics.json", "config.json"
PACKAGES = ("workbench", "torch", "transformers", "transformer-lens", "rouge-score", "nltk", "rank-bm25", "numpy")
RESUME_INDEPENDENT = ("batch_size", "limit")  # may change between an interrupted run and its resumption


@dataclass(frozen=True)
class EvalConfig:
    """Everything that determines an evaluation's predictions and metrics. `data` names the data
    source (a path, or "demo"); `heads` the head-weights file of dps / decore / random-heads."""

    task: str
    split: str
    method: str
    model: str
    data: str = "demo"
    heads: str | None = None
    gamma: float = 1.0
    alpha: float = 0.5
    max_new_tokens: int | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    batch_size: int = 8
    seed: int = 0
    limit: int | None = None
    resamples: int = 1000

    def __post_init__(self) -> None:
        task_spec(self.task)
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.method in NEEDS_HEADS and not self.heads:
            raise InputError(f"method {self.method} needs --heads (a head-weights JSON file)")
        for name in ("gamma", "alpha"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("max_new_tokens", "limit", "batch_size", "resamples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be a positive integer, got {value}")

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    @property
    def new_tokens(self) -> int:
        return self.max_new_tokens or self.spec.max_new_tokens

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """The plain format's answer ends at a line break (a blank line for multi-line tasks);
        chat answers end at the end-of-turn token."""
        if self.prompt.format == "chat":
            return ()
        return ("\n\n",) if self.spec.multi_line else ("\n",)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def make_decoder(config: EvalConfig, lens: Lens, heads: HeadWeights | None):
    """The decoder of `config.method`, with `heads` (from `config.heads`) checked against the model."""
    from workbench.decoding import CAD, DPS, DeCoRe, DoLa, Greedy

    if heads is not None:
        heads.check(lens.geometry)
    if config.method == "greedy":
        return Greedy()
    if config.method == "cad":
        return CAD(alpha=config.alpha)
    if config.method == "dola":
        return DoLa()
    if config.method == "decore":
        return DeCoRe(heads, alpha=config.alpha)
    if config.method == "random-heads":
        k = len(heads.heads())
        if k == 0:
            raise InputError(f"{config.heads}: no head has a non-zero weight, so there is no budget of random heads")
        return DPS(HeadWeights.random_heads(lens.geometry, k, seed=config.seed), gamma=config.gamma)
    return DPS(heads, gamma=config.gamma)


def discovery_warning(config: EvalConfig, heads: HeadWeights | None) -> str | None:
    """A warning when the heads were discovered on the split (and data) being evaluated, as
    `workbench discover` records them in the heads' `extra` (`split`, `data`)."""
    if heads is None:
        return None
    extra = heads.extra
    same_split = extra.get("split") == config.split
    same_data = extra.get("data") in (None, config.data) or _same_path(extra.get("data"), config.data)
    if same_split and same_data:
        return (f"heads in {config.heads} were discovered on the {config.split!r} split of the data being evaluated; "
                "scores on it are optimistic (evaluate on another split)")  # fmt: skip
    return None


def _same_path(a: Any, b: str) -> bool:
    try:
        return Path(str(a)).resolve() == Path(b).resolve()
    except OSError:
        return False


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Finished predictions by id. A torn last line (an interrupted write) and repeated ids are
    dropped, and the file is rewritten without them (atomically) so that appending stays clean."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # torn last line: that example is generated again
            raise InputError(f"{path}, line {number}: malformed JSON in the middle of the file") from None
        if not isinstance(record, dict) or "id" not in record:
            raise InputError(f"{path}, line {number}: not a prediction record")
        records.setdefault(str(record["id"]), record)
    if len(records) != len(lines):
        io.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values()))
    return records


def _check_resumable(out: Path, config: EvalConfig) -> None:
    stored_path = out / CONFIG
    current = config.as_dict()
    if stored_path.is_file():
        stored = read_json(stored_path)
        changed = [k for k in current if k not in RESUME_INDEPENDENT and stored.get(k) != current[k]]
        if changed:
            key = changed[0]
            raise InputError(f"{out} holds a run with {key}={stored.get(key)!r}, not {current[key]!r}; use another --out")
    io.write_json(stored_path, current)


def evaluate(
    lens: Lens, examples: Sequence[Example], config: EvalConfig, out: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Generate, score and write predictions and metrics for `examples`; resumes an interrupted run."""
    from workbench.decoding import generate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    examples = list(examples)[: config.limit]
    missing_gold = [e.example_id for e in examples if e.output is None]
    if not examples or missing_gold:
        raise InputError(
            f"nothing to evaluate: {'no examples' if not examples else f'no gold output for id {missing_gold[0]!r}'}"
        )
    _check_resumable(out, config)
    heads = HeadWeights.load(config.heads) if config.heads else None
    warning = discovery_warning(config, heads)
    if warning:
        warnings.warn(warning, stacklevel=2)
    decoder = make_decoder(config, lens, heads)
    done = read_predictions(out / PREDICTIONS)
    todo = [e for e in examples if e.example_id not in done]
    spec = config.spec
    with (
        open(out / PREDICTIONS, "a", encoding="utf-8") as handle,
        tqdm(
            total=len(examples), initial=len(examples) - len(todo), desc=f"evaluating {config.method}", disable=not progress
        ) as bar,
    ):
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            prompts = [build_prompt(lens, e, config.prompt, answer_room=config.new_tokens) for e in batch]
            contrast = None
            if config.method == "cad":
                contrast = [
                    build_prompt(lens, e, config.prompt, with_profile=False, answer_room=config.new_tokens) for e in batch
                ]
            generations = generate(lens, prompts, decoder=decoder, contrast_prompts=contrast, max_new_tokens=config.new_tokens,
                                   stop_strings=config.stop_strings, batch_size=config.batch_size)  # fmt: skip
            for example, generation in zip(batch, generations):
                prediction = generation.text.strip()
                record = {
                    "id": example.example_id,
                    "user_id": example.user_id,
                    "prediction": prediction,
                    "gold": example.output,
                    "style": example.style,
                    "stop_reason": generation.stop_reason,
                    "scores": score_example(spec, prediction, example.output, example.style),  # type: ignore[arg-type]
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                done[example.example_id] = record
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
    rows = [done[e.example_id]["scores"] for e in examples]
    result = {
        "task": spec.name,
        "split": config.split,
        "method": config.method,
        "n": len(rows),
        "metrics": {name: interval.as_dict() for name, interval in metric_intervals(spec, rows, config).items()},
        "config": config.as_dict(),
        "seed": config.seed,
        "versions": package_versions(),
        "evaluated_on_discovery_split": warning is not None,
        "warnings": [warning] if warning else [],
    }
    io.write_json(out / METRICS, result)
    return result


def metric_intervals(spec: TaskSpec, rows: Sequence[dict[str, float]], config: EvalConfig) -> dict[str, Interval]:
    return {
        name: bootstrap_interval(len(rows), metric_statistic(spec, rows, name), resamples=config.resamples, seed=config.seed)
        for name in aggregate(spec, rows)
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
