"""Measure the built commit set (the numbers of `workbench/data/commits/DATA_CARD.md`): sizes,
prompt token lengths with the embedded model's tokenizer under the default prompt config and the
~1k-token recipe, the area habit of two model-free guesses, and how much the profile lowers the
default model's reference NLL on `dev` (the slow part: three forward passes per question).

Run: `.venv/bin/python scripts/measure_commits.py [--data workbench/data/commits/LaMP-4] [--skip-nll]`;
prints Markdown tables.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from workbench.data.prompts import PromptConfig, build_prompt
from workbench.data.retrieval import retrieve
from workbench.data.sources import load_examples
from workbench.experiments.metrics import area_match, area_prefix
from workbench.models import load_model
from workbench.profile_effect import profile_nll

SPLITS = ("train", "dev")
PROMPT_CONFIGS = {
    "default (plain, k = 5, BM25)": PromptConfig(),
    "~1k recipe (k = 24, max_prompt_tokens = 1024)": PromptConfig(profile_k=24, max_prompt_tokens=1024),
}


def spread(values) -> str:
    low, p10, median, p90, high = np.percentile(values, [0, 10, 50, 90, 100])
    return f"{low:.0f} / {p10:.0f} / {median:.0f} / {p90:.0f} / {high:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("workbench/data/commits/LaMP-4"))
    parser.add_argument("--skip-nll", action="store_true")
    args = parser.parse_args()
    examples = {split: load_examples(args.data, "LaMP-4", split) for split in SPLITS}
    lens = load_model(device="cpu")
    print_sizes(examples, lens)
    print_prompt_lengths(examples, lens)
    print_area_guesses(examples)
    if not args.skip_nll:
        print_nll(examples["dev"], lens)


def print_sizes(examples, lens) -> None:
    print("| split | users | questions | profile items (min / p10 / median / p90 / max) |\n|---|---|---|---|")
    for split, rows in examples.items():
        sizes = [len(example.profile) for example in rows]
        print(f"| {split} | {len({e.user_id for e in rows})} | {len(rows)} | {spread(sizes)} |")
    everything = [e for rows in examples.values() for e in rows]
    items = {(item["text"], item["title"]) for e in everything for item in e.profile}
    bodies = [e.input.partition("article: ")[2] for e in everything] + [text for text, _ in items]
    subjects = [e.output for e in everything] + [title for _, title in items]
    print("\n| text (questions and distinct profile items) | n | characters | tokens |\n|---|---|---|---|")
    for name, texts in (("body (the article)", bodies), ("subject (the headline)", subjects)):
        tokens = [len(lens.encode(text)) for text in texts]
        print(f"| {name} | {len(texts)} | {spread([len(t) for t in texts])} | {spread(tokens)} |")
    with_areas = sum(area_prefix(text) is not None for text in subjects)
    print(f"\nSubjects with an `area:` prefix: {with_areas} of {len(subjects)}.")
    tops = Counter(sorted(area_prefix(e.output) or ["(none)"])[0].split("/")[0] for e in everything)
    print("Gold areas by first path element: " + ", ".join(f"{name} {n}" for name, n in tops.most_common(8)))


def print_prompt_lengths(examples, lens) -> None:
    print("\n| prompt config | split | prompt tokens (min / p10 / median / p90 / max) | in 900-1100 |\n|---|---|---|---|")
    for name, config in PROMPT_CONFIGS.items():
        for split, rows in examples.items():
            lengths = [len(build_prompt(lens, example, config)) for example in rows]
            near = sum(900 <= n <= 1100 for n in lengths)
            print(f"| {name} | {split} | {spread(lengths)} | {near} / {len(lengths)} |")
    bare = [len(build_prompt(lens, e, PromptConfig(), with_profile=False)) for rows in examples.values() for e in rows]
    print(f"| without profile | both | {spread(bare)} | |")


def print_area_guesses(examples) -> None:
    """Two guesses that use no model: the user's most frequent area set, and the area set of the
    profile item BM25 ranks first for the question."""
    print("\n| split | guess | area match |\n|---|---|---|")
    for split, rows in examples.items():
        guesses = {
            "the user's most frequent areas": [
                Counter(str(item["title"]).partition(": ")[0] for item in e.profile).most_common(1)[0][0] + ": x" for e in rows
            ],
            "areas of the BM25 top profile item": [str(retrieve(e, 1)[0]["title"]) for e in rows],
        }
        for name, predictions in guesses.items():
            scores = [area_match(p, e.output) for p, e in zip(predictions, rows)]
            defined = [s for s in scores if s is not None]
            print(f"| {split} | {name} | {np.mean(defined):.2f} ({len(defined)} golds with areas) |")


def print_nll(examples, lens) -> None:
    table = profile_nll(lens, examples, PromptConfig())
    columns = ("nll_with_profile", "nll_without_profile", "nll_swapped_profile")
    print("\n| split | NLL with profile | without | with another user's profile | n |\n|---|---|---|---|---|")
    print("| dev | " + " | ".join(f"{table[column].mean():.2f}" for column in columns) + f" | {len(table)} |")
    helped = (table["nll_with_profile"] < table["nll_swapped_profile"]).mean()
    print(f"\nOwn profile below another user's profile on {helped:.0%} of the dev questions.")


if __name__ == "__main__":
    main()
