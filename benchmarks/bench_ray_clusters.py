"""Per-cluster discovery on 2 Ray workers: the clusters one after another against all together, in one command.

Three clusters of 3, 2 and 1 examples (the first 6 demo LaMP-4 `train` examples, tokenized as
`workbench discover` does) are scanned with the hybrid method (`--top-k`, so 3 x top-K exact
candidates per cluster) by the embedded default model on the CPU, on one local Ray instance with
2 workers (one CPU and one torch thread each): once cluster after cluster (`score_heads` per
cluster on the workers: a phase of a cluster with fewer examples than workers leaves a worker
idle, and every cluster waits twice), once all together (`score_scans`, what `discover --clusters
--ray` runs: one fan-out per phase). `--repeats` alternates the two. Reported per run: seconds,
the ratio to the first way's, the load average before and after, and whether the scores equal
the first way's bit for bit.

    .venv/bin/python benchmarks/bench_ray_clusters.py [--top-k 5] [--repeats 1]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import torch

SIZES = (3, 2, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import transformers

    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model
    from workbench.execution.ray import RayWorkers
    from workbench.scores import score_heads
    from workbench.scores.pcs import PCSScan, ScanOptions, score_scans

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    lens = load_model(device="cpu")
    examples = tokenized_examples(lens, load_examples(None, "LaMP-4", "train"), PromptConfig(seed=0))[: sum(SIZES)]
    starts = [sum(SIZES[:i]) for i in range(len(SIZES))]
    groups = [examples[start : start + size] for start, size in zip(starts, SIZES)]
    options = ScanOptions(method="hybrid", top_k=args.top_k)
    rows, reference = [], None
    with RayWorkers(functools.partial(load_model, None), workers=2) as workers:
        ways = {
            "clusters one after another": lambda: [
                score_heads(lens, group, options, progress=False, workers=workers) for group in groups
            ],
            "all clusters together": lambda: score_scans(
                [PCSScan(lens, g, options, progress=False, workers=workers) for g in groups], groups
            ),
        }
        for repeat in range(args.repeats):
            for name, run in ways.items():
                load = os.getloadavg()[0]
                start = time.perf_counter()
                results = run()
                seconds = time.perf_counter() - start
                scores = [result.per_example for result in results]
                reference = scores if reference is None else reference
                rows.append({"run": name, "repeat": repeat, "seconds": seconds, "load_before": load,
                             "load_after": os.getloadavg()[0],
                             "equal": all(torch.equal(a, b) for a, b in zip(scores, reference))})  # fmt: skip
    for repeat in range(args.repeats):
        first = next(row["seconds"] for row in rows if row["repeat"] == repeat)
        for row in rows:
            if row["repeat"] == repeat:
                row["ratio"] = row["seconds"] / first
    print(json.dumps({"sizes": SIZES, "top_k": args.top_k, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
