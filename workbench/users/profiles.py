"""Users and their profile texts: what is embedded to cluster and route a user.

One user is one profile. Examples carry their user's profile each; a user with several examples
(LaMP's time-based files grow a user's profile from one question to the next) is one user whose
profile is the union of those profiles' items, duplicates removed, in the order they first
appear. Clustering and routing therefore see every user once, however many questions they asked.

The profile text (`ProfileText`) is the first `items` items of that profile, rendered

- `shots` (default): as the prompts show them to the model, a past input and the user's own
  output (`Article: ... / Headline: ...`), separated by blank lines;
- `authors`: as the DPS authors' clustering did, each item's `text` field, else its title,
  abstract, description, content, summary or review text (the non-empty ones, in that order),
  else its other text fields; one item per line. On LaMP-4 this is the article bodies without the
  user's headlines, on LaMP-2 the descriptions without the tags.

The embedder reads at most `max_length` tokens of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types
from pydantic import Field

from workbench.data.examples import Example
from workbench.data.prompts import shot_text
from workbench.data.tasks import Item, task_spec
from workbench.errors import InputError
from workbench.typed_config import PositiveInt, typed_config

AUTHORS_FALLBACK_FIELDS = ("title", "abstract", "description", "content", "summary", "reviewText")


@typed_config
class ProfileText:
    """How a user's profile becomes the text that is embedded (see the module docstring)."""

    source: Literal["shots", "authors"] = Field(
        default="shots",
        description="shots: past inputs and the user's outputs as prompts show them; authors: the DPS authors' text fields.",
    )
    items: PositiveInt = Field(default=5, description="Profile items read (the first ones).")
    max_length: Annotated[int, annotated_types.Ge(1), annotated_types.Le(512)] = Field(
        default=256, description="Tokens of the profile text the embedder reads."
    )

    name = "profile text"


@dataclass(frozen=True)
class UserProfile:
    """One user: their examples and the union of those examples' profile items."""

    user_id: str
    example_ids: tuple[str, ...]
    items: tuple[Item, ...]


def user_profiles(examples: Sequence[Example]) -> list[UserProfile]:
    """One profile per user, users in the order they first appear (see the module docstring)."""
    examples_of: dict[str, list[str]] = {}
    items_of: dict[str, dict[str, Item]] = {}
    for example in examples:
        examples_of.setdefault(example.user_id, []).append(example.example_id)
        union = items_of.setdefault(example.user_id, {})
        for item in example.profile:
            union.setdefault(json.dumps(item, sort_keys=True, default=str), item)
    return [UserProfile(user, tuple(examples_of[user]), tuple(items_of[user].values())) for user in examples_of]


def profile_text(task: str, profile: UserProfile, recipe: ProfileText) -> str:
    """The text of `profile` that is embedded; an `InputError` when it is empty."""
    spec = task_spec(task)
    chosen = profile.items[: recipe.items]
    if recipe.source == "shots":
        parts = [shot_text(spec, item) or "" for item in chosen]
        separator = "\n\n"
    else:
        parts = [_authors_item_text(item) for item in chosen]
        separator = "\n"
    text = separator.join(part for part in parts if part.strip())
    if not text.strip():
        raise InputError(
            f"user {profile.user_id!r}: empty profile text (the first {recipe.items} profile items have no text "
            f"for the {recipe.source!r} recipe); every user needs a non-empty profile to be embedded"
        )
    return text


def _authors_item_text(item: Item) -> str:
    if str(item.get("text") or "").strip():
        return str(item["text"]).strip()
    fallback = [str(item[name]).strip() for name in AUTHORS_FALLBACK_FIELDS if str(item.get(name) or "").strip()]
    if fallback:
        return " ".join(fallback)
    return " ".join(str(value).strip() for key, value in item.items() if key != "id" and isinstance(value, str))
