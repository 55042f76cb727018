"""Task metrics with the official LaMP / LongLaMP semantics, computed per example and aggregated.

- LaMP-1/2 (classification): accuracy and macro-F1 over the label set; a prediction outside the
  set counts as wrong and gets no class of its own (sklearn `labels=range(n)`, as the official
  evaluator). Unlike the official evaluator, which only strips, we first **extract** the label
  from free text (`extract_label`): "[1]." -> "[1]", "The tag is dark comedy" -> "dark comedy".
  `exact` records whether the stripped raw output already was the label.
- LaMP-3 (regression): MAE and RMSE; the number is extracted as the first number in the text; an
  output with no number becomes the extreme (1 or 5) farther from the gold, the official rule.
- Generation: ROUGE-1 / ROUGE-L F-measure from `rouge-score` (no stemmer, as the official code)
  averaged over examples (the official code reports a bootstrap median instead, which is not
  deterministic), and METEOR from NLTK (alpha 0.9, beta 3, gamma 0.5) over WordNet. The official
  code tokenizes with `word_tokenize`, whose `punkt_tab` model cannot be obtained offline; we use
  an untrained `PunktSentenceTokenizer` plus `NLTKWordTokenizer`, an approximation that differs
  only in abbreviation handling.
- `style`: 1 when the output follows the user's recorded style (bundled demo set).
- Habits (`HABITS`, asked for per run): a user's own writing habit where the data has one.
  `area` (commit subjects, `area: summary`): `area_match` is 1 when the prediction names the same
  areas before its first ": " as the gold (see `area_prefix`); undefined for a gold without areas,
  whose examples stay out of its mean. `detected_habits` says which habits a data set's golds show.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import cache

import numpy as np

from workbench.data.styles import matches_style
from workbench.data.tasks import TaskSpec
from workbench.errors import InputError

Scores = dict[str, float]
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
AREA = re.compile(r"[A-Za-z0-9_.*+{}/-]*[A-Za-z][A-Za-z0-9_.*+{}/-]*")  # a package path or glob, one letter at least


def extract_label(text: str, labels: Sequence[str]) -> str | None:
    """The label `text` names, or None.

    The stripped text equal to a label (case-insensitive) wins; otherwise the label occurring
    earliest in the text, the longest one first at equal positions ("dark comedy" before
    "comedy"), matched case-insensitively at word boundaries. A bracketed label also matches its
    bare content ("1" for "[1]") when no bracketed form occurs.
    """
    cleaned = text.strip().lower()
    for label in labels:
        if cleaned == label.lower():
            return label
    found = _earliest(cleaned, {label: label for label in labels})
    if found is None:
        bare = {label[1:-1]: label for label in labels if label.startswith("[") and label.endswith("]")}
        found = _earliest(cleaned, bare)
    return found


def _earliest(text: str, forms: dict[str, str]) -> str | None:
    best: tuple[int, int, str] | None = None
    for form, label in forms.items():
        match = re.search(r"(?<![\w-])" + re.escape(form.lower()) + r"(?![\w-])", text)
        if match and (best is None or (match.start(), -len(form)) < best[:2]):
            best = (match.start(), -len(form), label)
    return None if best is None else best[2]


def extract_number(text: str, gold: float, low: float = 1.0, high: float = 5.0) -> float:
    """The first number in `text`; without one, the extreme farther from `gold` (official rule)."""
    match = NUMBER.search(text)
    if match:
        return float(match.group())
    return low if abs(low - gold) > abs(high - gold) else high


def area_prefix(text: str) -> frozenset[str] | None:
    """The areas a commit subject names before its first ": " ("go/types, gopls: fix x" ->
    {"go/types", "gopls"}), or None when there is no ": " or the text before it is not a
    comma-separated list of path-like words (letters, digits and `_ . * + { } / -`, no spaces).

    Case-sensitive (package paths are), order-insensitive; only the first line of `text` counts.
    """
    lines = text.strip().splitlines()
    head, found, _ = (lines[0] if lines else "").partition(": ")
    if not found:
        return None
    areas = [area.strip() for area in head.split(",")]
    return frozenset(areas) if all(AREA.fullmatch(area) for area in areas) else None


HABITS: tuple[str, ...] = ("area",)
HABIT_SHARE = 0.8  # a habit is the data's when at least this share of its golds show it


def detected_habits(golds: Sequence[str]) -> tuple[str, ...]:
    """The habits at least `HABIT_SHARE` of `golds` show (commit subjects: `area`; news headlines
    rarely start with a path-like word and a colon)."""
    if not golds:
        return ()
    share = sum(area_prefix(gold) is not None for gold in golds) / len(golds)
    return ("area",) if share >= HABIT_SHARE else ()


def area_match(prediction: str, gold: str) -> float | None:
    """1.0 when `prediction` names exactly the gold's areas (`area_prefix`), else 0.0; None when
    the gold names none (the habit is undefined there, so such examples stay out of the mean)."""
    gold_areas = area_prefix(gold)
    if gold_areas is None:
        return None
    return float(area_prefix(prediction) == gold_areas)


@cache
def _rouge_scorer():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rouge1", "rougeL"], use_stemmer=False)


@cache
def _tokenizers():
    from nltk.tokenize import NLTKWordTokenizer, PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def word_tokens(text: str) -> list[str]:
    """Offline approximation of `nltk.word_tokenize` (see the module docstring)."""
    sentences, words = _tokenizers()
    return [token for sentence in sentences.tokenize(text) for token in words.tokenize(sentence)]


def meteor(prediction: str, gold: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    try:
        return float(meteor_score([word_tokens(gold)], word_tokens(prediction), alpha=0.9, beta=3, gamma=0.5))
    except LookupError:
        raise InputError("METEOR needs WordNet: run scripts/setup.sh (python -m workbench.setup_wordnet)") from None


def score_example(spec: TaskSpec, prediction: str, gold: str, style: str | None = None, habits: Sequence[str] = ()) -> Scores:
    """Per-example scores; `aggregate` turns a list of them into the task's metrics. `habits`
    (`HABITS`) adds the user's habit scores where the gold defines them."""
    if spec.kind == "classification":
        label = extract_label(prediction, spec.labels)
        gold_label = extract_label(gold, spec.labels)
        if gold_label is None or gold_label != gold.strip():
            raise InputError(f"gold {gold!r} is not one of the {spec.name} labels")
        scores = {
            "correct": float(label == gold_label),
            "exact": float(prediction.strip() == gold_label),
            "predicted_index": float(spec.labels.index(label)) if label is not None else -1.0,
            "gold_index": float(spec.labels.index(gold_label)),
        }
    elif spec.kind == "regression":
        try:
            gold_value = float(gold.strip())
        except ValueError:
            raise InputError(f"gold {gold!r} of {spec.name} is not a number") from None
        error = extract_number(prediction, gold_value) - gold_value
        scores = {"abs_error": abs(error), "squared_error": error * error}
    else:
        rouge = _rouge_scorer().score(gold.strip(), prediction.strip())
        scores = {
            "rouge-1": rouge["rouge1"].fmeasure,
            "rouge-L": rouge["rougeL"].fmeasure,
            "meteor": meteor(prediction.strip(), gold.strip()),
        }
    if style is not None:
        scores["style"] = float(matches_style(style, prediction))
    if "area" in habits:
        matched = area_match(prediction, gold)
        if matched is not None:
            scores["area_match"] = matched
    return scores


def aggregate(spec: TaskSpec, rows: Sequence[Scores]) -> Scores:
    """The task's metrics over per-example scores (means, plus macro-F1 / RMSE where due)."""
    if not rows:
        raise InputError("no scored examples to aggregate")

    def mean(key: str) -> float:
        return float(np.mean([row[key] for row in rows]))

    if spec.kind == "classification":
        predicted = [int(row["predicted_index"]) for row in rows]
        golds = [int(row["gold_index"]) for row in rows]
        f1 = macro_f1(golds, predicted, len(spec.labels))
        metrics = {"accuracy": mean("correct"), "f1": f1, "exact_accuracy": mean("exact")}
    elif spec.kind == "regression":
        metrics = {"mae": mean("abs_error"), "rmse": math.sqrt(mean("squared_error"))}
    else:
        metrics = {key: mean(key) for key in ("rouge-1", "rouge-L", "meteor")}
    if all("style" in row for row in rows):
        metrics["style_match"] = mean("style")
    defined = [row["area_match"] for row in rows if "area_match" in row]
    if defined:
        metrics["area_match"] = float(np.mean(defined))
    return metrics


def macro_f1(golds: Sequence[int], predicted: Sequence[int], n_labels: int) -> float:
    """Macro-averaged F1 over every one of the task's `n_labels` labels, a label with no gold and
    no prediction counting 0 (scikit-learn's `f1_score(labels=..., average="macro",
    zero_division=0)`, which LaMP's scripts use); a prediction of -1 (no label) is a miss. Counted
    with numpy: the bootstrap and the permutation test recompute it thousands of times."""
    labels = np.arange(n_labels)
    gold_is = np.asarray(golds)[:, None] == labels
    predicted_is = np.asarray(predicted)[:, None] == labels
    true_positives = (gold_is & predicted_is).sum(axis=0)
    denominator = gold_is.sum(axis=0) + predicted_is.sum(axis=0)  # 2·TP + FP + FN
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros(n_labels), where=denominator > 0)
    return float(f1.mean())


def metric_statistic(spec: TaskSpec, rows: Sequence[dict[str, float]], name: str):
    """The statistic "metric `name` over the resampled examples" for the bootstrap."""
    return lambda indices: aggregate(spec, [rows[i] for i in indices])[name]
