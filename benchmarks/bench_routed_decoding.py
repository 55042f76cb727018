"""Routed DPS decoding: every prompt its own head weights, decoded in one batch or one at a time.

Soft routing gives nearly every user their own mix of cluster head weights. On the embedded
default model (CPU), the first N demo dev prompts of one task (plain few-shot prompts, k = 5) are
decoded with DPS, prompt i suppressing its own weights (a seeded random mix of 4 random 10-head
cluster maps):

- `per prompt`: one `generate` call per prompt with `DPS(heads=w_i)` (what routing costs when a
  loop can apply only one mask per row group);
- `routed`: one `generate_routed` call, batches of --batch-size with a mask row per prompt.

Both variants run --repeats times, alternating, best time kept; their tokens are checked equal.

    .venv/bin/python benchmarks/bench_routed_decoding.py [--task LaMP-4] [--n 16] [--batch-size 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="LaMP-4")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch
    import transformers

    from workbench.data.prompts import PromptConfig, build_prompt
    from workbench.data.sources import load_examples
    from workbench.decoding import DPS, generate
    from workbench.decoding.routed import generate_routed
    from workbench.engine.models import load_model
    from workbench.heads import HeadWeights
    from workbench.users import routed_head_weights

    transformers.utils.logging.disable_progress_bar()
    lens = load_model(device="cpu")
    examples = load_examples(None, args.task, "dev")[: args.n]
    prompts = [build_prompt(lens, e, PromptConfig(), answer_room=args.new_tokens) for e in examples]
    clusters = [HeadWeights.random_heads(lens.geometry, 10, seed=seed) for seed in range(4)]
    rng = np.random.default_rng(0)
    routes = [routed_head_weights(rng.dirichlet(np.ones(4)), clusters) for _ in prompts]
    options = {"max_new_tokens": args.new_tokens, "batch_size": args.batch_size}

    def per_prompt():
        return [generate(lens, [p], DPS(w), **options)[0] for p, w in zip(prompts, routes)]

    def routed():
        return generate_routed(lens, prompts, DPS(), routes, **options)

    best, tokens = {}, {}
    for _ in range(args.repeats):
        for name, run in (("per prompt", per_prompt), ("routed", routed)):
            start = time.perf_counter()
            generations = run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
            tokens[name] = [g.token_ids for g in generations]
    same = sum(a == b for a, b in zip(tokens["per prompt"], tokens["routed"]))
    print(f"task {args.task}, {len(prompts)} demo dev prompts, {args.new_tokens} new tokens, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"identical token sequences: {same}/{len(prompts)}")
    print("| decoding | seconds | time relative to per prompt |")
    print("|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.1f} | {seconds / best['per prompt']:.2f}x |")


if __name__ == "__main__":
    main()
