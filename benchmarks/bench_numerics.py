"""What thread-count invariance costs (docs/numerics.md), on the embedded default model.

`--what gradients`: attribution PCS of the first demo `train` example (about 290 tokens) and of a ~1k-token
sequence, the backward pass through `torch.autograd.grad` (its softmax nodes on all threads,
thread-count-dependent) against `workbench.engine.numerics.invariant_grad`.

`--what products`: the rule that runs small matrix products on one thread
(`numerics.serial_product`) against no rule (every product on every thread), for attribution of
the same two sequences, one-row restarts of the exact phase (one head in every third layer of the
demo example, as the hybrid verifies candidates) and greedy decoding (4 demo prompts, 16 new tokens).

Variants alternate in one process; best of --repeats.

    .venv/bin/python benchmarks/bench_numerics.py [--what gradients products] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def best_times(variants: dict[str, Callable[[], None]], task: Callable[[], object], repeats: int) -> dict[str, float]:
    """The best time of `task` after each variant's set-up, the variants alternating."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, set_up in variants.items():
            set_up()
            start = time.perf_counter()
            task()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", nargs="+", choices=["gradients", "products"], default=["gradients", "products"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import workbench.engine.numerics as numerics
    import workbench.scores.attribution as attribution
    from workbench.data.prompts import PromptConfig, build_prompt, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.decoding import generate
    from workbench.engine.models import load_model
    from workbench.scores.ablation import make_ablation
    from workbench.scores.exact import exact_deltas
    from workbench.scores.nll import TargetSequence

    lens = load_model(device="cpu")
    example = tokenized_examples(lens, load_examples(None, "LaMP-4", "train")[:1], PromptConfig())[0]
    short = TargetSequence(example.prompt_ids, example.target_ids)
    long = TargetSequence(tuple(list(example.prompt_ids) * 5)[:1000], example.target_ids)
    ablation = make_ablation(lens, "zero")
    print(f"{args.threads} torch threads, best of {args.repeats}, seconds")
    if "gradients" in args.what:
        backward = {
            "autograd.grad": lambda: setattr(
                attribution, "invariant_grad", lambda output, inputs: torch.autograd.grad(output, inputs)
            ),
            "invariant_grad": lambda: setattr(attribution, "invariant_grad", numerics.invariant_grad),
        }
        for name, sequence in ((f"{len(short.ids)} tokens", short), (f"{len(long.ids)} tokens", long)):
            best = best_times(backward, lambda s=sequence: attribution.attribution_terms(lens, s, ablation), args.repeats)
            ratio = best["invariant_grad"] / best["autograd.grad"]
            print(f"  attribution, {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()) + f"; ratio {ratio:.2f}")
    if "products" in args.what:
        rule = numerics.serial_product
        products = {"no rule": lambda: setattr(numerics, "serial_product", lambda *_: False),
                    "serial small products": lambda: setattr(numerics, "serial_product", rule)}  # fmt: skip
        prompts = [build_prompt(lens, e, PromptConfig()) for e in load_examples(None, "LaMP-4", "dev")[:4]]
        heads = [(layer, 0) for layer in range(0, lens.n_layers, 3)]
        tasks = {
            f"attribution, {len(short.ids)} tokens": lambda: attribution.attribution_terms(lens, short, ablation),
            f"attribution, {len(long.ids)} tokens": lambda: attribution.attribution_terms(lens, long, ablation),
            f"exact, {len(heads)} one-row restarts, {len(short.ids)} tokens": lambda: exact_deltas(lens, short, ablation, heads),
            "greedy, 4 prompts x 16 tokens": lambda: generate(lens, prompts, max_new_tokens=16),
        }
        for name, task in tasks.items():
            best = best_times(products, task, args.repeats)
            ratio = best["serial small products"] / best["no rule"]
            print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items()) + f"; ratio {ratio:.2f}")
        numerics.serial_product = rule


if __name__ == "__main__":
    main()
