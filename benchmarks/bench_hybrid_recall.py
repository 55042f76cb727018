"""Hybrid PCS: recall of the exact top-K against the number (and cost) of exactly re-scored candidates.

The hybrid method scores every head by attribution, then re-scores M candidates exactly; its top-K
equals the exact top-K exactly when the candidates contain it. This script scores every head
exactly (the truth) and by attribution, per sequence, and reports for several candidate rules the
recall of the exact top-K (of the mean PCS over examples) as M grows, with the cost of exactly
scoring the candidates (a head of layer l reruns layers l..L-1: `Σ (L − l) / L` forward passes per
sequence). Rules:

- `estimate`: the best M by mean attribution estimate;
- `magnitude`: the largest M by mean attribution magnitude `Σ |(z_ref − z) ⊙ ∂NLL/∂z|`;
- `half`: ⌈M/2⌉ by estimate, the rest by magnitude (`workbench.scores.pcs.hybrid_candidates`).

With `--estimator NAME` another estimator of `workbench.scores.estimators` gives the estimate and
magnitude the rules rank by (cached beside the exact truth, which is shared). With `--race
CONFIDENCE` every rule's candidates are also raced (`workbench discover --racing`) on the cached
per-example truth: which heads the race would have stopped re-scoring, its recall and its cost.

Sets: `synthetic` (the `bench_scores.py` chat examples, about 128 prompt and 16 target tokens, with a
short no-profile request as control) and `demo` (the first `--demo-examples` LaMP-4 `train`
examples of the shipped demo set, tokenized as `workbench discover` does, plain few-shot prompts
of about 290 tokens); with `--data DIR --sets data`, the first `--demo-examples` `train` examples of
a LaMP-4-schema folder (e.g. the commit-message set of `workbench/data/commits/`) with the ~1k-token
recipe of its data card (`long_prompts.py`: `--profile-k 24 --max-prompt-tokens 1024`). Variants: standard and
profile-contrast (`--variants`). Per-sequence grids
are cached in `--cache` by content, so a rerun (or another variant) costs only what is missing.

    .venv/bin/python benchmarks/bench_hybrid_recall.py [--examples 16] [--demo-examples 16] [--markdown]
        [--sets synthetic demo data --data DIR] [--estimator target-exact] [--race 0.95]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
import time
from pathlib import Path

import long_prompts
import torch
from bench_scores import synthetic_examples

RULES = ("estimate", "magnitude", "half")
MULTIPLES = (1, 1.5, 2, 3, 4, 6)


def sequence_grids(
    lens, sequence, ablation, cache: Path, *, compute: bool = True, estimator: str = "attribution"
) -> dict[str, torch.Tensor]:
    """Exact ΔNLL of every head, attribution estimate and magnitude of one sequence (cached;
    with `compute=False` a missing entry raises FileNotFoundError). Another `estimator`
    (`workbench.scores.estimators`) replaces the estimate and magnitude (cached beside the entry)."""
    from workbench.scores.attribution import attribution_terms
    from workbench.scores.exact import exact_deltas

    key = hashlib.sha256(json.dumps([lens.name, ablation.name, list(sequence.ids), sequence.prompt_len]).encode()).hexdigest()[
        :24
    ]
    path = cache / f"{key}.pt"
    if path.exists():
        stored = torch.load(path)
        grids = {name: stored[name] for name in ("exact", "estimate", "magnitude")}
    elif not compute:
        raise FileNotFoundError(path)
    else:
        start = time.perf_counter()
        estimate, magnitude = attribution_terms(lens, sequence, ablation)
        grids = {"exact": exact_deltas(lens, sequence, ablation), "estimate": estimate, "magnitude": magnitude}
        torch.save(grids, path)
        print(f"  {len(sequence.ids)} tokens scored in {time.perf_counter() - start:.0f} s", flush=True)
    if estimator != "attribution":
        grids.update(other_estimate(lens, sequence, ablation, estimator, cache / f"{key}-{estimator}.pt"))
    return grids


def other_estimate(lens, sequence, ablation, estimator: str, path: Path) -> dict[str, torch.Tensor]:
    """`estimator`'s estimate and magnitude of one sequence (cached in `path`)."""
    from workbench.scores.estimators import Estimator, estimate_heads

    if not path.exists():
        start = time.perf_counter()
        found = estimate_heads(lens, sequence, ablation, Estimator(estimator))
        torch.save({"estimate": found.estimate, "magnitude": found.magnitude}, path)
        print(f"  {estimator}: {len(sequence.ids)} tokens in {time.perf_counter() - start:.1f} s", flush=True)
    return torch.load(path)


def variant_grids(lens, examples, variant, ablation, cache: Path, estimator: str = "attribution") -> dict[str, torch.Tensor]:
    """Per example (`[example, layer, head]`): the variant's signed exact and estimate sums and
    unsigned magnitudes."""
    from workbench.scores.pcs import variant_sequences

    rows: dict[str, list[torch.Tensor]] = {}
    for example in examples:
        totals: dict[str, torch.Tensor] = {}
        for sign, sequence in variant_sequences(example, variant):
            grids = sequence_grids(lens, sequence, ablation, cache, estimator=estimator)
            for name, grid in grids.items():
                totals[name] = totals.get(name, 0) + (grid if name == "magnitude" else sign * grid)
        for name, total in totals.items():
            rows.setdefault(name, []).append(total)
    return {name: torch.stack(values) for name, values in rows.items()}


def candidates(rule: str, estimate: torch.Tensor, magnitude: torch.Tensor, m: int) -> list[tuple[int, int]]:
    from workbench.scores.pcs import hybrid_candidates
    from workbench.scores.ranking import ranked_heads

    if rule == "estimate":
        return ranked_heads(estimate)[:m]
    if rule == "magnitude":
        return ranked_heads(magnitude)[:m]
    return hybrid_candidates(estimate, magnitude, m)


def curves(grids: dict[str, torch.Tensor], ks: list[int], race_confidence: float | None = None) -> list[dict]:
    """Per K, rule and M = multiple·K: recall of the exact top-K and the exact phase's cost in
    forward passes per sequence; plus the smallest M reaching recall 0.9 and 1.0 per rule. With
    `race_confidence`, also what the raced exact phase (`workbench.scores.racing`) would have
    scored of the same candidates on these examples, replayed from the cached per-example truth."""
    from workbench.scores.ranking import ranked_heads

    means = {name: grid.mean(dim=0) for name, grid in grids.items()}
    n_layers = means["exact"].shape[0]
    rows = []
    for k in ks:
        top = set(ranked_heads(means["exact"])[:k])
        for rule in RULES:
            recall_at = {}
            for m in range(1, means["exact"].numel() + 1):
                recall_at[m] = len(top & set(candidates(rule, means["estimate"], means["magnitude"], m))) / k
                if recall_at[m] == 1.0:
                    break
            reach = {goal: min((m for m, r in recall_at.items() if r >= goal), default=None) for goal in (0.9, 1.0)}
            for multiple in MULTIPLES:
                m = math.ceil(multiple * k)
                chosen = candidates(rule, means["estimate"], means["magnitude"], m)
                row = {
                    "k": k,
                    "rule": rule,
                    "multiple": multiple,
                    "m": m,
                    "recall": len(top & set(chosen)) / k,
                    "cost": sum(n_layers - layer for layer, _ in chosen) / n_layers,
                    **{f"m_{g}": v for g, v in reach.items()},
                }
                if race_confidence is not None:
                    row["raced_recall"], row["raced_cost"] = replayed_race(grids["exact"], chosen, top, race_confidence)
                rows.append(row)
    return rows


def replayed_race(exact: torch.Tensor, chosen: list[tuple[int, int]], top: set, confidence: float) -> tuple[float, float]:
    """Recall of the exact top-K and forwards per sequence of racing `chosen` over the examples of
    `exact` (`[example, layer, head]`), each head's score read from the truth instead of computed."""
    from workbench.scores.racing import race, race_order
    from workbench.scores.ranking import ranked_heads

    n, n_layers = exact.shape[0], exact.shape[1]
    k = len(top)
    counts = race(chosen, n, top_k=min(k, len(chosen)), confidence=confidence, seed=0, score=lambda example, _: exact[example])
    order = race_order(n, 0)  # the examples a head raced on are the first of this order
    raced = torch.full_like(exact[0], -math.inf)
    for head, count in counts.items():
        raced[head] = exact[order[:count], head[0], head[1]].mean()
    found = set(ranked_heads(raced)[:k])
    cost = sum((n_layers - layer) * counts[(layer, head)] for layer, head in chosen) / n_layers / n
    return len(found & top) / k, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--demo-examples", type=int, default=16)
    parser.add_argument("--variants", nargs="+", default=["standard", "profile-contrast"])
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "workbench-hybrid-recall")
    parser.add_argument("--json", type=Path, help="Also write every curve point to this file.")
    parser.add_argument("--sets", nargs="+", default=["synthetic", "demo"], choices=["synthetic", "demo", "data"])
    parser.add_argument("--data", default=None, help="a LaMP-4-schema folder for the `data` set")
    long_prompts.add_options(parser)
    parser.add_argument("--estimator", default="attribution", help="what ranks the candidates (workbench.scores.estimators)")
    parser.add_argument(
        "--race",
        type=float,
        default=None,
        metavar="CONFIDENCE",
        help="also replay the raced exact phase at this confidence from the cached truth",
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    import transformers

    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model
    from workbench.scores.ablation import make_ablation

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    lens = load_model(device="cpu")
    zero = make_ablation(lens, "zero")
    makers = {
        "synthetic": lambda: synthetic_examples(lens, args.examples, 128, 16, 0),
        # as `workbench discover --limit N` does: swap partners drawn among all examples, then the first N
        "demo": lambda: tokenized_examples(lens, load_examples(None, "LaMP-4", "train"), PromptConfig(seed=0))[
            : args.demo_examples
        ],
        "data": lambda: long_prompts.folder_examples(
            lens, args.data, args.demo_examples, long_prompts.prompt_config(args.profile_k, args.max_prompt_tokens)
        ),
    }
    if "data" in args.sets and args.data is None:
        parser.error("the data set needs --data DIR")
    sets = {name: makers[name]() for name in args.sets}
    table = []
    for name, examples in sets.items():
        for variant in args.variants:
            print(f"{name} / {variant}: {len(examples)} examples", flush=True)
            for row in curves(variant_grids(lens, examples, variant, zero, args.cache, args.estimator), args.ks, args.race):
                table.append({"set": name, "variant": variant, "n": len(examples), **row})
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    for row in table:
        print(json.dumps(row))
    if args.markdown:
        print(markdown(table))
        if args.race is not None:
            print(raced_markdown(table, args.race))


def markdown(table: list[dict]) -> str:
    lines = [
        "| set | variant | K | rule | recall at M = K, 1.5K, 2K, 3K, 4K, 6K | exact cost at 2K / 3K (forwards per sequence) | smallest M for recall 0.9 / 1.0 |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in table:
        groups.setdefault((row["set"], row["variant"], row["k"], row["rule"]), []).append(row)
    for (name, variant, k, rule), rows in groups.items():
        by_multiple = {row["multiple"]: row for row in rows}
        recalls = ", ".join(f"{row['recall']:.2f}" for row in rows)
        costs = f"{by_multiple[2]['cost']:.1f} / {by_multiple[3]['cost']:.1f}"
        lines.append(f"| {name} | {variant} | {k} | {rule} | {recalls} | {costs} | {rows[0]['m_0.9']} / {rows[0]['m_1.0']} |")
    return "\n".join(lines)


def raced_markdown(table: list[dict], confidence: float) -> str:
    lines = [
        f"| set | variant | K | rule | M | recall | raced recall (confidence {confidence}) | forwards per sequence | raced |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(f"| {row['set']} | {row['variant']} | {row['k']} | {row['rule']} | {row['m']} | {row['recall']:.2f} "
                     f"| {row['raced_recall']:.2f} | {row['cost']:.1f} | {row['raced_cost']:.1f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
