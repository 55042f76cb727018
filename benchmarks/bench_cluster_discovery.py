"""Per-cluster discovery as the demo runs it (reading the global discovery's per-example
checkpoint) against scoring each cluster from scratch, in one command.

The demo's default discovery: hybrid PCS (standard variant, top 5, so 15 exact candidates) of the
embedded default model on the CPU, on the first `--examples` LaMP-4 `train` examples of the demo
set (tokenized as the demo does), whose users are clustered into `--clusters` clusters (MiniLM,
k-means, seed 0, as the demo's `clusters` stage). Timed in turn, each once: (1) the global discovery
with a checkpoint (the baseline: the demo's `discover-standard` stage), (2) per-cluster discovery
reading that checkpoint (the demo's `discover-clusters` stage), (3) per-cluster discovery from
scratch (no checkpoint). Reported: seconds, the ratio to (1), the (example, head) exact scores
each computed, whether (2) equals (3), and the load average before and after.

    .venv/bin/python benchmarks/bench_cluster_discovery.py [--examples 8] [--clusters 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--clusters", type=int, default=2)
    args = parser.parse_args()

    import transformers

    import workbench.scores.pcs as pcs_module
    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model
    from workbench.experiments.cluster_discovery import discover_cluster_heads
    from workbench.experiments.discovery import DiscoverSettings, discover_heads
    from workbench.users import cluster_examples

    transformers.utils.logging.disable_progress_bar()
    lens = load_model(device="cpu")
    train = load_examples(None, "LaMP-4", "train")[: args.examples]
    prompt = PromptConfig(profile_k=5, seed=0)
    examples = tokenized_examples(lens, train, prompt, partners=train)
    clusters = cluster_examples(train, task="LaMP-4", split="train", data="demo", k=args.clusters, seed=0).file
    settings = DiscoverSettings(prompt=prompt, method="hybrid", variant="standard", top_k=5)

    exact_scores = []
    real = pcs_module.example_scores

    def counted(*arguments):
        if arguments[4] == "exact":
            exact_scores.append(len(arguments[6]))
        return real(*arguments)

    pcs_module.example_scores = counted
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "checkpoint"
        runs = {
            "global discovery (baseline)": lambda: discover_heads(
                lens, examples, settings, checkpoint=checkpoint, progress=False
            ),
            "clusters from the global checkpoint": lambda: discover_cluster_heads(
                lens, examples, clusters, settings, checkpoint=checkpoint, progress=False
            ),
            "clusters from scratch": lambda: discover_cluster_heads(lens, examples, clusters, settings, progress=False),
        }
        for name, run in runs.items():
            exact_scores.clear()
            load = os.getloadavg()[0]
            start = time.perf_counter()
            results[name] = run()
            seconds = time.perf_counter() - start
            rows.append({"run": name, "seconds": round(seconds, 2), "exact_scores": sum(exact_scores),
                         "load_before": load, "load_after": os.getloadavg()[0]})  # fmt: skip
    baseline = rows[0]["seconds"]
    for row in rows:
        row["ratio_to_global"] = round(row["seconds"] / baseline, 3)
    reused, scratch = results["clusters from the global checkpoint"][0], results["clusters from scratch"][0]
    equal = all(torch.equal(a.per_example, b.per_example) and torch.equal(a.exact, b.exact) for a, b in zip(reused, scratch))
    print(json.dumps({"examples": len(examples), "cluster_sizes_users": clusters.sizes(), "equal": equal,
                      "torch_threads": torch.get_num_threads(), "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
