"""The studio's examples: a task example of the run's data or a typed-in prompt, and the prompt
each *profile state* gives it.

A profile state is `own` (the user's own profile), `off` (the same prompt without any profile) or
`swap:<user id>` (another user's profile in the same prompt). Task examples build their prompts
with the library's prompt builder, exactly as `workbench discover` / `validate` do. Typed
examples are plain text by default, encoded as the plain prompt format encodes its prompts (a
BOS only where the tokenizer puts one: a few-shot completion; in the chat template the model
ignores the profile, see README), or a chat-template user turn when asked; records of a prompt
JSONL are encoded as `discover` encodes them. Every example says where a generated answer ends
(`stop_strings`), as `evaluate` does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from workbench.data.examples import Example
from workbench.data.prompt_jsonl import encode_prompt, read_prompt_records
from workbench.data.prompts import (
    PromptConfig,
    answer_stop_strings,
    build_prompt,
    encode,
    shot_text,
    swap_partner,
    target_text,
)
from workbench.data.retrieval import retrieve
from workbench.data.sources import load_examples
from workbench.data.tasks import task_spec
from workbench.engine.lens import Lens
from workbench.errors import InputError
from workbench.studio.runfolder import TaskSource

MAX_TEXT_CHARS = 100_000  # typed text beyond this is refused before it is tokenized
PROFILE_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ProfileState:
    mode: Literal["own", "off", "swap"] = "own"
    partner: str | None = None  # the user whose profile is swapped in

    @classmethod
    def parse(cls, text: str | None) -> ProfileState:
        text = text or "own"
        if text in ("own", "off"):
            return cls(text)  # type: ignore[arg-type]
        if text.startswith("swap:") and len(text) > len("swap:"):
            return cls("swap", text[len("swap:") :])
        raise InputError(f"unknown profile state {text!r}; use own, off or swap:<user id>")

    @property
    def key(self) -> str:
        return self.mode if self.mode != "swap" else f"swap:{self.partner}"

    def describe(self) -> str:
        return {"own": "own profile", "off": "no profile"}.get(self.mode, f"profile of user {self.partner}")


OFF = ProfileState("off")


class StudioExample(ABC):
    """One (prompt, reference) example as the page shows it, with its prompt per profile state."""

    key: str
    user_id: str
    label: str
    task_input: str
    profile_items: tuple[str, ...]
    reference: str
    target_ids: tuple[int, ...]
    stop_strings: tuple[str, ...]  # where a generated answer ends (`evaluate`'s stop strings)

    def __init__(self) -> None:
        self._prompts: dict[str, tuple[int, ...]] = {}

    def prompt_ids(self, state: ProfileState) -> tuple[int, ...]:
        if state.key not in self._prompts:
            self._prompts[state.key] = tuple(self._build_prompt(state))
        return self._prompts[state.key]

    @abstractmethod
    def _build_prompt(self, state: ProfileState) -> Sequence[int]: ...

    def swap_partners(self) -> list[str]:
        """Users whose profile can be swapped in (none for typed examples)."""
        return []

    def default_partner(self) -> str | None:
        return None


class TaskExample(StudioExample):
    """An example of the run's task data; swapped profiles come from the other examples of its split."""

    def __init__(self, lens: Lens, example: Example, split: list[Example], config: PromptConfig):
        super().__init__()
        self.lens, self.example, self.split, self.config = lens, example, split, config
        self.key, self.user_id = example.example_id, example.user_id
        self.task_input = example.input
        self.reference = (example.output or "").strip()
        words = " ".join(example.input.split()[-8:])
        self.label = f"{example.example_id} · user {example.user_id} · …{words}"
        self.target_ids = tuple(lens.encode(target_text(example, config.format)))
        self.stop_strings = answer_stop_strings(config.format, task_spec(example.task))

    @cached_property
    def profile_items(self) -> tuple[str, ...]:  # type: ignore[override]
        spec = task_spec(self.example.task)
        shots = (
            shot_text(spec, item)
            for item in retrieve(self.example, self.config.profile_k, self.config.retriever, seed=self.config.seed)
        )
        return tuple(shot for shot in shots if shot is not None)

    def _partner(self, user_id: str) -> Example:
        for other in self.split:
            if other.user_id == user_id and user_id != self.user_id:
                return other
        raise InputError(f"no other user {user_id!r} in this split to swap profiles with")

    def _build_prompt(self, state: ProfileState) -> list[int]:
        room = len(self.target_ids)
        if state.mode == "off":
            return build_prompt(self.lens, self.example, self.config, with_profile=False, answer_room=room)
        profile = None if state.mode == "own" else self._partner(state.partner).profile  # type: ignore[arg-type]
        return build_prompt(self.lens, self.example, self.config, profile=profile, answer_room=room)

    def swap_partners(self) -> list[str]:
        return sorted({other.user_id for other in self.split if other.user_id != self.user_id})

    def default_partner(self) -> str | None:
        partner = swap_partner(self.example, self.split, self.config.seed)
        return None if partner is None else partner.user_id


class TextExample(StudioExample):
    """A prompt given as text: typed in the page, or a record of a prompt JSONL file. `profile`
    (typed) is put before the prompt; a record gives its prompt without profile itself. `task`
    (a task name, else `generic`) says where answers end; `chat` wraps the text in the chat template."""

    def __init__(
        self,
        lens: Lens,
        key: str,
        user_id: str,
        prompt: str,
        reference: str,
        *,
        profile: str = "",
        no_profile_prompt: str | None = None,
        chat: bool = False,
        task: str = "generic",
    ):
        super().__init__()
        for name, text in (("prompt", prompt), ("reference", reference), ("profile", profile)):
            if not isinstance(text, str):
                raise InputError(f"the {name} must be text")
            if len(text) > MAX_TEXT_CHARS:
                raise InputError(f"the {name} has {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted")
        if not prompt.strip():
            raise InputError("the prompt is empty")
        if not reference.strip():
            raise InputError("the reference output is empty")
        if chat and not lens.has_chat_template:
            raise InputError(f"model {lens.name!r} has no chat template; untick 'chat template'")
        self.lens, self.key, self.user_id, self.chat = lens, key, user_id, chat
        self.task_input, self.reference = prompt, reference
        self.profile_items = (profile.strip(),) if profile.strip() else ()
        self.label = f"typed · {' '.join(prompt.split()[:8])}"
        self._with_profile = PROFILE_SEPARATOR.join([*self.profile_items, prompt]) if no_profile_prompt is None else prompt
        self._without_profile = prompt if no_profile_prompt is None else no_profile_prompt
        self.target_ids = tuple(lens.encode(reference))
        spec = task_spec(task if _is_task(task) else "generic")
        self.stop_strings = answer_stop_strings("chat" if chat else "plain", spec)
        for state in (ProfileState("own"), OFF):
            self._check_fits(self.prompt_ids(state), state)

    def _encode(self, text: str) -> list[int]:
        return self.lens.encode_chat(text) if self.chat else encode(self.lens, text, "plain")

    def _build_prompt(self, state: ProfileState) -> list[int]:
        if state.mode == "swap":
            raise InputError("a typed example has no other users' profiles to swap in")
        return self._encode(self._with_profile if state.mode == "own" else self._without_profile)

    def _check_fits(self, prompt: Sequence[int], state: ProfileState) -> None:
        n_ctx = self.lens.geometry.n_ctx
        if len(prompt) + len(self.target_ids) > n_ctx:
            raise InputError(
                f"the prompt with {state.describe()} ({len(prompt)} tokens) plus the reference ({len(self.target_ids)} tokens) "
                f"exceeds the model context of {n_ctx} tokens"
            )


class RecordExample(TextExample):
    """A record of a prompt JSONL file: its texts encoded as `discover` encodes them (the chat
    template where the model has one, else the text with BOS)."""

    def _encode(self, text: str) -> list[int]:
        return encode_prompt(self.lens, text)


def load_split(lens: Lens, source: TaskSource, split: str) -> list[StudioExample]:
    """The examples of one split of the run's data (with references), in file order."""
    config = PromptConfig(
        format=source.prompt_format,  # type: ignore[arg-type]
        profile_k=source.k,
        seed=source.seed,
        max_prompt_tokens=source.max_prompt_tokens,
    )
    if is_prompt_file(source):
        records = read_prompt_records(source.data)  # type: ignore[arg-type]
        return [
            RecordExample(
                lens,
                r["id"],
                r["user_id"],
                r["prompt"],
                r["target"],
                no_profile_prompt=r.get("prompt_no_profile"),
                chat=lens.has_chat_template,
            )
            for r in records
        ]
    examples = task_examples(source, split)
    return [TaskExample(lens, example, examples, config) for example in examples]


def is_prompt_file(source: TaskSource) -> bool:
    """Whether the run's data is a JSONL of ready prompt records (no task builds its prompts)."""
    return source.data is not None and source.data.endswith(".jsonl") and not _is_task(source.task)


def task_examples(source: TaskSource, split: str) -> list[Example]:
    """The examples of one split of the run's task data that have a reference output (read, not
    tokenized: a command checks the data with this before the model loads)."""
    examples = [e for e in load_examples(source.data, source.task, split) if e.output and e.output.strip()]
    if not examples:
        raise InputError(f"split {split!r} of {source.data or 'the demo set'} has no examples with a reference output")
    return examples


def _is_task(name: str) -> bool:
    try:
        task_spec(name)
    except InputError:
        return False
    return True
