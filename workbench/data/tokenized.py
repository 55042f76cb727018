"""Tokenized examples: what head scoring consumes.

A `TokenizedExample` is one (prompt, reference output) pair as token ids, plus the control
prompts that contrast scores need: the same prompt without the user's profile, and the same
prompt with another user's profile. Loaders and prompt builders produce them; scorers never
tokenize text themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import InputError


@dataclass(frozen=True)
class TokenizedExample:
    example_id: str
    user_id: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    no_profile_prompt_ids: tuple[int, ...] | None = None
    swapped_prompt_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("prompt_ids", "target_ids", "no_profile_prompt_ids", "swapped_prompt_ids"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(token) for token in value))
        if not self.prompt_ids:
            raise InputError(f"example {self.example_id!r}: empty prompt")
        if not self.target_ids:
            raise InputError(f"example {self.example_id!r}: empty target (reference output)")

    def check_fits(self, n_ctx: int) -> None:
        """Raise if the prompt (or a control prompt) plus the target exceeds the model context."""
        for name in ("prompt_ids", "no_profile_prompt_ids", "swapped_prompt_ids"):
            prompt = getattr(self, name)
            if prompt is not None and len(prompt) + len(self.target_ids) > n_ctx:
                raise InputError(
                    f"example {self.example_id!r}: {name} ({len(prompt)} tokens) plus target "
                    f"({len(self.target_ids)} tokens) exceeds the model context of {n_ctx} tokens"
                )
