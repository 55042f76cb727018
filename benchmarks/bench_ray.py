"""A PCS discovery in one process against the same discovery on 1 and 2 Ray workers, in one command.

The discovery is `score_heads(method="hybrid", top_k=10)` on the first `--examples` LaMP-4 `train`
examples of the demo set (tokenized as `workbench discover` does) with the embedded default model on
the CPU. It runs in this process with one torch thread, then on a fresh local Ray instance with 1
worker and with 2 workers (one CPU and one torch thread each); `--repeats` repeats the three in
turn, so that a changing machine load hits all of them. Reported per run: the scan's seconds and
their ratio to the single process's, Ray's start-up split into `ray.init` and the workers' model
loads (until every worker has answered), the stop, the load average before and after, and whether
the scores equal the single process's bit for bit.

    .venv/bin/python benchmarks/bench_ray.py [--examples 6] [--repeats 1]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import transformers

    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model
    from workbench.execution.ray import RayWorkers
    from workbench.scores import score_heads

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    start = time.perf_counter()
    lens = load_model(device="cpu")
    model_load = time.perf_counter() - start
    examples = tokenized_examples(lens, load_examples(None, "LaMP-4", "train"), PromptConfig(seed=0))[: args.examples]
    scan = functools.partial(score_heads, lens, examples, method="hybrid", top_k=10, progress=False)
    loader = functools.partial(load_model, None)
    rows, reference = [], None
    for repeat in range(args.repeats):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        result = scan()
        single = time.perf_counter() - start
        reference = result.per_example if reference is None else reference
        rows.append({"run": "single process", "repeat": repeat, "scan_s": single, "ratio": 1.0,
                     "equal": bool(torch.equal(result.per_example, reference)), "load_before": load,
                     "load_after": os.getloadavg()[0]})  # fmt: skip
        for n_workers in (1, 2):
            load = os.getloadavg()[0]
            start = time.perf_counter()
            with RayWorkers(loader, workers=n_workers, cpus_per_worker=1) as workers:
                init = time.perf_counter() - start
                workers._ray.get([actor.pid.remote() for actor in workers.actors])  # every model loaded
                ready = time.perf_counter() - start - init
                start = time.perf_counter()
                result = scan(workers=workers)
                seconds = time.perf_counter() - start
                start = time.perf_counter()
            stop = time.perf_counter() - start
            rows.append({"run": f"Ray, {n_workers} worker{'s' * (n_workers > 1)}", "repeat": repeat, "scan_s": seconds,
                         "ratio": seconds / single, "equal": bool(torch.equal(result.per_example, reference)),
                         "ray_init_s": init, "workers_ready_s": ready, "ray_stop_s": stop, "load_before": load,
                         "load_after": os.getloadavg()[0]})  # fmt: skip
    print(json.dumps({"examples": args.examples, "model_load_in_this_process_s": model_load, "rows": rows}, indent=1))
    print(f"\n{'run':<18} {'scan s':>8} {'÷ single':>9} {'equal':>6} {'ray.init s':>11} {'workers ready s':>16} {'load':>10}")
    for row in rows:
        extra = f"{row['ray_init_s']:>11.1f} {row['workers_ready_s']:>16.1f}" if "ray_init_s" in row else f"{'':>11} {'':>16}"
        load = f"{row['load_before']:.1f}-{row['load_after']:.1f}"
        print(f"{row['run']:<18} {row['scan_s']:>8.1f} {row['ratio']:>9.2f} {row['equal']!s:>6} {extra} {load:>10}")


if __name__ == "__main__":
    main()
