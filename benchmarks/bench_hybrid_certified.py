"""Certified and raced hybrid PCS against today's hybrid: time, exact work and recall of the exact top-K.

In one process, on the embedded default model, the first `--examples` LaMP-4 `train` examples of
the demo set (tokenized as `workbench discover` does; or `--data DIR` in LaMP-4 schema with
`--profile-k`), runs alternate (hybrid, certified, raced, certified+raced, hybrid, ...) so that a
changing machine load hits all. Each reports its wall time, the time inside the exact ablations,
the exact work (head ablations run, and the same weighted by the layers each reruns,
Σ (L − l) / L, a cost measure the machine's load does not move), the candidate count, the
certificate's bound, and the recall of the exact top-K: the exact PCS of every head on every
example is computed once and cached under `--truth-cache` (`bench_hybrid_recall.sequence_grids`).

    .venv/bin/python benchmarks/bench_hybrid_certified.py [--examples 2] [--miss-rate 0.1] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ("hybrid", "certified", "raced", "certified+raced")


def load(args):
    import transformers

    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model

    transformers.utils.logging.disable_progress_bar()
    lens = load_model(device="cpu")
    prompt = PromptConfig(seed=0, profile_k=args.profile_k)
    data = None if args.data is None else str(args.data)
    examples = tokenized_examples(lens, load_examples(data, "LaMP-4", "train"), prompt)[: args.examples]
    return lens, examples


def exact_truth(lens, examples, cache: Path) -> torch.Tensor:
    """The exact mean PCS (standard variant, zero ablation) of every head, cached per sequence."""
    from bench_hybrid_recall import sequence_grids

    from workbench.scores.ablation import make_ablation
    from workbench.scores.pcs import variant_sequences

    cache.mkdir(parents=True, exist_ok=True)
    zero = make_ablation(lens, "zero")
    grids = [
        sequence_grids(lens, sequence, zero, cache)["exact"] for e in examples for _, sequence in variant_sequences(e, "standard")
    ]
    return torch.stack(grids).mean(dim=0)


def timed_run(lens, examples, variant: str, args) -> dict:
    import workbench.scores.pcs as pcs
    from workbench.scores.ranking import ranked_heads

    spent = {"seconds": 0.0, "heads": 0, "weighted": 0.0}
    original = pcs.exact_deltas
    n_layers = lens.geometry.n_layers

    def counted(lens_, sequence, ablation, heads, **kwargs):
        start = time.perf_counter()
        try:
            return original(lens_, sequence, ablation, heads, **kwargs)
        finally:
            spent["seconds"] += time.perf_counter() - start
            spent["heads"] += len(heads)
            spent["weighted"] += sum((n_layers - layer) / n_layers for layer, _ in heads)

    options = {
        "certified": {"miss_rate": args.miss_rate},
        "raced": {"racing": True},
        "certified+raced": {"miss_rate": args.miss_rate, "racing": True},
    }.get(variant, {})
    pcs.exact_deltas = counted
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        result = pcs.score_heads(lens, examples, method="hybrid", top_k=args.top_k, seed=args.seed, progress=False, **options)
    finally:
        pcs.exact_deltas = original
    seconds = time.perf_counter() - start
    certificate = result.metadata.get("certificate") or {}
    return {
        "variant": variant,
        "seconds": seconds,
        "exact_seconds": spent["seconds"],
        "head_ablations": spent["heads"],
        "weighted_ablations": spent["weighted"],
        "exact_heads": int(result.exact.sum()),
        "candidates": certificate.get("candidates", result.metadata.get("top_m")),
        "bound": certificate.get("bound"),
        "sampled": len(certificate.get("sample", [])),
        "misses": certificate.get("misses"),
        "top": ranked_heads(result.mean())[: args.top_k],
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--miss-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--data", type=Path, default=None, help="a LaMP-4-schema folder (default: the demo set)")
    parser.add_argument("--profile-k", type=int, default=5)
    parser.add_argument("--truth-cache", type=Path, default=Path(tempfile.gettempdir()) / "workbench-hybrid-recall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lens, examples = load(args)
    tokens = [len(e.prompt_ids) + len(e.target_ids) for e in examples]
    print(f"{len(examples)} examples, {tokens} tokens; exact truth ...", flush=True)
    start = time.perf_counter()
    truth = exact_truth(lens, examples, args.truth_cache)
    print(f"exact truth in {time.perf_counter() - start:.0f} s (0 when cached)", flush=True)
    from workbench.scores.ranking import ranked_heads

    best = set(ranked_heads(truth)[: args.top_k])
    runs = []
    for _ in range(args.repeats):
        for variant in args.variants:
            run = timed_run(lens, examples, variant, args)
            run["recall"] = len(best & {tuple(h) for h in run["top"]}) / args.top_k
            runs.append(run)
            print(json.dumps(run), flush=True)
    print(markdown(args, tokens, runs))


def markdown(args, tokens: list[int], runs: list[dict]) -> str:
    lines = [
        f"{len(tokens)} examples ({min(tokens)}–{max(tokens)} tokens), top-K {args.top_k}, miss-rate target {args.miss_rate}, "
        f"{args.threads} torch thread(s)",
        "",
        "| run | variant | s | exact s | head ablations | weighted | exact heads | candidates | bound (sampled, misses) | "
        "recall@K | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, run in enumerate(runs, start=1):
        bound = "–" if run["bound"] is None else f"{run['bound']:.3f} ({run['sampled']}, {run['misses']})"
        lines.append(
            f"| {index} | {run['variant']} | {run['seconds']:.0f} | {run['exact_seconds']:.0f} | {run['head_ablations']} | "
            f"{run['weighted_ablations']:.0f} | {run['exact_heads']} | {run['candidates']} | {bound} | {run['recall']:.2f} | "
            f"{run['load_before']:.1f} / {run['load_after']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
