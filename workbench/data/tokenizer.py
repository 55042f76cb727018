"""What building prompts needs from a model's tokenizer: the `PromptTokenizer` protocol.

The data layer turns examples into token ids without knowing the model behind them; the lens
(`workbench.engine.lens.Lens`) is the one implementation, and a test can pass any object with
these members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class PromptTokenizer(Protocol):
    @property
    def n_ctx(self) -> int:
        """The model's context length in tokens."""
        ...

    @property
    def has_chat_template(self) -> bool: ...

    @property
    def plain_text_bos(self) -> bool:
        """Whether plain (non-chat) text starts with a BOS token for this model."""
        ...

    def chat_text(self, user: str, system: str | None = None) -> str: ...

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...

    def encode_chat(self, user: str, system: str | None = None) -> list[int]: ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str: ...
