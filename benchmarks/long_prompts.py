"""The ~1k-token LaMP-4 recipe of the commit set's data card (workbench/data/commits/DATA_CARD.md),
which the long-prompt benchmarks share: 24 BM25-retrieved profile items under a 1,024-token prompt
cap, so that most prompts land just under 1,024 tokens."""

from __future__ import annotations

import argparse
from pathlib import Path

PROFILE_K, MAX_PROMPT_TOKENS = 24, 1024


def add_options(parser: argparse.ArgumentParser) -> None:
    """`--profile-k` and `--max-prompt-tokens`, defaulting to the recipe."""
    parser.add_argument("--profile-k", type=int, default=PROFILE_K)
    parser.add_argument("--max-prompt-tokens", type=int, default=MAX_PROMPT_TOKENS)


def prompt_config(profile_k: int = PROFILE_K, max_prompt_tokens: int = MAX_PROMPT_TOKENS):
    """The recipe's `PromptConfig` (seed 0, as `workbench discover` draws)."""
    from workbench.data.prompts import PromptConfig

    return PromptConfig(seed=0, profile_k=profile_k, max_prompt_tokens=max_prompt_tokens)


def folder_examples(lens, folder: str | Path, n: int, config=None):
    """The first `n` `train` examples of a LaMP-4-schema folder, tokenized with `config` (default:
    the recipe) as `workbench discover` tokenizes them (swap partners drawn among all examples)."""
    from workbench.data.prompts import tokenized_examples
    from workbench.data.sources import load_examples

    return tokenized_examples(lens, load_examples(folder, "LaMP-4", "train"), config or prompt_config())[:n]
