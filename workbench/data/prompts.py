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
from typing import Literal

from pydantic import Field
from tqdm.auto import tqdm

from workbench.data.examples import Example
from workbench.data.retrieval import Retriever, retrieve
from workbench.data.tasks import Item, TaskSpec, task_spec
from workbench.data.tokenized import TokenizedExample
from workbench.data.tokenizer import PromptTokenizer
from workbench.errors import InputError
from workbench.typed_config import NonNegativeInt, PositiveInt, typed_config

Format = Literal["plain", "chat", "history"]
SHOT_SEPARATOR = "\n\n"
CHAT_PROFILE_INTRO = "Earlier writing by this user, to follow in style and content:"
HISTORY_FIELDS = ("text", "title")  # the authors' detection prompt shows the first of these an item has
SWAP_CANDIDATES = 3


@typed_config
class PromptConfig:
    """How an example becomes a prompt (see the module docstring)."""

    format: Format = Field(
        default="plain",
        description="plain (few-shot completion), chat (chat template) or history (the authors' detection prompt).",
    )
    profile_k: NonNegativeInt = Field(default=5, description="Profile items retrieved into each prompt.")
    retriever: Retriever = Field(
        default="bm25", description="How profile items are chosen: bm25 (the official), first or random (seeded)."
    )
    seed: NonNegativeInt = Field(default=0, description="Seed of random retrieval and swap-partner draws.")
    max_prompt_tokens: PositiveInt | None = Field(
        default=None, description="Prompt token cap (default: the model context less the answer)."
    )
    answer_tokens: PositiveInt | None = Field(default=None, description="Room kept for the answer (default: the task's).")
    profile: Literal["own", "swapped"] = Field(
        default="own",
        description="Whose profile a decoding prompt shows: the user's own, or another user's of similar size (seeded; "
        "the same format and length class, so that it separates the person from the prompt's form).",
    )

    name = "prompt"


def shot_text(spec: TaskSpec, item: Item, form: Format = "plain", number: int = 1, *, cut_to: str | None = None) -> str | None:
    """Profile item `number` (from 1) as a past shot; `cut_to` replaces the long field's text.
    None for a `history` item without a text or title (the authors' prompt skips those)."""
    if form == "history":
        field = next((name for name in HISTORY_FIELDS if name in item), None)
        return None if field is None else f"History {number}: {item[field] if cut_to is None else cut_to}"
    output = str(item[spec.shot_output]).strip()
    if spec.shot_input is None or not item.get(spec.shot_input):
        output = output if cut_to is None else cut_to
        return f"{spec.shot_label or spec.output_label}: {output}"
    past_input = str(item[spec.shot_input]).strip() if cut_to is None else cut_to
    return f"{spec.input_label}: {past_input}\n{spec.output_label}: {output}"


def long_field(spec: TaskSpec, item: Item, form: Format) -> str:
    """The field of an item that a shot too long for its share is cut in."""
    if form == "history":
        return next(name for name in HISTORY_FIELDS if name in item)
    return spec.shot_input if spec.shot_input and item.get(spec.shot_input) else spec.shot_output


def prompt_text(tokenizer: PromptTokenizer, example: Example, shots: Sequence[str] | None, form: Format) -> str:
    """The prompt text with `shots` (None: without the profile, which differs from no shots only
    in the `history` format)."""
    spec = task_spec(example.task)
    if form == "history":
        return example.input if shots is None else "".join(f"{shot}\n" for shot in shots) + "\n" + example.input
    shots = shots or []
    if form == "plain":
        parts = ([spec.header] if spec.header else []) + list(shots)
        parts.append(f"{spec.input_label}: {spec.content(example.input)}\n{spec.output_label}:")
        return SHOT_SEPARATOR.join(parts)
    profile = [CHAT_PROFILE_INTRO + SHOT_SEPARATOR + SHOT_SEPARATOR.join(shots)] if shots else []
    try:
        return tokenizer.chat_text(SHOT_SEPARATOR.join(profile + [example.input.strip()]))
    except ValueError as error:
        raise InputError(str(error)) from None


def target_text(example: Example, form: Format) -> str:
    """The reference output as it continues the prompt (after a space in the plain format; the
    authors' detection prompt appends it directly)."""
    if example.output is None or not example.output.strip():
        raise InputError(f"example {example.example_id!r}: no reference output")
    return (" " if form == "plain" else "") + example.output.strip()


def answer_stop_strings(form: Format, spec: TaskSpec) -> tuple[str, ...]:
    """Where a generated answer ends: plain and history answers at a line break (a blank line for
    multi-line tasks); chat answers at the end-of-turn token, so no stop string."""
    if form == "chat":
        return ()
    return ("\n\n",) if spec.multi_line else ("\n",)


def encode(tokenizer: PromptTokenizer, text: str, form: Format) -> list[int]:
    """Chat text carries its own special tokens; other text gets a BOS where the tokenizer wants one."""
    return tokenizer.encode(text, add_bos=form != "chat" and tokenizer.plain_text_bos)


def build_prompt(
    tokenizer: PromptTokenizer,
    example: Example,
    config: PromptConfig,
    *,
    with_profile: bool = True,
    profile: Sequence[Item] | None = None,
    answer_room: int | None = None,
) -> list[int]:
    """Token ids of the prompt of `example` (with its own profile, `profile`, or none). A config
    asking for a swapped profile is resolved by the caller, who knows the partners
    (`decoding_prompt`)."""
    spec = task_spec(example.task)
    room = answer_room if answer_room is not None else (config.answer_tokens or spec.max_new_tokens)
    budget = tokenizer.n_ctx - room
    if config.max_prompt_tokens is not None:
        budget = min(budget, config.max_prompt_tokens)
    bare = encode(tokenizer, prompt_text(tokenizer, example, None, config.format), config.format)
    if len(bare) > budget:
        raise InputError(
            f"example {example.example_id!r}: the task input alone needs {len(bare)} prompt tokens but only {budget} fit "
            f"(context {tokenizer.n_ctx}, answer room {room}, prompt cap {config.max_prompt_tokens}); "
            "task inputs are never truncated"
        )
    if not with_profile:
        return bare
    items = retrieve(example, config.profile_k, config.retriever, seed=config.seed, profile=profile)
    intro = {"chat": len(tokenizer.encode(CHAT_PROFILE_INTRO + SHOT_SEPARATOR)), "history": 1}.get(config.format, 0)
    shots = _fit_shots(tokenizer, spec, items, budget - len(bare) - intro, config.format)
    while True:  # token counts of joined texts are not exactly additive; drop items until it fits
        ids = encode(tokenizer, prompt_text(tokenizer, example, shots, config.format), config.format)
        if len(ids) <= budget:
            return ids
        shots.pop()


def _fit_shots(tokenizer: PromptTokenizer, spec: TaskSpec, items: Sequence[Item], room: int, form: Format) -> list[str]:
    separator = "\n" if form == "history" else SHOT_SEPARATOR

    def cost(text: str) -> int:
        return len(tokenizer.encode(text + separator))

    shots: list[str] = []
    for position, item in enumerate(items):
        share = room // (len(items) - position)
        whole = shot_text(spec, item, form, position + 1)
        if whole is None:
            continue
        shot: str | None = whole
        if cost(whole) > share:
            allowed = share - cost(shot_text(spec, item, form, position + 1, cut_to="") or "")
            if allowed <= 0:
                continue
            text = str(item[long_field(spec, item, form)]).strip()
            shot = shot_text(spec, item, form, position + 1, cut_to=tokenizer.decode(tokenizer.encode(text)[:allowed]).strip())
        assert shot is not None  # an item with text stays one when its text is cut
        shots.append(shot)
        room -= cost(shot)
    return shots


def decoding_prompt(
    tokenizer: PromptTokenizer,
    example: Example,
    config: PromptConfig,
    partners: Sequence[Example],
    *,
    answer_room: int | None = None,
) -> list[int]:
    """The prompt a decoding run gives `example`: with its own profile, or (`config.profile ==
    "swapped"`) with the profile of its `swap_partner` among `partners`."""
    if config.profile == "own":
        return build_prompt(tokenizer, example, config, answer_room=answer_room)
    partner = swap_partner(example, partners, config.seed)
    if partner is None:
        raise InputError(
            f"example {example.example_id!r}: a swapped profile needs another user among the examples; there is none"
        )
    return build_prompt(tokenizer, example, config, profile=partner.profile, answer_room=answer_room)


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
    tokenizer: PromptTokenizer,
    examples: Sequence[Example],
    config: PromptConfig = PromptConfig(),
    *,
    partners: Sequence[Example] | None = None,
    progress: bool = False,
) -> list[TokenizedExample]:
    """(prompt, reference) token pairs for head scoring, with the no-profile prompt and the prompt
    carrying another user's profile (`swap_partner`, drawn among `partners`, default `examples`)
    as controls. Every prompt plus the target fits the model context. Only `examples` are
    tokenized: partners lend their profiles."""
    if config.profile != "own":
        raise InputError("scoring prompts carry the user's own profile (the swapped one is built beside it as a control)")
    tokenized = []
    pool = examples if partners is None else partners
    for example in tqdm(examples, desc="tokenizing", unit="example", disable=not progress):
        target = tokenizer.encode(target_text(example, config.format))
        partner = swap_partner(example, pool, config.seed)
        swapped = (
            None
            if partner is None
            else build_prompt(tokenizer, example, config, profile=partner.profile, answer_room=len(target))
        )
        tokenized.append(
            TokenizedExample(
                example_id=example.example_id,
                user_id=example.user_id,
                prompt_ids=tuple(build_prompt(tokenizer, example, config, answer_room=len(target))),
                target_ids=tuple(target),
                no_profile_prompt_ids=tuple(
                    build_prompt(tokenizer, example, config, with_profile=False, answer_room=len(target))
                ),
                swapped_prompt_ids=None if swapped is None else tuple(swapped),
            )
        )
    return tokenized
