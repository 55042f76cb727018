"""Restarts of the ΔNLL engine on the fast path (SDPA) against the bridge's blocks, in one process.

Exact PCS of every head of `--layers` (one restart per layer, its heads as rows) on one sequence of
random tokens per `--tokens` length, with the embedded default model on the CPU, run alternately
with the restarts on the lens's fast path (what `Lens.run` now does) and on the bridge's eager
blocks (the fast path refused for the run, as before); best of `--repeats`; the scores of both
ways are compared.

    .venv/bin/python benchmarks/bench_restarts.py [--tokens 300 1000] [--layers 0 15 25] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch


@contextmanager
def bridge_only():
    """Restarts on the bridge's blocks: the fast path refuses every tail (what the code did before)."""
    from workbench.engine.fast_path import FastPath

    refusal = FastPath.refusal
    FastPath.refusal = lambda self, mask, hooks: "benchmark: the bridge"  # type: ignore[method-assign]
    try:
        yield
    finally:
        FastPath.refusal = refusal  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 15, 25])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import transformers

    from workbench.engine.models import load_model
    from workbench.scores.ablation import make_ablation
    from workbench.scores.exact import exact_deltas
    from workbench.scores.nll import TargetSequence

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    lens = load_model(device="cpu")
    zero = make_ablation(lens, "zero")
    heads = [(layer, head) for layer in args.layers for head in range(lens.n_heads)]
    print("| tokens | heads (layers) | bridge s | fast path s | speed-up | max abs Δ of the scores (nats) | same top 5 |")
    print("|---|---|---|---|---|---|---|")
    for tokens in args.tokens:
        ids = torch.randint(100, 40000, (tokens,), generator=torch.Generator().manual_seed(tokens)).tolist()
        sequence = TargetSequence(tuple(ids[:-16]), tuple(ids[-16:]))
        seconds: dict[str, list[float]] = {"bridge": [], "fast": []}
        grids = {}
        for _ in range(args.repeats):
            for way in ("bridge", "fast"):
                start = time.perf_counter()
                if way == "bridge":
                    with bridge_only():
                        grids[way] = exact_deltas(lens, sequence, zero, heads)
                else:
                    grids[way] = exact_deltas(lens, sequence, zero, heads)
                seconds[way].append(time.perf_counter() - start)
        bridge, fast = min(seconds["bridge"]), min(seconds["fast"])
        difference = float((grids["bridge"] - grids["fast"]).nan_to_num().abs().max())
        top = [torch.topk(grids[way].nan_to_num(float("-inf")).flatten(), 5).indices.tolist() for way in ("bridge", "fast")]
        layers = " ".join(map(str, args.layers))
        print(
            f"| {tokens} | {len(heads)} ({layers}) | {bridge:.2f} | {fast:.2f} | **{bridge / fast:.2f}×** | {difference:.1e} | {top[0] == top[1]} |"
        )


if __name__ == "__main__":
    main()
