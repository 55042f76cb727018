"""The evaluation runner: generate with one decoder on one split, score, and write the results.

Nothing is written until every input is known good: the configuration, the head weights, the
decoder (checked against the model) and every prompt are built first. Then `OUT/config.json`
pins the configuration (the decoder's every option, the preset, the heads file and a digest of
its weights): resuming with another one is an error, unless the folder holds no prediction yet.
`OUT/predictions.jsonl` gets one line per example (id, prediction, gold, per-example scores, its
share of its batch's decoding seconds, the torch thread count it was decoded at) as soon as its
batch is decoded; a rerun reads it back, drops a torn last line or a duplicate id (keeping the
first), and generates only the examples still missing, so an interrupted run loses at most one
batch and never writes an example twice. `OUT/metrics.json` (atomic) holds the metric values with
seeded bootstrap intervals, n, the decoding seconds summed over examples, the configuration,
package versions, any warnings, e.g. that the heads were discovered on the split being evaluated
(allowed, but recorded), and the thread counts the predictions were decoded at, with a note when
a resumed run mixes them (decoding steps are not bit-equal across thread counts:
`workbench.engine.numerics`).
A routed run (`routing`) also writes `OUT/routing.json` and `OUT/routing_weights.parquet`
(`workbench.users.routing.UserRoutes.save`) before it decodes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from tqdm.auto import tqdm

from workbench import io
from workbench.checkpoint import digest
from workbench.data.examples import Example
from workbench.data.files import read_json
from workbench.data.prompts import PromptConfig, answer_stop_strings, build_prompt, decoding_prompt
from workbench.data.tasks import TaskSpec, task_spec
from workbench.data.tokenizer import PromptTokenizer
from workbench.decoding import generate
from workbench.decoding.base import Decoder
from workbench.decoding.greedy import Greedy
from workbench.decoding.registry import decoder_options as decoder_options_of
from workbench.decoding.registry import make_decoder, uses_heads
from workbench.decoding.routed import Routed, generate_routed
from workbench.engine.numerics import mixed_threads_note, numerics_record
from workbench.engine.workers import LocalWorkers, Workers
from workbench.errors import InputError
from workbench.experiments.metrics import HABITS, aggregate, metric_statistic, score_example
from workbench.heads import HeadWeights
from workbench.presets import preset_values
from workbench.stats import Interval, bootstrap_interval
from workbench.typed_config import PYTHON_ONLY, PositiveInt, flat_values, typed_config
from workbench.users.routing import RoutingConfig, route_users

if TYPE_CHECKING:
    from workbench.engine.lens import Lens

PREDICTIONS, METRICS, CONFIG = "predictions.jsonl", "metrics.json", "config.json"
PACKAGES = ("workbench", "torch", "transformers", "transformer-lens", "rouge-score", "nltk", "rank-bm25", "numpy")
RESUME_INDEPENDENT = ("batch_size", "limit")  # may change between an interrupted run and its resumption


@typed_config
class EvalConfig:
    """Everything that determines an evaluation's predictions and metrics. `decoder` is a decoder
    without heads: a decoder that suppresses heads gets them from the file `heads` at run time, so
    the run records where they came from. `data` names the data source (a path, or "demo");
    `preset` the preset the options came from (recorded only). With `routing`, a decoder that
    suppresses heads gets each user's routed mix of per-cluster heads instead of `heads`.
    `habits`: the users' writing habits to score where the data has them (`workbench.experiments.metrics.HABITS`)."""

    task: str
    split: str
    model: str
    decoder: Decoder = Field(default_factory=Greedy, json_schema_extra=PYTHON_ONLY)
    heads: str | None = None
    data: str = "demo"
    max_new_tokens: PositiveInt | None = None
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    batch_size: PositiveInt = 8
    seed: int = 0
    limit: PositiveInt | None = None
    resamples: PositiveInt = 1000
    preset: str | None = None
    routing: RoutingConfig | None = None
    habits: tuple[Literal[HABITS], ...] = ()  # type: ignore[valid-type]

    name = "evaluation"

    def __post_init__(self) -> None:
        task_spec(self.task)
        if getattr(self.decoder, "heads", None) is not None:
            raise InputError("give the evaluation's head weights as a file (heads=...), so that the run records them")
        if self.routing is not None and (self.heads or not uses_heads(self.method)):
            raise InputError(
                f"routing (--clusters) gives {self.method} its heads: it needs a decoder that suppresses heads and no --heads"
            )
        if uses_heads(self.method) and not self.heads and self.routing is None:
            raise InputError(f"{self.method} needs --heads (a head-weights JSON file), or --clusters with --cluster-heads")
        if self.heads and not uses_heads(self.method):
            raise InputError(f"{self.method} takes no head weights (--heads)")

    @property
    def method(self) -> str:
        return self.decoder.name

    @property
    def label(self) -> str:
        """How reports name the run: the decoder, and the preset it came from."""
        label = self.method if self.preset is None else f"{self.method} ({self.preset})"
        if self.routing is not None:
            routing = self.routing
            label += f", {routing.mode} routing" + (f" (T={routing.temperature:g})" if routing.mode == "soft" else "")
        return label

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    @property
    def new_tokens(self) -> int:
        return self.max_new_tokens or self.spec.max_new_tokens

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return answer_stop_strings(self.prompt.format, self.spec)

    def as_dict(self) -> dict[str, Any]:
        """The configuration as recorded: the decoder's and the prompt's every option included."""
        nested = ("decoder", "prompt", "routing")
        own = {name: getattr(self, name) for name in self.__pydantic_fields__ if name not in nested}  # type: ignore[attr-defined]
        return {
            **own,
            "habits": list(self.habits),  # as JSON stores it, so that a resume compares like with like
            "method": self.method,
            "decoder": self.decoder.options(),
            "prompt": flat_values(self.prompt),
            "routing": None if self.routing is None else flat_values(self.routing),
        }


def eval_config(
    *,
    task: str,
    split: str,
    model: str,
    method: str | None = None,
    preset: str | None = None,
    decoder_options: Mapping[str, Any] | None = None,
    prompt_options: Mapping[str, Any] | None = None,
    max_new_tokens: int | None = None,
    seed: int = 0,
    **rest: Any,
) -> EvalConfig:
    """The configuration of an evaluation from options by name, as `workbench evaluate` (and the
    demo) take them: the preset's values (`workbench.presets`) fill in what is not given (None);
    its decoder options apply where the chosen decoder has them; the rest are `EvalConfig`'s."""
    given = {"method": method, "max_new_tokens": max_new_tokens, **(prompt_options or {})}
    values = preset_values(preset, "evaluate", given)
    chosen = values.pop("method", "greedy")
    names = {option.name for option in decoder_options_of(chosen)}
    preset_decoder = {k: v for k, v in values.pop("decoder", {}).items() if k in names}
    decoder = make_decoder(chosen, **{**preset_decoder, **(decoder_options or {})})
    max_new_tokens = values.pop("max_new_tokens", None)
    prompt = PromptConfig(seed=seed, **values)
    return EvalConfig(task=task, split=split, model=model, decoder=decoder, prompt=prompt, max_new_tokens=max_new_tokens,
                      seed=seed, preset=preset, **rest)  # fmt: skip


def bind_heads(config: EvalConfig, lens: Lens) -> tuple[Decoder, HeadWeights | None]:
    """The decoder with its head weights (the workbench's format or the authors'), checked against the model."""
    heads = HeadWeights.load_any(config.heads, geometry=lens.geometry) if config.heads else None
    decoder = config.decoder if heads is None else dataclasses.replace(config.decoder, heads=heads)  # type: ignore[type-var]
    if config.routing is None:  # a routed decoder is checked with each user's heads
        decoder.check(lens)
    return decoder, heads


def discovery_warning(config: EvalConfig, heads: HeadWeights | None) -> str | None:
    """A warning when the heads were discovered on the split (and data) being evaluated, as
    `workbench discover` records them in the heads' `extra` (`split`, `data`)."""
    if heads is None:
        return None
    extra = heads.extra
    same_split = extra.get("split") == config.split
    same_data = extra.get("data") in (None, config.data) or _same_path(extra.get("data"), config.data)
    if same_split and same_data:
        source = config.heads or (config.routing.cluster_heads if config.routing is not None else None)
        return (f"heads in {source} were discovered on the {config.split!r} split of the data being evaluated; "
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


def _check_resumable(out: Path, record: dict[str, Any]) -> None:
    """Refuse a folder whose predictions were made with another configuration (a folder with a
    configuration but no prediction yet, e.g. left by a failed start, is taken over)."""
    stored_path = out / CONFIG
    if not stored_path.is_file() or not read_predictions(out / PREDICTIONS):
        return
    stored = read_json(stored_path)
    changed = [k for k in record if k not in RESUME_INDEPENDENT and stored.get(k) != record[k]]
    if changed:
        key = changed[0]
        raise InputError(f"{out} holds a run with {key}={stored.get(key)!r}, not {record[key]!r}; use another --out")


def evaluate(
    lens: Lens,
    examples: Sequence[Example],
    config: EvalConfig,
    out: str | Path,
    *,
    progress: bool = True,
    workers: Workers | None = None,
    profiles: Sequence[Example] | None = None,
) -> dict[str, Any]:
    """Generate, score and write predictions and metrics for `examples`; resumes an interrupted
    run. `workers` decode the batches (default: this process, on `lens`). A routed run routes each
    user by the profile their examples among `profiles` make up (default: `examples`; a shard
    passes the whole run's, so that a user whose examples fall in several shards is routed alike)."""

    out = Path(out)
    examples = list(examples)[: config.limit]
    missing_gold = [e.example_id for e in examples if e.output is None]
    if not examples or missing_gold:
        raise InputError(
            f"nothing to evaluate: {'no examples' if not examples else f'no gold output for id {missing_gold[0]!r}'}"
        )
    decoder, heads = bind_heads(config, lens)
    if config.routing is not None:
        routes = route_users(lens, examples if profiles is None else profiles, config.routing).for_examples(examples)
    else:
        routes = None
    if routes is not None:  # every user's routed decoder, checked before anything is written
        Routed(decoder, list(routes.weights.values())).check(lens)
    prompts = decoding_prompts(lens, examples, config, examples if profiles is None else profiles)
    contrasts = {}
    if decoder.contrast_prompts:
        contrasts = {
            e.example_id: build_prompt(lens, e, config.prompt, with_profile=False, answer_room=config.new_tokens)
            for e in examples
        }
    record = {**config.as_dict(), "heads_digest": None if heads is None else digest(heads.weights.tolist()),
              "routing_digest": None if routes is None else routes.digest}  # fmt: skip
    _check_resumable(out, record)  # every input is good: from here on the folder is written
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / CONFIG, record)
    if routes is not None:
        routes.save(out, config.routing)  # type: ignore[arg-type]
    warning = discovery_warning(config, heads if routes is None else routes.heads.weights[0])
    if warning:
        warnings.warn(warning, stacklevel=2)
    done = read_predictions(out / PREDICTIONS)
    todo = [e for e in examples if e.example_id not in done]
    spec = config.spec
    batches = [todo[start : start + config.batch_size] for start in range(0, len(todo), config.batch_size)]
    tasks = [
        (
            [prompts[e.example_id] for e in batch],
            [contrasts[e.example_id] for e in batch] if contrasts else None,
            None if routes is None else [routes.weights[e.user_id] for e in batch],
        )
        for batch in batches
    ]
    workers = workers if workers is not None else LocalWorkers(lens)
    shared = (decoder, config.new_tokens, config.stop_strings, config.batch_size)
    in_order = True
    with (
        open(out / PREDICTIONS, "a", encoding="utf-8") as handle,
        tqdm(
            total=len(examples),
            initial=len(examples) - len(todo),
            desc=f"evaluating {config.label}",
            unit="example",
            disable=not progress,
        ) as bar,  # fmt: skip
    ):
        for position, (index, (generations, seconds, decoded_at)) in enumerate(workers.map(generate_batch, tasks, shared=shared)):
            in_order = in_order and index == position
            for example, generation in zip(batches[index], generations):
                prediction = generation.text.strip()
                line = {
                    "id": example.example_id,
                    "user_id": example.user_id,
                    "prediction": prediction,
                    "gold": example.output,
                    "style": example.style,
                    "stop_reason": generation.stop_reason,
                    "seconds": seconds,
                    "threads": decoded_at,
                    "scores": score_example(spec, prediction, example.output, example.style, config.habits),  # type: ignore[arg-type]
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                done[example.example_id] = line
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batches[index]))
    if not in_order:  # batches finished out of order on several workers: the file in example order
        order = {e.example_id: i for i, e in enumerate(examples)}
        ordered = sorted(done.values(), key=lambda line: order.get(str(line["id"]), len(order)))
        io.write_text(out / PREDICTIONS, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in ordered))
    rows = [done[e.example_id]["scores"] for e in examples]
    threads = decoding_threads([done[e.example_id] for e in examples])
    mixed = mixed_threads_note(threads, f"the evaluation in {out}")
    if mixed:
        warnings.warn(mixed, stacklevel=2)
    result = {
        "task": spec.name,
        "split": config.split,
        "method": config.method,
        "preset": config.preset,
        "label": config.label,
        "n": len(rows),
        "seconds": sum(float(done[e.example_id].get("seconds", 0.0)) for e in examples),
        "threads": threads,
        "threads_note": mixed,
        "metrics": {
            name: interval.as_dict()
            for name, interval in metric_intervals(spec, rows, resamples=config.resamples, seed=config.seed).items()
        },
        "config": record,
        "seed": config.seed,
        "versions": package_versions(),
        "routing": None if routes is None else routes.summary(config.routing),  # type: ignore[arg-type]
        "evaluated_on_discovery_split": warning is not None,
        "warnings": [warning] if warning else [],
    }
    io.write_json(out / METRICS, result)
    return result


def decoding_prompts(
    tokenizer: PromptTokenizer, examples: Sequence[Example], config: EvalConfig, partners: Sequence[Example]
) -> dict[str, list[int]]:
    """The prompt token ids the decoder receives for each example (by id): its own profile or a
    partner's (`config.prompt.profile`), with room for `config.new_tokens` answer tokens
    (`workbench show` prints them)."""
    return {e.example_id: decoding_prompt(tokenizer, e, config.prompt, partners, answer_room=config.new_tokens) for e in examples}


def decoding_threads(lines: Sequence[dict[str, Any]]) -> list[int | None]:
    """The distinct torch thread counts prediction lines were decoded at (None: on a GPU, or a
    line written before the count was recorded)."""
    return sorted({line.get("threads") for line in lines}, key=lambda count: (count is None, count or 0))


def metric_intervals(spec: TaskSpec, rows: Sequence[dict[str, float]], *, resamples: int, seed: int) -> dict[str, Interval]:
    return {
        name: bootstrap_interval(len(rows), metric_statistic(spec, rows, name), resamples=resamples, seed=seed)
        for name in aggregate(spec, rows)
    }


def generate_batch(
    lens: Lens,
    decoder: Decoder,
    max_new_tokens: int,
    stop_strings: Sequence[str],
    batch_size: int,
    prompts: list,
    contrast_prompts: list | None,
    route_weights: list[HeadWeights] | None,
) -> tuple[list, float, int | None]:
    """One batch of an evaluation's generations, each prompt with its user's routed head weights
    where the run routes users, the decoding seconds per prompt and the torch thread count it was
    decoded at (None on a GPU): the unit of work a worker runs."""

    options: dict[str, Any] = dict(contrast_prompts=contrast_prompts, max_new_tokens=max_new_tokens,
                                   stop_strings=stop_strings, batch_size=batch_size)  # fmt: skip
    started = time.perf_counter()
    if route_weights is None:
        generations = generate(lens, prompts, decoder=decoder, **options)
    else:
        generations = generate_routed(lens, prompts, decoder, route_weights, **options)
    return generations, (time.perf_counter() - started) / len(prompts), numerics_record(lens.device)["threads"]


def package_versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
