"""Retrieval and prompt building: BM25 order by hand, seeded draws, exact prompt texts, the token
budget (never exceeded, task input never cut), and the tokenized pairs head scoring consumes."""

from __future__ import annotations

import math

import pytest

from workbench.data.examples import Example
from workbench.data.prompts import PromptConfig, build_prompt, prompt_text, swap_partner, tokenized_examples
from workbench.data.retrieval import bm25_order, retrieve
from workbench.data.sources import load_examples
from workbench.errors import InputError


def hand_bm25(query: list[str], documents: list[list[str]], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 written out (idf = ln((N - n + 0.5) / (n + 0.5)), all terms here in < N/2 docs)."""
    average = sum(len(d) for d in documents) / len(documents)
    scores = []
    for document in documents:
        score = 0.0
        for term in query:
            n = sum(term in d for d in documents)
            idf = math.log((len(documents) - n + 0.5) / (n + 0.5))
            tf = document.count(term)
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(document) / average))
        scores.append(score)
    return scores


def test_bm25_order_matches_a_hand_computation() -> None:
    documents = ["red apple pie recipe", "green pear", "red red apple", "blue car wash", "old boat", "city bus", "apple"]
    query = "red apple"
    scores = hand_bm25(query.split(), [d.split() for d in documents])
    expected = sorted(range(len(documents)), key=lambda i: -scores[i])
    assert bm25_order(query, documents) == expected
    assert expected[:3] == [2, 0, 6]  # two "red" beat one; the short "apple" beats nothing-matching docs
    assert bm25_order("Red", ["red"] * 2 + ["Red"]) == [2, 0, 1]  # case-sensitive, as the official retriever


def example(
    profile: list[dict], task: str = "LaMP-4", input_text: str = "Generate a headline for the following article: Rain fell."
) -> Example:
    return Example("e1", "u1", task, input_text, tuple(profile), "Rain falls")


ITEMS = [{"text": f"article {i} about rain" if i in (1, 4) else f"story {i}", "title": f"Headline {i}"} for i in range(6)]


def test_first_random_and_bm25_retrieval() -> None:
    ex = example(ITEMS)
    assert retrieve(ex, 3, "first") == ITEMS[:3]
    drawn = retrieve(ex, 4, "random", seed=3)
    assert drawn == retrieve(ex, 4, "random", seed=3) and len({d["title"] for d in drawn}) == 4
    rainy = example(ITEMS, input_text="Generate a headline for the following article: heavy rain today")
    assert retrieve(rainy, 2, "bm25") == [ITEMS[1], ITEMS[4]]  # the "rain" items, ties in profile order
    assert retrieve(ex, 10, "bm25")[0] in ITEMS and len(retrieve(ex, 10, "bm25")) == 6
    with pytest.raises(InputError, match="unknown retriever"):
        retrieve(ex, 2, "dense")


def test_plain_and_chat_texts(tiny) -> None:
    ex = example(ITEMS[:2])
    plain = prompt_text(tiny, ex, ["Article: story 0\nHeadline: Headline 0"], "plain")
    assert plain == "Article: story 0\nHeadline: Headline 0\n\nArticle: Rain fell.\nHeadline:"
    assert prompt_text(tiny, ex, [], "plain") == "Article: Rain fell.\nHeadline:"
    chat = prompt_text(tiny, ex, ["Article: story 0\nHeadline: Headline 0"], "chat")
    assert chat == ("<|im_start|>user\nEarlier writing by this user, to follow in style and content:\n\nArticle: story 0\n"
                    "Headline: Headline 0\n\nGenerate a headline for the following article: Rain fell.<|im_end|>\n"
                    "<|im_start|>assistant\n")  # fmt: skip
    tweets = example(
        [{"text": "so tired"}], "LaMP-7", "Paraphrase the following tweet without any explanation before or after it: I am tired."
    )
    assert prompt_text(tiny, tweets, ["Tweet by this user: so tired"], "plain") == (
        "Tweet by this user: so tired\n\nTweet to paraphrase: I am tired.\nTweet by this user:"
    )


@pytest.mark.parametrize("form", ["plain", "chat"])
@pytest.mark.parametrize("cap", [60, 90, 140, 200, None])
def test_budget_is_never_exceeded_and_the_input_never_cut(tiny, form: str, cap: int | None) -> None:
    long_items = [{"text": "word " * 80, "title": f"Title {i}"} for i in range(5)]
    ex = example(long_items)
    config = PromptConfig(format=form, profile_k=5, max_prompt_tokens=cap, answer_tokens=16)  # type: ignore[arg-type]
    bare = tiny.encode(prompt_text(tiny, ex, [], form))  # type: ignore[arg-type]
    if cap is not None and len(bare) > cap:
        with pytest.raises(InputError, match="task inputs are never truncated"):
            build_prompt(tiny, ex, config)
        return
    ids = build_prompt(tiny, ex, config)
    limit = min(cap or tiny.geometry.n_ctx, tiny.geometry.n_ctx - 16)
    assert len(bare) <= len(ids) <= limit
    text = tiny.decode(ids, skip_special_tokens=False)
    ending = "Rain fell.<|im_end|>\n<|im_start|>assistant\n" if form == "chat" else "Article: Rain fell.\nHeadline:"
    assert text.endswith(ending)
    if cap is None:
        assert "Title" in text  # cut items still come in


def test_input_too_long_for_the_context_is_refused(tiny) -> None:
    ex = example(ITEMS, input_text="Generate a headline for the following article: " + "x" * 300)
    with pytest.raises(InputError, match=r"example 'e1': the task input alone needs \d+ prompt tokens"):
        build_prompt(tiny, ex, PromptConfig())


def test_tokenized_examples_fill_every_prompt(tiny) -> None:
    examples = load_examples(None, "LaMP-7", "dev")[:6]
    config = PromptConfig(profile_k=2)
    pairs = tokenized_examples(tiny, examples, config)
    for pair, ex in zip(pairs, examples):
        assert tiny.decode(pair.target_ids) == " " + ex.output.strip()
        assert pair.no_profile_prompt_ids == tuple(
            build_prompt(tiny, ex, config, with_profile=False, answer_room=len(pair.target_ids))
        )
        assert len(pair.prompt_ids) > len(pair.no_profile_prompt_ids)
        partner = swap_partner(ex, examples, config.seed)
        assert partner.user_id != ex.user_id
        swapped = tiny.decode(pair.swapped_prompt_ids)
        shots = [shot.removeprefix("Tweet by this user: ") for shot in swapped.split("\n\n")[:-1]]
        assert shots and all(any(str(item["text"]).startswith(shot) for item in partner.profile) for shot in shots)
        assert pair.swapped_prompt_ids != pair.prompt_ids
        pair.check_fits(tiny.geometry.n_ctx)
    assert tokenized_examples(tiny, examples, config) == pairs  # deterministic
