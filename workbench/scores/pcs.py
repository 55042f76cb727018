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

With `checkpoint`, every finished example is stored at once; a rerun with the same arguments
continues where it stopped and gives identical results, other arguments are refused.
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
from workbench.heads import REFERENCE_TOP_PERCENT, ranked_heads
from workbench.lens import Lens
from workbench.masks import Head
from workbench.scores.ablation import make_ablation
from workbench.scores.attribution import attribution_terms
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence
from workbench.scores.results import PCSResult
from workbench.tensor_types import HeadGrid

METHODS: tuple[str, ...] = ("exact", "attribution", "hybrid")
VARIANTS: dict[str, str | None] = {
    "standard": None,
    "profile-contrast": "no_profile_prompt_ids",
    "swap-contrast": "swapped_prompt_ids",
}


def default_top_m(n_total_heads: int) -> int:
    """Three times the reference's selection size, max(1, ⌊0.04 · heads⌋)."""
    return 3 * max(1, math.floor(REFERENCE_TOP_PERCENT * n_total_heads))


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
    max_rows: int = 64,
    seed: int = 0,
    task: str = "",
    progress: bool = True,
) -> PCSResult:
    """Score every head of `lens` on `examples`; see the module docstring for the options.

    `reference`: token sequences for mean ablation (default: the examples' prompt ‖ target).
    `top_m`: hybrid candidates re-scored exactly (default: `default_top_m`). `seed` seeds the
    result's bootstrap intervals (the scores themselves are deterministic).
    """
    _check_arguments(lens, examples, method, variant, max_rows)
    n_total = lens.geometry.n_total_heads
    top_m = default_top_m(n_total) if top_m is None else int(top_m)
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
        "screen": "estimate+magnitude" if method == "hybrid" else None,
    }
    store = None
    if checkpoint is not None:
        fingerprint = {
            **metadata,
            "geometry": vars(lens.geometry),
            "dtype": str(next(lens.bridge.parameters()).dtype),
            "max_rows": max_rows,
            "examples": digest(
                [
                    [e.example_id, e.user_id, e.prompt_ids, e.target_ids, e.no_profile_prompt_ids, e.swapped_prompt_ids]
                    for e in examples
                ]
            ),
            "reference": digest([list(r) for r in reference]) if ablation == "mean" else None,
        }
        store = CheckpointStore(checkpoint, fingerprint)

    def pass_over(phase: str, score: Callable[[TargetSequence], dict[str, HeadGrid]]) -> dict[str, torch.Tensor]:
        """Per example, the signed sum of `score["pcs"]` over the variant's sequences (other grids,
        magnitudes, are summed unsigned); stacked per name."""
        grids: dict[str, list[torch.Tensor]] = {}
        for example in tqdm(examples, desc=f"{phase} PCS", unit="example", disable=not progress):
            key = f"{phase}/{example.example_id}"
            if store is not None and key in store:
                finished = {name: torch.from_numpy(array) for name, array in store.load(key).items()}
            else:
                finished = {}
                for sign, sequence in variant_sequences(example, variant):
                    for name, grid in score(sequence).items():
                        finished[name] = finished.get(name, 0) + (sign * grid if name == "pcs" else grid)
                if store is not None:
                    store.save(key, {name: grid.numpy() for name, grid in finished.items()})
            for name, grid in finished.items():
                grids.setdefault(name, []).append(grid)
        return {name: torch.stack(stacked) for name, stacked in grids.items()}

    def attribution(sequence: TargetSequence) -> dict[str, HeadGrid]:
        estimate, magnitude = attribution_terms(lens, sequence, chosen)
        return {"pcs": estimate, "magnitude": magnitude}

    def exact_pass(heads: list[Head] | None = None) -> torch.Tensor:
        return pass_over("exact", lambda s: {"pcs": exact_deltas(lens, s, chosen, heads, max_rows=max_rows)})["pcs"]

    shape = (lens.geometry.n_layers, lens.geometry.n_heads)
    if method == "exact":
        per_example = exact_pass()
        exact = torch.ones(shape, dtype=torch.bool)
    else:
        estimated = pass_over("attribution", attribution)
        per_example = estimated["pcs"]
        exact = torch.zeros(shape, dtype=torch.bool)
    if method == "hybrid":
        candidates = hybrid_candidates(per_example.mean(dim=0), estimated["magnitude"].mean(dim=0), top_m)
        scored = exact_pass(candidates)
        for layer, head in candidates:
            exact[layer, head] = True
        per_example = torch.where(exact, scored, per_example)
    return PCSResult(per_example, exact, [e.example_id for e in examples], [e.user_id for e in examples], metadata)


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
