"""Prompts for personalization: the user's retrieved profile items as past (input, output) shots,
then the task input, in one of two formats, under a token budget.

- `plain`: a few-shot completion text for base models (and any model): `Article: ...\\nHeadline:
  ...` shots, then the new input ending at `Headline:`; the target follows after a space.
- `chat`: one user turn holding the shots and the official task instruction, wrapped in the
  model's chat template (instruct models).

On the bundled demo set the plain format makes the profile's effect far larger for the default
model than the chat format (see `workbench/data/demo/DATA_CARD.md`), so it is the default.

Budget: prompt plus answer room (the target's length, or the task's `max_new_tokens`) must fit
the model's context (and `max_prompt_tokens` when given). Profile items share what the task input
leaves, evenly, unused shares carrying over; an item that does not fit its share has its long
field (the past input, else the output) cut at a token boundary. The task input is never cut: if
it alone does not fit, the example is refused with an `InputError`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tqdm.auto import tqdm

from workbench.data.examples import Example
from workbench.data.retrieval import retrieve
from workbench.data.tasks import Item, TaskSpec, task_spec
from workbench.data.tokenized import TokenizedExample
from workbench.errors import InputError
from workbench.lens import Lens

Format = Literal["plain", "chat"]
FORMATS: tuple[str, ...] = ("plain", "chat")
SHOT_SEPARATOR = "\n\n"
CHAT_PROFILE_INTRO = "Earlier writing by this user, to follow in style and content:"
SWAP_CANDIDATES = 3


@dataclass(frozen=True)
class PromptConfig:
    """`max_prompt_tokens` caps the prompt (default: the model context less the answer room);
    `answer_tokens` is the room kept for a generated answer (default: the task's)."""

    format: Format = "plain"
    k: int = 5
    retriever: str = "bm25"
    seed: int = 0
    max_prompt_tokens: int | None = None
    answer_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown prompt format {self.format!r}; choose one of {', '.join(FORMATS)}")
        for name in ("max_prompt_tokens", "answer_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be a positive number of tokens, got {value}")


def shot_text(spec: TaskSpec, item: Item, *, cut_to: str | None = None) -> str:
    """One profile item as a past shot; `cut_to` replaces the long field's text."""
    output = str(item[spec.shot_output]).strip()
    if spec.shot_input is None or not item.get(spec.shot_input):
        output = output if cut_to is None else cut_to
        return f"{spec.shot_label or spec.output_label}: {output}"
    past_input = str(item[spec.shot_input]).strip() if cut_to is None else cut_to
    return f"{spec.input_label}: {past_input}\n{spec.output_label}: {output}"


def prompt_text(lens: Lens, example: Example, shots: Sequence[str], form: Format) -> str:
    spec = task_spec(example.task)
    if form == "plain":
        parts = ([spec.header] if spec.header else []) + list(shots)
        parts.append(f"{spec.input_label}: {spec.content(example.input)}\n{spec.output_label}:")
        return SHOT_SEPARATOR.join(parts)
    profile = [CHAT_PROFILE_INTRO + SHOT_SEPARATOR + SHOT_SEPARATOR.join(shots)] if shots else []
    try:
        return lens.chat_text(SHOT_SEPARATOR.join(profile + [example.input.strip()]))
    except ValueError as error:
        raise InputError(str(error)) from None


def target_text(example: Example, form: Format) -> str:
    """The reference output as it continues the prompt (after a space in the plain format)."""
    if example.output is None or not example.output.strip():
        raise InputError(f"example {example.example_id!r}: no reference output")
    return (" " if form == "plain" else "") + example.output.strip()


def encode(lens: Lens, text: str, form: Format) -> list[int]:
    """Chat text carries its own special tokens; plain text gets a BOS where the tokenizer wants one."""
    return lens.encode(text, add_bos=form == "plain" and bool(getattr(lens.tokenizer, "add_bos_token", False)))


def build_prompt(
    lens: Lens,
    example: Example,
    config: PromptConfig,
    *,
    with_profile: bool = True,
    profile: Sequence[Item] | None = None,
    answer_room: int | None = None,
) -> list[int]:
    """Token ids of the prompt of `example` (with its own profile, `profile`, or none)."""
    spec = task_spec(example.task)
    room = answer_room if answer_room is not None else (config.answer_tokens or spec.max_new_tokens)
    budget = lens.geometry.n_ctx - room
    if config.max_prompt_tokens is not None:
        budget = min(budget, config.max_prompt_tokens)
    bare = encode(lens, prompt_text(lens, example, [], config.format), config.format)
    if len(bare) > budget:
        raise InputError(
            f"example {example.example_id!r}: the task input alone needs {len(bare)} prompt tokens but only {budget} fit "
            f"(context {lens.geometry.n_ctx}, answer room {room}, prompt cap {config.max_prompt_tokens}); "
            "task inputs are never truncated"
        )
    if not with_profile:
        return bare
    items = retrieve(example, config.k, config.retriever, seed=config.seed, profile=profile)
    intro = len(lens.encode(CHAT_PROFILE_INTRO + SHOT_SEPARATOR)) if config.format == "chat" else 0
    shots = _fit_shots(lens, spec, items, budget - len(bare) - intro)
    while True:  # token counts of joined texts are not exactly additive; drop items until it fits
        ids = encode(lens, prompt_text(lens, example, shots, config.format), config.format)
        if len(ids) <= budget:
            return ids
        shots.pop()


def _fit_shots(lens: Lens, spec: TaskSpec, items: Sequence[Item], room: int) -> list[str]:
    def cost(text: str) -> int:
        return len(lens.encode(text + SHOT_SEPARATOR))

    shots = []
    for position, item in enumerate(items):
        share = room // (len(items) - position)
        shot = shot_text(spec, item)
        if cost(shot) > share:
            long_field = spec.shot_input if spec.shot_input and item.get(spec.shot_input) else spec.shot_output
            allowed = share - cost(shot_text(spec, item, cut_to=""))
            if allowed <= 0:
                continue
            shot = shot_text(spec, item, cut_to=lens.decode(lens.encode(str(item[long_field]).strip())[:allowed]).strip())
        shots.append(shot)
        room -= cost(shot)
    return shots


def swap_partner(example: Example, examples: Sequence[Example], seed: int) -> Example | None:
    """Another user's example whose profile is of similar size (characters): seeded draw among the
    `SWAP_CANDIDATES` nearest. None when every example belongs to the same user."""
    size = sum(len(str(item)) for item in example.profile)
    others = [other for other in examples if other.user_id != example.user_id]
    if not others:
        return None
    others.sort(key=lambda other: (abs(sum(len(str(item)) for item in other.profile) - size), other.example_id))
    return random.Random(f"{seed}:swap:{example.example_id}").choice(others[:SWAP_CANDIDATES])


def tokenized_examples(
    lens: Lens, examples: Sequence[Example], config: PromptConfig = PromptConfig(), *, progress: bool = False
) -> list[TokenizedExample]:
    """(prompt, reference) token pairs for head scoring, with the no-profile prompt and the prompt
    carrying another user's profile (`swap_partner`) as controls. Every prompt plus the target fits
    the model context."""
    tokenized = []
    for example in tqdm(examples, desc="tokenizing", disable=not progress):
        target = lens.encode(target_text(example, config.format))
        partner = swap_partner(example, examples, config.seed)
        swapped = (
            None if partner is None else build_prompt(lens, example, config, profile=partner.profile, answer_room=len(target))
        )
        tokenized.append(
            TokenizedExample(
                example_id=example.example_id,
                user_id=example.user_id,
                prompt_ids=build_prompt(lens, example, config, answer_room=len(target)),
                target_ids=target,
                no_profile_prompt_ids=build_prompt(lens, example, config, with_profile=False, answer_room=len(target)),
                swapped_prompt_ids=swapped,
            )
        )
    return tokenized
