"""What thread-count-invariant gradients cost (docs/numerics.md).

Attribution PCS of one demo example (about 224 tokens) and of a ~1k-token sequence on the
embedded default model: the backward pass through `torch.autograd.grad` (its softmax nodes on all
threads, thread-count-dependent) against `workbench.engine.numerics.invariant_grad` (those nodes on one
thread, bit-equal at any thread count). Variants alternate in one process; best of --repeats.

    .venv/bin/python benchmarks/bench_numerics.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import workbench.scores.attribution as attribution
    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model
    from workbench.engine.numerics import invariant_grad
    from workbench.scores.ablation import make_ablation
    from workbench.scores.nll import TargetSequence

    lens = load_model(device="cpu")
    example = tokenized_examples(lens, load_examples(None, "LaMP-4", "train")[:1], PromptConfig())[0]
    short = TargetSequence(example.prompt_ids, example.target_ids)
    long = TargetSequence(tuple(list(example.prompt_ids) * 5)[:1000], example.target_ids)
    ablation = make_ablation(lens, "zero")
    backward = {"autograd.grad": lambda output, inputs: torch.autograd.grad(output, inputs), "invariant_grad": invariant_grad}
    print(f"{args.threads} torch threads, best of {args.repeats}, seconds per attribution pass")
    for name, sequence in (("224 tokens", short), ("1000 tokens", long)):
        best = dict.fromkeys(backward, float("inf"))
        for _ in range(args.repeats):
            for variant, grad in backward.items():
                attribution.invariant_grad = grad
                start = time.perf_counter()
                attribution.attribution_terms(lens, sequence, ablation)
                best[variant] = min(best[variant], time.perf_counter() - start)
        ratio = best["invariant_grad"] / best["autograd.grad"]
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()) + f"; ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
