"""Writing styles that a machine can check: how a styled user writes, and whether a text follows it.

A style is named `kind` or `kind:parameter` (`lowercase`, `signature:- Rosa`, `emoji:🌿`). The
bundled demo set writes each user's outputs with `apply_style` and records the style, so the
style-match rate of generated text (`matches_style`) can be reported next to ROUGE.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from workbench.errors import InputError

SHORT_WORDS = 4


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z'-]*", text)


def _strip_end(text: str) -> str:
    return text.strip().rstrip(".!?;:,").strip()


def _title_case(text: str) -> str:
    return " ".join(word[:1].upper() + word[1:] for word in text.split())


# kind -> (writer(text, parameter), checker(text, parameter))
STYLES: dict[str, tuple[Callable[[str, str], str], Callable[[str, str], bool]]] = {
    "lowercase": (
        lambda text, _: text.lower(),
        lambda text, _: bool(_words(text)) and text == text.lower(),
    ),
    "caps": (
        lambda text, _: text.upper(),
        lambda text, _: bool(_words(text)) and text == text.upper(),
    ),
    "titlecase": (
        lambda text, _: _title_case(_strip_end(text)),
        lambda text, _: bool(_words(text)) and all(word[0].isupper() for word in _words(text)),
    ),
    "question": (
        lambda text, _: _strip_end(text) + "?",
        lambda text, _: text.strip().endswith("?"),
    ),
    "exclaim": (
        lambda text, _: _strip_end(text) + "!!",
        lambda text, _: text.strip().endswith("!!"),
    ),
    "short": (
        lambda text, _: " ".join(_strip_end(text).split()[:SHORT_WORDS]),
        lambda text, _: 0 < len(text.split()) <= SHORT_WORDS,
    ),
    "quoted": (
        lambda text, _: f'"{_strip_end(text)}"',
        lambda text, _: len(text.strip()) > 2 and text.strip()[0] == '"' and text.strip()[-1] == '"',
    ),
    "prefix": (
        lambda text, tag: f"{tag} {text.strip()}",
        lambda text, tag: text.strip().startswith(tag),
    ),
    "signature": (
        lambda text, phrase: f"{_strip_end(text)} {phrase}",
        lambda text, phrase: text.strip().endswith(phrase),
    ),
    "emoji": (
        lambda text, emoji: f"{_strip_end(text)} {emoji}",
        lambda text, emoji: text.strip().endswith(emoji),
    ),
    "hashtag": (
        lambda text, tag: f"{_strip_end(text)} #{tag}",
        lambda text, tag: text.strip().lower().endswith(f"#{tag.lower()}"),
    ),
}
PARAMETERIZED = {"prefix", "signature", "emoji", "hashtag"}


def parse_style(style: str) -> tuple[str, str]:
    """`(kind, parameter)` of a style name; raises `InputError` for unknown kinds."""
    kind, _, parameter = style.partition(":")
    kind, parameter = kind.strip(), parameter.strip()
    if kind not in STYLES:
        raise InputError(f"unknown style {style!r}; kinds are {', '.join(STYLES)}")
    if (kind in PARAMETERIZED) != bool(parameter):
        need = f"needs a parameter (`{kind}:...`)" if kind in PARAMETERIZED else "takes no parameter"
        raise InputError(f"style {style!r}: kind {kind!r} {need}")
    return kind, parameter


def apply_style(style: str, text: str) -> str:
    kind, parameter = parse_style(style)
    return STYLES[kind][0](text, parameter)


def matches_style(style: str, text: str) -> bool:
    kind, parameter = parse_style(style)
    return STYLES[kind][1](text, parameter)
