"""Measure how much the profile helps the default model on the bundled demo set (the data card's
numbers): mean reference NLL per token with and without the profile in each prompt format, and
the style-match rate of greedy output with and without the profile, per style kind.

Run: `.venv/bin/python scripts/measure_demo.py [--split dev] [--skip-greedy]`; prints Markdown.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from workbench.data.prompts import FORMATS, PromptConfig, build_prompt, tokenized_examples
from workbench.data.sources import DEMO_TASKS, load_examples
from workbench.data.styles import matches_style
from workbench.data.tasks import task_spec
from workbench.models import load_model


def reference_nll(lens, prompt: tuple[int, ...], target: tuple[int, ...]) -> float:
    """Mean negative log-likelihood (nats per token) of `target` after `prompt`."""
    logits = lens.forward(list(prompt) + list(target))[0, len(prompt) - 1 : -1].double()
    return float(-torch.log_softmax(logits, -1).gather(-1, torch.tensor(target)[:, None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="dev")
    parser.add_argument("--skip-greedy", action="store_true")
    args = parser.parse_args()
    lens = load_model(device="cpu")
    print(f"| task | format | NLL with profile | NLL without | difference | n |\n|---|---|---|---|---|---|")
    for task in DEMO_TASKS:
        examples = load_examples(None, task, args.split)
        for form in FORMATS:
            pairs = tokenized_examples(lens, examples, PromptConfig(format=form))
            with_profile = [reference_nll(lens, p.prompt_ids, p.target_ids) for p in pairs]
            without = [reference_nll(lens, p.no_profile_prompt_ids, p.target_ids) for p in pairs]
            mean_with, mean_without = sum(with_profile) / len(pairs), sum(without) / len(pairs)
            print(f"| {task} | {form} | {mean_with:.2f} | {mean_without:.2f} | {mean_with - mean_without:+.2f} | {len(pairs)} |")
    if args.skip_greedy:
        return
    from workbench.decoding import Greedy, generate

    print("\n| task | format | style kind | greedy style match with profile | without | n |\n|---|---|---|---|---|---|")
    for task in DEMO_TASKS:
        spec = task_spec(task)
        examples = load_examples(None, task, args.split)
        for form in FORMATS:
            config = PromptConfig(format=form)
            rates = {}
            for with_profile in (True, False):
                prompts = [build_prompt(lens, example, config, with_profile=with_profile) for example in examples]
                outputs = generate(lens, prompts, decoder=Greedy(), max_new_tokens=spec.max_new_tokens,
                                   stop_strings=("\n",) if form == "plain" else ())  # fmt: skip
                rates[with_profile] = [matches_style(e.style, out.text.strip()) for e, out in zip(examples, outputs)]
            by_kind = defaultdict(list)
            for example, hit, miss in zip(examples, rates[True], rates[False]):
                by_kind[example.style.split(":")[0]].append((hit, miss))
            for kind, hits in sorted(by_kind.items()) + [("all", [h for v in by_kind.values() for h in v])]:
                n = len(hits)
                print(f"| {task} | {form} | {kind} | {sum(h for h, _ in hits)}/{n} | {sum(m for _, m in hits)}/{n} | {n} |")


if __name__ == "__main__":
    main()
