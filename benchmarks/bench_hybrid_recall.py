"""Hybrid PCS: how many of the exact top-K heads its candidates contain (issue 3).

The hybrid method scores `top_m = 3·K` candidates exactly, so its top-K equals the exact top-K
exactly when the candidates contain them. This script scores every head exactly (the truth) and
by attribution on two example sets, and reports the recall of the exact top-K (of the mean PCS)
for two candidate rules: the best `3·K` by attribution estimate (the earlier rule) and the rule
`score_heads` uses, half by estimate and half by attribution magnitude (`hybrid_candidates`).

- `synthetic`: the `bench_scores.py` examples (chat prompts of about 128 tokens, 16 target tokens);
- `demo`: the first `--demo-examples` LaMP-4 `train` examples of the shipped demo set (plain
  few-shot prompts), a set the rule was not designed on.

    .venv/bin/python benchmarks/bench_hybrid_recall.py [--examples 16] [--demo-examples 8] [--markdown]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_scores import synthetic_examples


def estimates(lens, examples, ablation, variant):
    """Mean attribution estimate and magnitude over `examples`, summed over the variant's sequences."""
    from workbench.scores.attribution import attribution_terms
    from workbench.scores.pcs import variant_sequences

    estimate = magnitude = 0
    for example in examples:
        for sign, sequence in variant_sequences(example, variant):
            e, m = attribution_terms(lens, sequence, ablation)
            estimate, magnitude = estimate + sign * e, magnitude + m
    return estimate / len(examples), magnitude / len(examples)


def recalls(exact, estimate, magnitude, ks):
    from workbench.heads import ranked_heads
    from workbench.scores.pcs import hybrid_candidates

    rows = []
    for k in ks:
        top = set(ranked_heads(exact)[:k])
        by_estimate = len(top & set(ranked_heads(estimate)[: 3 * k])) / k
        screened = len(top & set(hybrid_candidates(estimate, magnitude, 3 * k))) / k
        rows.append((k, 3 * k, by_estimate, screened))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--demo-examples", type=int, default=8)
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    import transformers

    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.models import load_model
    from workbench.scores import score_heads
    from workbench.scores.ablation import make_ablation

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    lens = load_model(device="cpu")
    zero = make_ablation(lens, "zero")
    sets = {
        "synthetic": synthetic_examples(lens, args.examples, 128, 16, 0),
        "demo": tokenized_examples(lens, load_examples(None, "LaMP-4", "train")[: args.demo_examples], PromptConfig(seed=0)),
    }
    table = []
    for name, examples in sets.items():
        start = time.perf_counter()
        exact = score_heads(lens, examples, method="exact", progress=True).mean()
        estimate, magnitude = estimates(lens, examples, zero, "standard")
        for k, m, by_estimate, screened in recalls(exact, estimate, magnitude, args.ks):
            table.append((name, len(examples), k, m, by_estimate, screened))
            print(
                f"{name:9s} n={len(examples):2d} K={k:2d} M={m:2d}  estimate only {by_estimate:.2f}  "
                f"estimate+magnitude {screened:.2f}   ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    if args.markdown:
        print("\n| examples | n | K | candidates M | recall, best M by estimate | recall, estimate + magnitude (used) |")
        print("|---|---|---|---|---|---|")
        for name, n, k, m, by_estimate, screened in table:
            print(f"| {name} | {n} | {k} | {m} | {by_estimate:.2f} | {screened:.2f} |")


if __name__ == "__main__":
    main()
