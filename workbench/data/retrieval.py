"""Choosing which profile items go into a prompt: BM25 with the task's query (the official
default), the first k, or k drawn at random (seeded, without replacement; the reference code drew
with replacement, which can repeat an item).

BM25 follows the official retriever: `rank_bm25.BM25Okapi` over whitespace-split documents, no
lower-casing or stemming; ties keep profile order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, get_args

from workbench.data.examples import Example
from workbench.data.tasks import Item, task_spec
from workbench.errors import InputError

Retriever = Literal["bm25", "first", "random"]
RETRIEVERS: tuple[str, ...] = get_args(Retriever)


def bm25_order(query: str, documents: Sequence[str]) -> list[int]:
    """Document indices by descending BM25 score for `query` (stable for ties)."""
    from rank_bm25 import BM25Okapi

    tokenized = [document.split() or [""] for document in documents]
    scores = BM25Okapi(tokenized).get_scores(query.split())
    return sorted(range(len(documents)), key=lambda index: -scores[index])


def retrieve(
    example: Example, k: int, retriever: str = "bm25", *, seed: int = 0, profile: Sequence[Item] | None = None
) -> list[Item]:
    """Up to `k` items of `profile` (default the example's own), most relevant first.

    `random` seeds with `seed` and the example id, so every example gets its own draw and reruns
    get the same one.
    """
    if k < 0:
        raise InputError(f"number of profile items k must be >= 0, got {k}")
    if retriever not in RETRIEVERS:
        raise InputError(f"unknown retriever {retriever!r}; choose one of {', '.join(RETRIEVERS)}")
    items = list(example.profile if profile is None else profile)
    if retriever == "first" or k == 0:
        return items[:k]
    if retriever == "random":
        return random.Random(f"{seed}:{example.example_id}").sample(items, min(k, len(items)))
    spec = task_spec(example.task)
    order = bm25_order(spec.query(example.input), [spec.document(item) for item in items])
    return [items[index] for index in order[:k]]
