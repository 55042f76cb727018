"""Task specifications: what each LaMP / LongLaMP task looks like and how it is scored.

A `TaskSpec` names the fields a profile item must carry, how the retrieval query is cut from the
task input (following the official retrievers), what text of an item BM25 indexes, and how an
item is shown to the model as a past (input, output) "shot" of the user. The shot labels are our
own words for the per-task templates of the LaMP paper.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from workbench.errors import InputError

Kind = Literal["classification", "regression", "generation"]
Item = dict[str, object]

LAMP2_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy", "classic",
    "psychology", "fantasy", "romance", "thought-provoking", "social commentary", "violence", "true story",
)  # fmt: skip


def after_marker(marker: str) -> Callable[[str], str]:
    """The text after the first `marker` (the whole input when it is absent)."""

    def cut(text: str) -> str:
        _, found, tail = text.partition(marker)
        return tail.strip() if found else text.strip()

    return cut


def whole(text: str) -> str:
    return text.strip()


def quoted_references(text: str) -> str:
    """LaMP-1: the two candidate references, the 2nd and 3rd quoted strings of the input."""
    quoted = re.findall(r'"(.*?)"', text)
    return " ".join(quoted[1:3]) if len(quoted) >= 3 else text.strip()


def joined(*names: str) -> Callable[[Item], str]:
    def text(item: Item) -> str:
        return " ".join(str(item[name]) for name in names if item.get(name))

    return text


@dataclass(frozen=True)
class TaskSpec:
    """One task: its item fields, retrieval query and document, shot rendering and metric kind.

    `shot_input` / `shot_output` name the item fields shown as a past input and the user's output
    for it; `shot_input` None shows only the output, after `shot_label` (LaMP-7 profiles hold
    tweets, not pairs). `content` cuts the part of the task input that the plain few-shot format
    shows after `input_label`; `header` (the label set, where the task has one) opens it.
    """

    name: str
    kind: Kind
    item_fields: tuple[str, ...]
    query: Callable[[str], str]
    document: Callable[[Item], str]
    shot_output: str
    shot_input: str | None
    input_label: str
    output_label: str
    content: Callable[[str], str] = whole
    shot_label: str = ""
    labels: tuple[str, ...] = ()
    max_new_tokens: int = 32
    multi_line: bool = False
    header: str = ""


def _generation(name: str, **kwargs: object) -> TaskSpec:
    return TaskSpec(name=name, kind="generation", **kwargs)  # type: ignore[arg-type]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="LaMP-1", kind="classification", item_fields=("title",), labels=("[1]", "[2]"),
            query=quoted_references, document=joined("title", "abstract"),
            shot_input=None, shot_output="title", shot_label="Paper by this author", input_label="Question",
            output_label="Answer", max_new_tokens=8,
        ),
        TaskSpec(
            name="LaMP-2", kind="classification", item_fields=("description", "tag"), labels=LAMP2_TAGS,
            query=after_marker("description:"), document=joined("description"), content=after_marker("description:"),
            shot_input="description", shot_output="tag", input_label="Movie", output_label="Tag",
            header="Tags: " + ", ".join(LAMP2_TAGS), max_new_tokens=8,
        ),
        TaskSpec(
            name="LaMP-3", kind="regression", item_fields=("text", "score"), labels=("1", "2", "3", "4", "5"),
            query=after_marker("review:"), document=joined("text"), content=after_marker("review:"),
            shot_input="text", shot_output="score", input_label="Review", output_label="Score (1-5)",
            max_new_tokens=4,
        ),
        _generation(
            "LaMP-4", item_fields=("text", "title"), query=after_marker("article:"), document=joined("title", "text"),
            content=after_marker("article:"), shot_input="text", shot_output="title",
            input_label="Article", output_label="Headline",
        ),
        _generation(
            "LaMP-5", item_fields=("title", "abstract"), query=after_marker("paper:"), document=joined("title", "abstract"),
            content=after_marker("paper:"), shot_input="abstract", shot_output="title",
            input_label="Abstract", output_label="Title",
        ),
        _generation(
            "LaMP-7", item_fields=("text",), query=after_marker(":"), document=joined("text"),
            content=after_marker(":"), shot_input=None, shot_output="text",
            input_label="Tweet to paraphrase", output_label="Tweet by this user",
        ),
        _generation(
            "LongLaMP-2", item_fields=("title", "abstract"), query=after_marker("items:"),
            document=joined("title", "abstract"), shot_input="title", shot_output="abstract",
            input_label="Task", output_label="Abstract", max_new_tokens=256, multi_line=True,
        ),
        _generation(
            "LongLaMP-3", item_fields=("summary", "content"), query=whole, document=joined("content", "summary"),
            shot_input="summary", shot_output="content", input_label="Task", output_label="Post",
            max_new_tokens=256, multi_line=True,
        ),
        _generation(
            "LongLaMP-4", item_fields=("summary", "reviewText"), query=whole,
            document=joined("overall", "summary", "description", "reviewText"), shot_input="summary",
            shot_output="reviewText", input_label="Task", output_label="Review", max_new_tokens=256, multi_line=True,
        ),
        _generation(
            "generic", item_fields=("output",), query=whole, document=joined("input", "output"),
            shot_input="input", shot_output="output", input_label="Input", output_label="Output", max_new_tokens=64,
        ),
    )
}  # fmt: skip

UNSUPPORTED = {
    "LaMP-6": "LaMP-6 (email subjects) needs the licensed Avocado corpus (LDC2015T03): its public files hold "
    "file names instead of emails, so the workbench cannot load it",
}


def task_spec(name: str) -> TaskSpec:
    """The spec of `name`; accepts `LaMP-4`, `LaMP_4` and `lamp-4`."""
    canonical = {key.lower(): key for key in TASKS}
    key = name.strip().replace("_", "-").lower()
    if key in ("lamp-6", "longlamp-1"):
        raise InputError(UNSUPPORTED["LaMP-6"] if key == "lamp-6" else "LongLaMP-1 (email) is private and not supported")
    if key not in canonical:
        raise InputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[canonical[key]]
