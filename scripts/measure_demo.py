"""Measure how much the profile helps the default model on the bundled demo set (the data card's
numbers): mean reference NLL per token with and without the profile in each prompt format, and
the style-match rate of greedy output with and without the profile, per style kind.

Run: `.venv/bin/python scripts/measure_demo.py [--split dev] [--skip-nll] [--skip-greedy] [--limit N]
[--formats plain chat]`; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

from workbench.data.files import read_jsonl
from workbench.data.prompts import PromptConfig
from workbench.data.sources import DEMO_TASKS, load_examples
from workbench.engine.models import load_model
from workbench.experiments.evaluation import PREDICTIONS, EvalConfig, evaluate
from workbench.experiments.profile_effect import profile_nll

FORMATS = ("plain", "chat")  # the prompt formats the data card compares


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="dev")
    parser.add_argument("--skip-nll", action="store_true")
    parser.add_argument("--skip-greedy", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="Greedy on the first N examples of each task only.")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    args = parser.parse_args()
    lens = load_model(device="cpu")
    if not args.skip_nll:
        print_nll(lens, args.split)
    if not args.skip_greedy:
        print_style_match(lens, args.split, args.formats, args.limit)


def print_nll(lens, split: str) -> None:
    print("| task | format | NLL with profile | NLL without | difference | n |\n|---|---|---|---|---|---|")
    for task in DEMO_TASKS:
        examples = load_examples(None, task, split)
        for form in FORMATS:
            table = profile_nll(lens, examples, PromptConfig(format=form))
            mean_with, mean_without = table["nll_with_profile"].mean(), table["nll_without_profile"].mean()
            print(f"| {task} | {form} | {mean_with:.2f} | {mean_without:.2f} | {mean_with - mean_without:+.2f} | {len(table)} |")


def print_style_match(lens, split: str, formats: list[str], limit: int | None) -> None:
    print("\n| task | format | style kind | greedy style match with profile | without | n |\n|---|---|---|---|---|---|")
    for task in DEMO_TASKS:
        examples = load_examples(None, task, split)[:limit]
        for form in formats:
            hits = {}
            for k in (5, 0):  # k = 0 retrieves nothing: the prompt without the profile
                config = EvalConfig(task=task, split=split, model=lens.name, prompt=PromptConfig(format=form, profile_k=k))
                with tempfile.TemporaryDirectory() as out:
                    evaluate(lens, examples, config, out, progress=False)
                    hits[k] = [record["scores"]["style"] for _, record in read_jsonl(Path(out) / PREDICTIONS)]
            by_kind = defaultdict(list)
            for example, with_profile, without in zip(examples, hits[5], hits[0]):
                by_kind[example.style.split(":")[0]].append((with_profile, without))
            for kind, pairs in sorted(by_kind.items()) + [("all", [p for v in by_kind.values() for p in v])]:
                n = len(pairs)
                print(
                    f"| {task} | {form} | {kind} | {sum(w for w, _ in pairs):.0f}/{n} | {sum(o for _, o in pairs):.0f}/{n} | {n} |"
                )


if __name__ == "__main__":
    main()
