"""Preference Contribution Scores: `score_heads`, with its methods and variants.

Variants (what a positive score means):

- `standard` (the paper's): ablating the head raises the NLL of the user's reference output
  given the prompt with the profile. This also ranks heads that *every* output needs.
- `profile-contrast`: the head's ablation effect with the profile minus its effect on the same
  example without the profile; only the part of the head's effect that the profile adds counts.
- `swap-contrast`: own profile minus another user's profile of similar length; controls for
  the profile being present at all and for prompt length, so what remains is *this* user's.

Methods: `exact` ablates every head (`workbench.scores.exact`), `attribution` estimates all heads
(by default from one backward pass, `workbench.scores.attribution`; `estimator` picks another of
`workbench.scores.estimators`), `hybrid` estimates all heads the same way and then re-scores `top_m`
candidates exactly; `PCSResult.exact` says which. Half of the candidates (rounded
up) are the best by mean estimate, the rest the largest by mean attribution magnitude: a head whose
effect is far from linear can get an estimate of the wrong sign, but not a small magnitude
(benchmarks/RESULTS.md, "Head scores", measures the recall of the exact top-K both ways).

With `miss_rate` the hybrid also scores a seeded random sample of the other heads exactly and grows
its candidates along the estimate's order until a one-sided Clopper–Pearson bound on the share of
heads outside them that belong in the top K is at most `miss_rate` (`workbench.scores.certificate`);
with `racing` its exact phase goes example by example and stops re-scoring a head once its place
relative to the top K is settled at `confidence` (`workbench.scores.racing`; a head scored on fewer
examples has its gaps filled with its mean over those it was scored on). The result's metadata
records the certificate and the examples each head was scored on. Both run per scan (clusters one
after another) in one process: a shard cannot run them.

`score_scans` runs several scans (per-cluster discovery: one per cluster, each with its own
hybrid candidates, all with the whole run's mean-ablation reference) together, one fan-out of all
their examples per phase, so that workers never wait at the end of one cluster for the next.

With `checkpoint`, every finished example is stored at once, keyed by its content (the token ids
it is scored on); the folder records the options, and other options are refused. A rerun with the
same arguments continues where it stopped and gives identical results; a run over more examples
(or another shard of a data set) reuses the finished ones. A hybrid entry scored for another
candidate set (the candidates depend on all examples) is completed with the heads it lacks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from tqdm.auto import tqdm

from workbench.checkpoint import CheckpointStore, digest
from workbench.data.tokenized import TokenizedExample
from workbench.engine.interventions import Hook
from workbench.engine.lens import Lens
from workbench.engine.masks import Head
from workbench.engine.workers import LocalWorkers, Workers
from workbench.errors import InputError
from workbench.scores.ablation import Ablation, AblationKind, make_ablation
from workbench.scores.certificate import candidate_order, certify
from workbench.scores.estimators import Estimator, EstimatorName, estimate_heads
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence, reference_sequences
from workbench.scores.racing import filled_with_means, race
from workbench.scores.ranking import REFERENCE_TOP_PERCENT, ranked_heads
from workbench.scores.results import PCSResult
from workbench.tensor_types import HeadGrid
from workbench.typed_config import Fraction, PositiveInt, typed_config

Method = Literal["exact", "attribution", "hybrid"]
METHODS: tuple[str, ...] = get_args(Method)
SCREEN = "estimate+magnitude"
HeadGrids = dict[str, torch.Tensor]  # per example, grids by name (`pcs`, `magnitude`)
Variant = Literal["standard", "profile-contrast", "swap-contrast"]
VARIANTS: dict[str, str | None] = {  # each variant's control prompt (a `TokenizedExample` field), in `Variant`'s order
    "standard": None,
    "profile-contrast": "no_profile_prompt_ids",
    "swap-contrast": "swapped_prompt_ids",
}


@typed_config
class ScanOptions:
    """How a head scan scores every head (`score_heads`, `PCSScan`, discovery globally and per
    cluster; shards record it). `top_k`: how many heads the caller will select, for which the
    hybrid makes `top_m` candidates (default 3·top_k, `default_top_m`); `seed` seeds the result's
    bootstrap intervals (the scores themselves are deterministic) and the hybrid's certificate
    sample and race order; `task` is recorded only. `estimator` (with `ig_steps` for the path
    estimators): what attribution and the hybrid's candidates score heads by
    (`workbench.scores.estimators`). `miss_rate`, `racing`, `confidence`: the hybrid's certified
    candidates and raced exact phase (module docstring)."""

    method: Method = "exact"
    variant: Variant = "standard"
    ablation: AblationKind = "zero"
    top_k: PositiveInt | None = None
    top_m: PositiveInt | None = None
    max_rows: PositiveInt = 64
    seed: int = 0
    task: str = ""
    miss_rate: Fraction | None = None
    racing: bool = False
    confidence: Fraction = 0.95
    estimator: EstimatorName = "attribution"
    ig_steps: PositiveInt = 2

    name = "scan"


def selection_size(n_total_heads: int, top_k: int | None = None) -> int:
    """`top_k`, by default the reference's selection size max(1, ⌊0.04 · heads⌋)."""
    return max(1, math.floor(REFERENCE_TOP_PERCENT * n_total_heads)) if top_k is None else top_k


def default_top_m(n_total_heads: int, top_k: int | None = None) -> int:
    """Three times the selection size `top_k` (`selection_size`)."""
    return min(n_total_heads, 3 * selection_size(n_total_heads, top_k))


def variant_sequences(example: TokenizedExample, variant: str) -> list[tuple[float, TargetSequence]]:
    """The signed sequences whose ablation effects add up to the example's score."""
    sequences = [(1.0, TargetSequence(example.prompt_ids, example.target_ids))]
    control = VARIANTS[variant]
    if control is not None:
        sequences.append((-1.0, TargetSequence(getattr(example, control), example.target_ids)))
    return sequences


def score_heads(
    lens: Lens,
    examples: Sequence[TokenizedExample],
    options: ScanOptions | None = None,
    *,
    reference: Sequence[Sequence[int]] | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    hooks: Sequence[Hook] = (),
    **values: Any,
) -> PCSResult:
    """Score every head of `lens` on `examples` with `options` (a `ScanOptions`, or its fields given
    by name: `score_heads(lens, examples, method="hybrid", top_k=10)`); see the module docstring.

    `reference`: token sequences for mean ablation (default: the examples' prompt ‖ target).
    `workers` run the examples (default: `lens`, in this process; `workbench.execution.ray.RayWorkers`
    on a Ray cluster); the hybrid method chooses its candidates from every example's attribution
    before any exact score, wherever the examples run. `hooks` (TransformerLens-style `(name, fn)`)
    act in every forward of the scan, clean and ablated alike.
    """
    options = ScanOptions(**values) if options is None else dataclasses.replace(options, **values)
    scan = PCSScan(lens, examples, options, reference=reference, checkpoint=checkpoint, progress=progress, workers=workers,
                   hooks=hooks)  # fmt: skip
    return score_scans([scan], [examples])[0]


def score_scans(scans: Sequence[PCSScan], groups: Sequence[Sequence[TokenizedExample]]) -> list[PCSResult]:
    """Several scans of one method (e.g. one per cluster), each on its group of examples, run
    together: each phase fans out the examples of every group at once; the hybrid's candidates
    are chosen per scan from its whole group's attribution, between the two phases."""
    method = scans[0].method
    if method == "exact":
        return scan_results(scans, groups)
    estimates = scan_estimates(scans, groups)
    if any(scan.verifies for scan in scans):
        return [scan.verified_result(examples, e) for scan, examples, e in zip(scans, groups, estimates)]
    candidates = [scan.candidates(e) for scan, e in zip(scans, estimates)] if method == "hybrid" else None
    return scan_results(scans, groups, estimates, candidates)


class PCSScan:
    """A scan's fixed parts (ablation, checkpoint, options) and its phases, callable one by one:
    a shard runs the attribution phase on its examples, takes the hybrid candidates from the
    attribution of *all* shards (`candidates`), then runs the exact phase (`result`).

    `examples` are the whole scan's (they check the arguments and make the default mean-ablation
    reference); the phases take any subset of them. `ablation`: one made already, which scans run
    together share (then no `reference`); by default the options' ablation is made here (`mean`
    over `reference`)."""

    def __init__(
        self,
        lens: Lens,
        examples: Sequence[TokenizedExample],
        options: ScanOptions,
        *,
        ablation: Ablation | None = None,
        reference: Sequence[Sequence[int]] | None = None,
        checkpoint: str | Path | None = None,
        progress: bool = True,
        workers: Workers | None = None,
        hooks: Sequence[Hook] = (),
    ):
        _check_examples(lens, examples, options.variant)
        n_total = lens.geometry.n_total_heads
        top_m = default_top_m(n_total, options.top_k) if options.top_m is None else options.top_m
        if options.method == "hybrid" and not 0 < top_m <= n_total:
            raise InputError(f"top_m must lie in 1..{n_total} (the model's number of heads), got {top_m}")
        if options.method != "hybrid" and (options.miss_rate is not None or options.racing):
            raise InputError(f"miss_rate and racing verify the hybrid method's candidates, not the {options.method} method")
        for name in ("miss_rate", "confidence"):
            if getattr(options, name) == 1:
                raise InputError(f"{name} must lie strictly between 0 and 1, got 1")
        if ablation is None:
            ablation = make_ablation(lens, options.ablation, reference_sequences(examples) if reference is None else reference)
        elif reference is not None or ablation.name != options.ablation:
            raise ValueError("a made ablation carries its own reference and must be the options' ablation")
        if hooks and checkpoint is not None:
            raise InputError("a scan with hooks cannot be checkpointed: a hook function has no fingerprint")
        self.lens, self.options, self.top_m, self.progress, self.hooks = lens, options, top_m, progress, tuple(hooks)
        self.method, self.variant, self.max_rows = options.method, options.variant, options.max_rows
        self.estimator = Estimator(options.estimator, options.ig_steps)
        self.ablation = ablation
        self.workers = workers if workers is not None else LocalWorkers(lens)
        hybrid = options.method == "hybrid"
        self.verifies = hybrid and (options.miss_rate is not None or options.racing)
        verification = {name: getattr(options, name) for name in ("miss_rate", "racing", "confidence")} if self.verifies else {}
        self.metadata = {
            "model": lens.name,
            "task": options.task,
            "method": options.method,
            "variant": options.variant,
            "ablation": ablation.name,
            "n_examples": len(examples),
            "seed": options.seed,
            "top_m": top_m if hybrid else None,
            "screen": SCREEN if hybrid else None,
            **verification,
            "estimator": self.estimator.describe() if options.method != "exact" else None,
        }
        self.store = None
        if checkpoint is not None:
            # What makes a stored entry; the examples are not part of it (entries are keyed by their
            # content), and neither are the task label and the seed, which no score depends on.
            fingerprint = {
                **{name: self.metadata[name] for name in ("model", "method", "variant", "ablation", "top_m", "screen")},
                "geometry": vars(lens.geometry),
                "dtype": str(next(lens.bridge.parameters()).dtype),
                "max_rows": options.max_rows,
                "reference": ablation.reference_digest,
                **verification,
                # the default estimator adds nothing, so checkpoints made before the option stay valid
                **({"estimator": self.metadata["estimator"]} if self.metadata["estimator"] not in (None, "attribution") else {}),
            }
            self.store = CheckpointStore(checkpoint, fingerprint)

    def estimates(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        """The attribution phase: per example, the estimate (`pcs`) and `magnitude` of every head."""
        return scan_estimates([self], [examples])[0]

    def candidates(self, estimates: dict[str, torch.Tensor]) -> list[Head]:
        """The hybrid's heads to score exactly, from the attribution of every example of the scan."""
        return hybrid_candidates(estimates["pcs"].mean(dim=0), estimates["magnitude"].mean(dim=0), self.top_m)

    def result(
        self,
        examples: Sequence[TokenizedExample],
        estimates: dict[str, torch.Tensor] | None = None,
        candidates: Sequence[Head] | None = None,
    ) -> PCSResult:
        """The scores of `examples`: exact ones (method `exact`), their `estimates` (attribution),
        or the estimates with `candidates` scored exactly (hybrid)."""
        return scan_results([self], [examples], [estimates], [candidates])[0]

    def verified_result(self, examples: Sequence[TokenizedExample], estimates: dict[str, torch.Tensor]) -> PCSResult:
        """The hybrid's result with certified candidates (`miss_rate`) and/or a raced exact phase
        (`racing`), from the attribution `estimates` of `examples`; see the module docstring."""
        options, geometry = self.options, self.lens.geometry
        known = torch.full((len(examples), geometry.n_layers, geometry.n_heads), float("nan"), dtype=torch.float64)
        top_k = selection_size(geometry.n_total_heads, options.top_k)

        def score(indices: Sequence[int], heads: list[Head]) -> torch.Tensor:
            """Score the `heads` each of the examples at `indices` lacks; the grid of the last one."""
            lacking = [(index, [head for head in heads if known[index][head].isnan()]) for index in indices]
            lacking = [(index, missing) for index, missing in lacking if missing]
            computed = _run_phase("exact", [(self, [examples[index]], missing) for index, missing in lacking])
            for (index, missing), grids in zip(lacking, computed):
                layers, positions = [layer for layer, _ in missing], [head for _, head in missing]
                known[index, layers, positions] = grids["pcs"][0, layers, positions]
            return known[indices[-1]]

        def exact_means(heads: list[Head]) -> torch.Tensor:
            if options.racing:
                race(heads, len(examples), top_k=min(top_k, len(heads)), confidence=options.confidence, seed=options.seed,
                     score=lambda index, active: score([index], active))  # fmt: skip
            else:
                score(range(len(examples)), heads)
            return known.nanmean(dim=0)

        order = candidate_order(self.candidates(estimates), estimates["pcs"].mean(dim=0))
        certificate = None
        if options.miss_rate is None:
            exact_means(order[: self.top_m])
        else:
            certificate = certify(order, top_m=self.top_m, top_k=top_k, target=options.miss_rate,
                                  confidence=options.confidence, seed=options.seed, exact_means=exact_means)  # fmt: skip
        scored = ~known.isnan()
        exact = scored.any(dim=0)
        per_example = torch.where(exact, filled_with_means(known), estimates["pcs"])
        counts = scored.sum(dim=0)
        metadata = {**self.metadata, "n_examples": len(examples), "certificate": certificate and certificate.as_dict()}
        if options.racing:
            metadata["racing"] = {
                "examples_scored": [[layer, head, int(counts[layer, head])] for layer, head in torch.nonzero(exact).tolist()],
                "head_examples": int(counts.sum()),
                "head_examples_without_racing": int(exact.sum()) * len(examples),
            }
        return PCSResult(per_example, exact, [e.example_id for e in examples], [e.user_id for e in examples], metadata)

    def _exact_heads(self, estimates: dict[str, torch.Tensor] | None, candidates: Sequence[Head] | None) -> list[Head]:
        """The heads `result` scores exactly (none for attribution)."""
        if self.method == "exact":
            return self.lens.geometry.all_heads()
        if estimates is None or (self.method == "hybrid") != (candidates is not None):
            raise ValueError(f"the {self.method} method needs the estimates{' and candidates' * (self.method == 'hybrid')}")
        return list(candidates or [])

    def _assemble(
        self,
        examples: Sequence[TokenizedExample],
        estimates: dict[str, torch.Tensor] | None,
        heads: list[Head],
        scored: HeadGrids,
    ) -> PCSResult:
        """The result of `examples`: the exact scores of `heads` (`scored`), the estimates elsewhere."""
        shape = (self.lens.geometry.n_layers, self.lens.geometry.n_heads)
        exact = torch.zeros(shape, dtype=torch.bool)
        for layer, head in heads:
            exact[layer, head] = True
        if estimates is None:
            per_example = scored["pcs"]
        else:
            per_example = torch.where(exact, scored["pcs"], estimates["pcs"]) if heads else estimates["pcs"]
        metadata = {**self.metadata, "n_examples": len(examples)}
        return PCSResult(per_example, exact, [e.example_id for e in examples], [e.user_id for e in examples], metadata)


def scan_estimates(scans: Sequence[PCSScan], groups: Sequence[Sequence[TokenizedExample]]) -> list[HeadGrids]:
    """The attribution phase of several scans (e.g. one per cluster) at once: every example of
    every group goes to the workers together, so that no worker waits for another scan's last
    example. `groups[i]`: the examples of `scans[i]` to score."""
    return _run_phase("attribution", [(scan, examples, scan.lens.geometry.all_heads()) for scan, examples in zip(scans, groups)])


def scan_results(
    scans: Sequence[PCSScan],
    groups: Sequence[Sequence[TokenizedExample]],
    estimates: Sequence[HeadGrids | None] | None = None,
    candidates: Sequence[Sequence[Head] | None] | None = None,
) -> list[PCSResult]:
    """`PCSScan.result` of several scans at once, their exact phases fanned out together."""
    estimates = estimates if estimates is not None else [None] * len(scans)
    candidates = candidates if candidates is not None else [None] * len(scans)
    heads = [scan._exact_heads(e, c) for scan, e, c in zip(scans, estimates, candidates)]
    exact = [(scan, examples, chosen) for scan, examples, chosen in zip(scans, groups, heads) if chosen]
    scored = iter(_run_phase("exact", exact))
    return [
        scan._assemble(examples, e, chosen, next(scored) if chosen else {})
        for scan, examples, e, chosen in zip(scans, groups, estimates, heads)
    ]


def _run_phase(phase: str, parts: Sequence[tuple[PCSScan, Sequence[TokenizedExample], list[Head]]]) -> list[HeadGrids]:
    """Per part (a scan, its examples, the heads to score), `example_scores` stacked per name.
    A stored entry is reused; one that lacks some of the heads (NaN: another candidate set) is
    completed; every new entry is stored in its scan's checkpoint as soon as its worker returns
    it. The scans share their model, variant and row budget (those of one discovery) and run on
    the first scan's workers."""
    if not parts:
        return []
    first = parts[0][0]
    if any((scan.lens, scan.variant, scan.max_rows, scan.hooks, scan.estimator)
           != (first.lens, first.variant, first.max_rows, first.hooks, first.estimator) for scan, _, _ in parts):  # fmt: skip
        raise ValueError("scans run together must share their model, variant, max_rows, hooks and estimator")
    plans, tasks, owners = [], [], []
    for which, (scan, examples, heads) in enumerate(parts):
        keys = [f"{phase}/{_content_key(example, scan.variant)}" for example in examples]
        entries = [_load(scan.store, key) for key in keys]
        for index, example in enumerate(examples):
            missing = _lacking(entries[index], heads)
            if missing:
                tasks.append((which, phase, example, missing))
                owners.append((which, index))
        plans.append((keys, entries))
    total = sum(len(examples) for _, examples, _ in parts)
    shared = (tuple(scan.ablation for scan, _, _ in parts), first.variant, first.max_rows, first.hooks, first.estimator)
    with tqdm(total=total, initial=total - len(tasks), desc=f"{phase} PCS", unit="example", disable=not first.progress) as bar:
        for position, computed in first.workers.map(part_example_scores, tasks, shared=shared):
            which, index = owners[position]
            keys, entries = plans[which]
            entries[index] = {
                name: grid if name not in entries[index] else torch.where(grid.isnan(), entries[index][name], grid)
                for name, grid in computed.items()
            }
            store = parts[which][0].store
            if store is not None:
                store.save(keys[index], {k: v.numpy() for k, v in entries[index].items()})
            bar.update()
    return [{name: torch.stack([entry[name] for entry in entries]) for name in entries[0]} for _, entries in plans]


def part_example_scores(
    lens: Lens,
    ablations: tuple[Ablation, ...],
    variant: str,
    max_rows: int,
    hooks: tuple[Hook, ...],
    estimator: Estimator,
    which: int,
    phase: str,
    example: TokenizedExample,
    heads: list[Head],
) -> dict[str, HeadGrid]:
    """`example_scores` with the ablation of scan `which` of those run together (the unit of work a worker runs)."""
    return example_scores(lens, ablations[which], variant, max_rows, phase, example, heads, hooks, estimator)


def example_scores(
    lens: Lens,
    ablation: Ablation,
    variant: str,
    max_rows: int,
    phase: str,
    example: TokenizedExample,
    heads: list[Head],
    hooks: Sequence[Hook] = (),
    estimator: Estimator = Estimator(),
) -> dict[str, HeadGrid]:
    """One example's grids of one phase: the signed sum over the variant's sequences of the
    score (`pcs`), and for attribution (by `estimator`) the unsigned sum of the magnitudes
    (`magnitude`); the unit of work a worker runs."""
    computed: dict[str, torch.Tensor] = {}
    for sign, sequence in variant_sequences(example, variant):
        if phase == "exact":
            grids = {"pcs": exact_deltas(lens, sequence, ablation, heads, max_rows=max_rows, hooks=hooks)}
        else:
            found = estimate_heads(lens, sequence, ablation, estimator, hooks)
            grids = {"pcs": found.estimate, "magnitude": found.magnitude}
        for name, grid in grids.items():
            computed[name] = computed.get(name, 0) + (sign * grid if name == "pcs" else grid)
    return computed


def _content_key(example: TokenizedExample, variant: str) -> str:
    """A digest of the token ids an example's score is made of (prompt, target, the variant's control)."""
    return digest([[list(sequence.ids), sequence.prompt_len] for _, sequence in variant_sequences(example, variant)])


def _load(store: CheckpointStore | None, key: str) -> dict[str, torch.Tensor]:
    if store is None or key not in store:
        return {}
    return {name: torch.from_numpy(array) for name, array in store.load(key).items()}


def _lacking(entry: dict[str, torch.Tensor], heads: list[Head]) -> list[Head]:
    """The heads `entry` holds no score for (all of them when there is no entry)."""
    if "pcs" not in entry:
        return heads
    return [head for head in heads if torch.isnan(entry["pcs"][head])]


def hybrid_candidates(estimate: HeadGrid, magnitude: HeadGrid, top_m: int) -> list[Head]:
    """The `top_m` heads to score exactly: the best ⌈top_m / 2⌉ by estimate, then the largest by
    magnitude among the others (ties broken as in `ranked_heads`)."""
    by_estimate = ranked_heads(estimate)[: math.ceil(top_m / 2)]
    chosen = set(by_estimate)
    by_magnitude = [head for head in ranked_heads(magnitude) if head not in chosen]
    return by_estimate + by_magnitude[: top_m - len(by_estimate)]


def _check_examples(lens: Lens, examples: Sequence[TokenizedExample], variant: str) -> None:
    if not examples:
        raise InputError("no examples to score")
    seen: set[str] = set()
    control = VARIANTS[variant]
    for example in examples:
        if example.example_id in seen:
            raise InputError(f"duplicate example id {example.example_id!r}")
        seen.add(example.example_id)
        example.check_fits(lens.geometry.n_ctx)
        if control is not None and getattr(example, control) is None:
            field = "prompt_no_profile" if variant == "profile-contrast" else "prompt_swapped"
            raise InputError(f"example {example.example_id!r}: the {variant} variant needs its {field} prompt ({control})")
