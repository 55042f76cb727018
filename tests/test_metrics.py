"""Metrics against hand-computed values and against `rouge-score` called directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rouge_score.rouge_scorer import RougeScorer
from sklearn.metrics import f1_score

from workbench.data.tasks import LAMP2_TAGS, task_spec
from workbench.errors import InputError
from workbench.experiments.metrics import (
    aggregate,
    area_match,
    area_prefix,
    extract_label,
    extract_number,
    macro_f1,
    meteor,
    score_example,
    word_tokens,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[1]", "[1]"),
        ("[1].", "[1]"),
        (" [2]\n", "[2]"),
        ("The answer is [2] because", "[2]"),
        ("1", "[1]"),
        ("Reference 2.", "[2]"),
        ("[3]", None),
        ("neither", None),
        ("[2] not [1]", "[2]"),
    ],
)
def test_lamp1_label_extraction(text: str, expected: str | None) -> None:
    assert extract_label(text, ("[1]", "[2]")) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dark comedy", "dark comedy"),
        ("Dark Comedy.", "dark comedy"),
        ("The tag is: dark comedy", "dark comedy"),  # longest first: not "comedy"
        ("comedy, dark comedy", "comedy"),  # earliest wins
        ("sci-fi!", "sci-fi"),
        ("science fiction", None),
        ("a comedic film", None),  # word boundaries
    ],
)
def test_lamp2_label_extraction(text: str, expected: str | None) -> None:
    assert extract_label(text, LAMP2_TAGS) == expected


def test_classification_accuracy_and_macro_f1_by_hand() -> None:
    spec = task_spec("LaMP-1")
    predictions = ["[1].", "[2]", "I think 1", "no idea"]
    golds = ["[1]", "[1]", "[2]", "[2]"]
    rows = [score_example(spec, p, g) for p, g in zip(predictions, golds)]
    metrics = aggregate(spec, rows)
    assert metrics["accuracy"] == pytest.approx(1 / 4)
    assert metrics["exact_accuracy"] == pytest.approx(0.0)
    # class [1]: tp 1, fp 1 (example 3), fn 1 -> F1 1/2; class [2]: tp 0 -> F1 0; "no idea" is in no class
    assert metrics["f1"] == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(InputError, match="not one of the LaMP-1 labels"):
        score_example(spec, "[1]", "[3]")


def test_macro_f1_equals_scikit_learns_over_every_label() -> None:
    """Against scikit-learn's implementation (the one LaMP's scripts call), on random draws with
    labels nobody has, misses (-1) and one-example sets."""
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 40):
        golds = rng.integers(0, 6, n).tolist()
        predicted = rng.integers(-1, 6, n).tolist()
        expected = f1_score(golds, predicted, labels=range(9), average="macro", zero_division=0)
        assert macro_f1(golds, predicted, 9) == pytest.approx(expected, abs=1e-12)


def test_lamp3_mae_rmse_and_worst_case_fallback() -> None:
    spec = task_spec("LaMP-3")
    assert extract_number("I'd say 4 stars", 2.0) == 4.0
    assert extract_number("great", 2.0) == 5.0  # farther extreme from 2 is 5
    assert extract_number("great", 4.0) == 1.0
    assert extract_number("great", 3.0) == 5.0  # tie: the official rule picks 5
    rows = [score_example(spec, p, g) for p, g in [("5", "4"), ("rating: 1", "3"), ("unsure", "2")]]
    metrics = aggregate(spec, rows)
    errors = [1.0, 2.0, 3.0]
    assert metrics["mae"] == pytest.approx(sum(errors) / 3)
    assert metrics["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 3))


def test_rouge_matches_rouge_score_and_hand_values() -> None:
    spec = task_spec("LaMP-4")
    scores = score_example(spec, "the cat sat on the mat", "the cat ran")
    # unigram overlap: "the", "cat" -> P = 2/6, R = 2/3, F = 2PR/(P+R) = 4/9; LCS "the cat" likewise
    assert scores["rouge-1"] == pytest.approx(4 / 9)
    assert scores["rouge-L"] == pytest.approx(4 / 9)
    pairs = [("Snow shuts mountain pass", "Mountain pass closed by snow"), ("Coast hit by storms", "Storms batter the coast")]
    direct = RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    rows = [score_example(spec, p, g) for p, g in pairs]
    for (prediction, gold), row in zip(pairs, rows):
        expected = direct.score(gold, prediction)
        assert row["rouge-1"] == pytest.approx(expected["rouge1"].fmeasure)
        assert row["rouge-L"] == pytest.approx(expected["rougeL"].fmeasure)
    assert aggregate(spec, rows)["rouge-1"] == pytest.approx(sum(r["rouge-1"] for r in rows) / 2)


def test_meteor_reproduces_the_reference_example() -> None:
    prediction = "It is a guide to action which ensures that the military always obeys the commands of the party"
    reference = "It is a guide to action that ensures that the military will forever heed Party commands"
    assert meteor(prediction, reference) == pytest.approx(0.6944, abs=5e-5)
    assert word_tokens("Dr. Smith isn't here. He left!") == ["Dr", ".", "Smith", "is", "n't", "here", ".", "He", "left", "!"]


def test_style_match_is_reported_when_styles_are_known() -> None:
    spec = task_spec("LaMP-7")
    rows = [score_example(spec, "all quiet here", "quiet day", style="lowercase"),
            score_example(spec, "All Quiet", "quiet day", style="lowercase")]  # fmt: skip
    assert [row["style"] for row in rows] == [1.0, 0.0]
    assert aggregate(spec, rows)["style_match"] == 0.5
    assert "style_match" not in aggregate(spec, [score_example(spec, "x", "y")])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("net/http: fix a leak", {"net/http"}),
        (" gopls/internal/golang: add x\nsecond line: y", {"gopls/internal/golang"}),
        ("go/types, types2: report errors", {"go/types", "types2"}),
        ("go/types,types2: time: as lists", {"go/types", "types2"}),  # only the first ": " counts
        ("cmd/{guru,godoc}: x", {"cmd/{guru", "godoc}"}),
        ("all: use any", {"all"}),
        ("Fix the bug: really", None),  # a space: prose, not a path
        ("net/http fix a leak", None),  # no ": "
        ("https://go.dev/x: y", None),  # a URL: ":" is not a path character
        ("2024: a year", None),  # no letter
        ("", None),
    ],
)
def test_area_prefix_by_hand(text: str, expected: set[str] | None) -> None:
    assert area_prefix(text) == (None if expected is None else frozenset(expected))


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        ("net/http: add a test", "net/http: fix a leak", 1.0),
        ("types2, go/types: y", "go/types, types2: x", 1.0),  # order does not matter
        ("go/types: y", "go/types, types2: x", 0.0),  # a subset is not a match
        ("Net/http: y", "net/http: x", 0.0),  # case-sensitive
        ("net: y", "net/http: x", 0.0),  # a parent package is another area
        ("fix the leak", "net/http: x", 0.0),  # no prefix predicted
        ("net/http: y", "Fix the leak", None),  # the gold has no areas: undefined
    ],
)
def test_area_match_by_hand(prediction: str, gold: str, expected: float | None) -> None:
    assert area_match(prediction, gold) == expected
