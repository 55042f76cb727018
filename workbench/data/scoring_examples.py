"""Data for head scoring: a data source becomes the tokenized examples that `score_heads` and the
validation study consume (`workbench discover` and `workbench validate` both read through here).

A source is a task's data (a LaMP folder, a LongLaMP export, a generic JSONL or the bundled demo
set, turned into prompts by `workbench.data.prompts`) or, without a task, a JSONL of ready
`{id, user_id, prompt, target}` records. The first `limit` examples are kept, then `sample` of
them are drawn at random (seeded); only the chosen examples are tokenized. Swap-contrast partners
are still drawn among every example of the split (they lend their profile, untokenized).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from workbench.data.examples import Example
from workbench.data.prompt_jsonl import read_prompt_records, tokenize_pair
from workbench.data.prompts import PromptConfig, tokenized_examples
from workbench.data.sources import load_examples, resolve_task
from workbench.data.tokenized import TokenizedExample
from workbench.data.tokenizer import PromptTokenizer
from workbench.errors import InputError

T = TypeVar("T")


def check_source(data: Path | None, task: str | None) -> str | None:
    """The task to read (`DEMO_TASK` when neither is given, a LaMP folder's own when only it is),
    failing on a bad data / task pair before any model is loaded; None for a JSONL of ready records."""
    if task is not None or data is None or data.is_dir():
        return resolve_task(data, task)
    if data.suffix != ".jsonl":
        raise InputError("--task is needed unless --data is a JSONL of {id, user_id, prompt, target} records")
    return None


def choose(items: Sequence[T], limit: int | None = None, sample: int | None = None, seed: int = 0) -> list[T]:
    """The first `limit` items, then `sample` of them drawn at random without replacement
    (seeded; kept in their order)."""
    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")
    chosen = list(items)[:limit]
    if sample is not None and sample < len(chosen):
        drawn = sorted(random.Random(f"{seed}:sample").sample(range(len(chosen)), sample))
        chosen = [chosen[index] for index in drawn]
    return chosen


def load_scoring_examples(
    tokenizer: PromptTokenizer,
    data: Path | None,
    task: str | None,
    split: str,
    prompt: PromptConfig = PromptConfig(),
    *,
    limit: int | None = None,
    sample: int | None = None,
    progress: bool = True,
    loaded: Sequence[Example] | None = None,
) -> list[TokenizedExample]:
    """Tokenized (prompt, reference) pairs with their no-profile and swapped-profile controls
    (see the module docstring); `sample` draws with `prompt.seed`. `loaded`: the split's examples,
    when the caller read them already (before loading a model, so that bad data fails first)."""
    task = check_source(data, task)
    if task is None:
        records = choose(read_prompt_records(data), limit, sample, prompt.seed)  # type: ignore[arg-type]
        try:
            return [
                tokenize_pair(tokenizer, r["id"], r["user_id"], r["prompt"], r["target"],
                              prompt_no_profile=r.get("prompt_no_profile"), prompt_swapped=r.get("prompt_swapped"))
                for r in records
            ]  # fmt: skip
        except InputError as error:
            raise InputError(f"{data}: {error}") from None
    examples = load_examples(data, task, split) if loaded is None else list(loaded)
    chosen = choose(examples, limit, sample, prompt.seed)
    return tokenized_examples(tokenizer, chosen, prompt, partners=examples, progress=progress)
