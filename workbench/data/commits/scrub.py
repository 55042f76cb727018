"""Privacy scrubbing of commit messages before they become data: trailer lines that carry names,
e-mail addresses or review metadata are dropped; e-mail addresses anywhere become `[email]`;
`@handle` mentions become `@[user]`; and names become `[name]`: the full names of the people a
history knows (authors, committers, people named in trailers), and any two capitalised words of
which the first is a first name or the second a surname of such a full name ("Jane Roe" when only
"Jane Doe" and "Richard Roe" are known).

What can remain: a lone first name ("thanks, Alan"), a full name of which neither word is known,
and handles written without `@`; a handle directly followed by `(` is kept, since it is test-marker
syntax in Go tools (`@diag(...)`), not a person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Trailer keys whose lines name people or carry review-system metadata (compared lower-case).
DROPPED_TRAILERS = frozenset(
    {
        "acked-by", "auto-submit", "cc", "change-id", "co-authored-by", "commit-queue", "cq-include-trybots",
        "github-last-rev", "github-pull-request", "helped-by", "luci-trybot-result", "original-author",
        "reported-by", "requested-by", "reviewed-by", "reviewed-on", "run-trybot", "signed-off-by",
        "suggested-by", "tbr", "tested-by", "trust", "trybot-bypass", "trybot-result",
    }
)  # fmt: skip
TRAILER = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*)\s*:\s*(.*)$")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
NAMED_ADDRESS = re.compile(r"([^\s<>:][^<>:\n]*?)[ \t]*<[^<>\s]+@[^<>\s]+>")
MENTION = re.compile(r"(?<![^\s(\[,;])@[A-Za-z0-9][A-Za-z0-9-]*(?![\w(-])")
NAME_WORD = re.compile(r"[A-Z][a-z]{2,}")  # the words of known names used to spot unknown full names
EMAIL_MARK, MENTION_MARK, NAME_MARK = "[email]", "@[user]", "[name]"


def is_dropped_trailer(line: str) -> bool:
    """A line to drop anywhere in a message: a known people/review trailer, or any `Key: value`
    line whose value holds an e-mail address."""
    match = TRAILER.match(line)
    return match is not None and (match.group(1).lower() in DROPPED_TRAILERS or bool(EMAIL.search(match.group(2))))


def names_in(text: str) -> set[str]:
    """The names written as `Name <address>` in `text` (trailers such as `Reviewed-by:`)."""
    return {match.group(1).strip() for match in NAMED_ADDRESS.finditer(text)}


def full_names(names: Iterable[str]) -> list[str]:
    """The names of two or more words (a full name), longest first so that a longer name is
    replaced before a name it contains."""
    kept = {" ".join(name.split()) for name in names if len(name.split()) >= 2}
    return sorted(kept, key=lambda name: (-len(name), name))


def full_name_pattern(names: list[str]) -> re.Pattern[str] | None:
    """Any of `names`, its words separated by any run of white space (a line break included)."""
    alternatives = "|".join(r"\s+".join(map(re.escape, name.split())) for name in names)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)") if names else None


def name_pair_pattern(names: list[str]) -> re.Pattern[str] | None:
    """Two capitalised words of which the first is a first name or the second a surname of `names`."""
    first = sorted({name.split()[0] for name in names if NAME_WORD.fullmatch(name.split()[0])})
    last = sorted({name.split()[-1] for name in names if NAME_WORD.fullmatch(name.split()[-1])})
    word = NAME_WORD.pattern
    pairs = ([rf"(?:{'|'.join(first)}) {word}"] if first else []) + ([rf"{word} (?:{'|'.join(last)})"] if last else [])
    return re.compile(rf"\b(?:{'|'.join(pairs)})\b") if pairs else None


class Scrubber:
    """Removes trailers, e-mail addresses, mentions and names (see the module docstring) from
    commit message text; `names` are the people the history knows."""

    def __init__(self, names: Iterable[str]) -> None:
        known = full_names(names)
        self._names = [pattern for pattern in (full_name_pattern(known), name_pair_pattern(known)) if pattern]

    def body(self, text: str) -> str:
        """A message body without its trailer paragraph, trailer lines, addresses and names."""
        paragraphs = re.split(r"\n\s*\n", text.strip())
        if paragraphs and all(TRAILER.match(line) for line in paragraphs[-1].splitlines()):
            paragraphs.pop()  # git's trailer block: a last paragraph of `Key: value` lines only
        kept = "\n\n".join(paragraphs)
        lines = [line.rstrip() for line in kept.splitlines() if not is_dropped_trailer(line)]
        return self.text(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip())

    def text(self, text: str) -> str:
        """`text` with e-mail addresses, mentions and names replaced by markers."""
        text = MENTION.sub(MENTION_MARK, EMAIL.sub(EMAIL_MARK, text))
        for pattern in self._names:  # full names first: a known name is replaced whole
            text = pattern.sub(NAME_MARK, text)
        return text
