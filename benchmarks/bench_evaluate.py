"""Evaluation throughput (examples per second) on the demo set: greedy vs DPS (issue 5).

On the embedded default model (CPU), `workbench.experiments.evaluation.evaluate` over the first N demo dev examples
of one task (plain few-shot prompts, k = 5, the task's answer length), for greedy (the baseline)
and DPS with 10 suppressed heads (which heads does not matter for speed; a seeded random set).
Each variant runs --repeats times into a fresh output folder, alternating, best time kept; the
time includes prompt building, decoding, scoring and writing.

    .venv/bin/python benchmarks/bench_evaluate.py [--task LaMP-4] [--n 16] [--batch-size 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="LaMP-4")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch
    import transformers

    from workbench.data.sources import load_examples
    from workbench.decoding import DPS
    from workbench.engine.models import load_model
    from workbench.experiments.evaluation import EvalConfig, evaluate
    from workbench.experiments.metrics import meteor
    from workbench.heads import HeadWeights

    transformers.utils.logging.disable_progress_bar()
    lens = load_model(device="cpu")
    examples = load_examples(None, args.task, "dev")[: args.n]
    meteor("warm up", "WordNet loads once")  # keep the one-off WordNet load out of the timings
    folder = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    heads = folder / "heads.json"
    HeadWeights.random_heads(lens.geometry, 10, seed=0).save(heads)
    configs = {
        "greedy": EvalConfig(task=args.task, split="dev", model=lens.name, batch_size=args.batch_size),
        "dps": EvalConfig(
            task=args.task, split="dev", decoder=DPS(), model=lens.name, heads=str(heads), batch_size=args.batch_size
        ),
    }
    best = {name: float("inf") for name in configs}
    for repeat in range(args.repeats):
        for name, config in configs.items():
            start = time.perf_counter()
            evaluate(lens, examples, config, folder / f"{name}-{repeat}", progress=False)
            best[name] = min(best[name], time.perf_counter() - start)
    rate = {name: len(examples) / seconds for name, seconds in best.items()}
    print(
        f"task {args.task}, {len(examples)} demo dev examples, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print("| method | seconds | examples / s | time relative to greedy |\n|---|---|---|---|")
    for name in configs:
        print(f"| {name} | {best[name]:.1f} | {rate[name]:.2f} | {best[name] / best['greedy']:.2f}x |")


if __name__ == "__main__":
    main()
