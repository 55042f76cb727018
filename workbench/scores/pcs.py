"""Preference Contribution Scores: `score_heads`, with its methods and variants.

Variants (what a positive score means):

- `standard` (the paper's): ablating the head raises the NLL of the user's reference output
  given the prompt with the profile. This also ranks heads that *every* output needs.
- `profile-contrast`: the head's ablation effect with the profile minus its effect on the same
  example without the profile; only the part of the head's effect that the profile adds counts.
- `swap-contrast`: own profile minus another user's profile of similar length; controls for
  the profile being present at all and for prompt length, so what remains is *this* user's.

Methods: `exact` ablates every head (`workbench.scores.exact`), `attribution` estimates all heads
from one backward pass (`workbench.scores.attribution`), `hybrid` estimates all heads and then
re-scores `top_m` candidates exactly; `PCSResult.exact` says which. Half of the candidates (rounded
up) are the best by mean estimate, the rest the largest by mean attribution magnitude: a head whose
effect is far from linear can get an estimate of the wrong sign, but not a small magnitude
(benchmarks/RESULTS.md, "Head scores", measures the recall of the exact top-K both ways).

With `checkpoint`, every finished example is stored at once, keyed by its content (the token ids
it is scored on); the folder records the options, and other options are refused. A rerun with the
same arguments continues where it stopped and gives identical results; a run over more examples
(or another shard of a data set) reuses the finished ones. A hybrid entry scored for another
candidate set (the candidates depend on all examples) is completed with the heads it lacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from workbench.checkpoint import CheckpointStore, digest
from workbench.data.tokenized import TokenizedExample
from workbench.errors import InputError
from workbench.lens import Lens
from workbench.masks import Head
from workbench.scores.ablation import make_ablation
from workbench.scores.attribution import attribution_terms
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence
from workbench.scores.ranking import REFERENCE_TOP_PERCENT, ranked_heads
from workbench.scores.results import PCSResult
from workbench.tensor_types import HeadGrid

METHODS: tuple[str, ...] = ("exact", "attribution", "hybrid")
SCREEN = "estimate+magnitude"
VARIANTS: dict[str, str | None] = {
    "standard": None,
    "profile-contrast": "no_profile_prompt_ids",
    "swap-contrast": "swapped_prompt_ids",
}


def default_top_m(n_total_heads: int, top_k: int | None = None) -> int:
    """Three times the selection size `top_k` (default: the reference's, max(1, ⌊0.04 · heads⌋))."""
    top_k = max(1, math.floor(REFERENCE_TOP_PERCENT * n_total_heads)) if top_k is None else top_k
    return min(n_total_heads, 3 * top_k)


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
    *,
    method: str = "exact",
    variant: str = "standard",
    ablation: str = "zero",
    reference: Sequence[Sequence[int]] | None = None,
    checkpoint: str | Path | None = None,
    top_m: int | None = None,
    top_k: int | None = None,
    max_rows: int = 64,
    seed: int = 0,
    task: str = "",
    progress: bool = True,
) -> PCSResult:
    """Score every head of `lens` on `examples`; see the module docstring for the options.

    `reference`: token sequences for mean ablation (default: the examples' prompt ‖ target).
    `top_m`: hybrid candidates re-scored exactly (default: `default_top_m` of `top_k`, the number
    of heads the caller will select). `seed` seeds the result's bootstrap intervals (the scores
    themselves are deterministic).
    """
    _check_arguments(lens, examples, method, variant, max_rows)
    n_total = lens.geometry.n_total_heads
    top_m = default_top_m(n_total, top_k) if top_m is None else int(top_m)
    if method == "hybrid" and not 0 < top_m <= n_total:
        raise InputError(f"top_m must lie in 1..{n_total} (the model's number of heads), got {top_m}")
    if reference is None:
        reference = [TargetSequence(e.prompt_ids, e.target_ids).ids for e in examples]
    chosen = make_ablation(lens, ablation, reference)
    metadata = {
        "model": lens.name,
        "task": task,
        "method": method,
        "variant": variant,
        "ablation": ablation,
        "n_examples": len(examples),
        "seed": seed,
        "top_m": top_m if method == "hybrid" else None,
        "screen": SCREEN if method == "hybrid" else None,
    }
    store = None
    if checkpoint is not None:
        # What makes a stored entry; the examples are not part of it (entries are keyed by their
        # content), and neither are the task label and the seed, which no score depends on.
        options = {
            **{name: metadata[name] for name in ("model", "method", "variant", "ablation", "top_m", "screen")},
            "geometry": vars(lens.geometry),
            "dtype": str(next(lens.bridge.parameters()).dtype),
            "max_rows": max_rows,
            "reference": digest([list(r) for r in reference]) if ablation == "mean" else None,
        }
        store = CheckpointStore(checkpoint, options)

    def run_phase(
        phase: str, score: Callable[[TargetSequence, list[Head]], dict[str, HeadGrid]], heads: list[Head]
    ) -> dict[str, torch.Tensor]:
        """Per example, the signed sum of `score(sequence, heads)["pcs"]` over the variant's
        sequences (other grids, magnitudes, are summed unsigned), stacked per name. A stored entry
        is reused; one that lacks some of `heads` (NaN: another candidate set) is completed."""
        entries = [_load(store, f"{phase}/{_content_key(example, variant)}") for example in examples]
        lacking = [_lacking(entry, heads) for entry in entries]
        finished = sum(not missing for missing in lacking)
        with tqdm(total=len(examples), initial=finished, desc=f"{phase} PCS", unit="example", disable=not progress) as bar:
            for index, example in enumerate(examples):
                if not lacking[index]:
                    continue
                computed: dict[str, torch.Tensor] = {}
                for sign, sequence in variant_sequences(example, variant):
                    for name, grid in score(sequence, lacking[index]).items():
                        computed[name] = computed.get(name, 0) + (sign * grid if name == "pcs" else grid)
                entries[index] = {
                    name: grid if name not in entries[index] else torch.where(grid.isnan(), entries[index][name], grid)
                    for name, grid in computed.items()
                }
                if store is not None:
                    store.save(f"{phase}/{_content_key(example, variant)}", {k: v.numpy() for k, v in entries[index].items()})
                bar.update()
        return {name: torch.stack([entry[name] for entry in entries]) for name in entries[0]}

    def attribution(sequence: TargetSequence, heads: list[Head]) -> dict[str, HeadGrid]:
        estimate, magnitude = attribution_terms(lens, sequence, chosen)
        return {"pcs": estimate, "magnitude": magnitude}

    def exact_scores(sequence: TargetSequence, heads: list[Head]) -> dict[str, HeadGrid]:
        return {"pcs": exact_deltas(lens, sequence, chosen, heads, max_rows=max_rows)}

    shape = (lens.geometry.n_layers, lens.geometry.n_heads)
    if method == "exact":
        per_example = run_phase("exact", exact_scores, lens.geometry.all_heads())["pcs"]
        exact = torch.ones(shape, dtype=torch.bool)
    else:
        estimated = run_phase("attribution", attribution, lens.geometry.all_heads())
        per_example = estimated["pcs"]
        exact = torch.zeros(shape, dtype=torch.bool)
    if method == "hybrid":
        candidates = hybrid_candidates(per_example.mean(dim=0), estimated["magnitude"].mean(dim=0), top_m)
        scored = run_phase("exact", exact_scores, candidates)["pcs"]
        for layer, head in candidates:
            exact[layer, head] = True
        per_example = torch.where(exact, scored, per_example)
    return PCSResult(per_example, exact, [e.example_id for e in examples], [e.user_id for e in examples], metadata)


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


def _check_arguments(lens: Lens, examples: Sequence[TokenizedExample], method: str, variant: str, max_rows: int) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if max_rows < 1:
        raise InputError(f"max_rows must be at least 1, got {max_rows}")
    if not examples:
        raise InputError("no examples to score")
    seen: set[str] = set()
    for example in examples:
        if example.example_id in seen:
            raise InputError(f"duplicate example id {example.example_id!r}")
        seen.add(example.example_id)
        example.check_fits(lens.geometry.n_ctx)
        control = VARIANTS[variant]
        if control is not None and getattr(example, control) is None:
            field = "prompt_no_profile" if variant == "profile-contrast" else "prompt_swapped"
            raise InputError(f"example {example.example_id!r}: the {variant} variant needs its {field} prompt ({control})")
