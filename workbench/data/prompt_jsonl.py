"""The plain prompt format: a JSONL file of `{"id", "user_id", "prompt", "target"}` records.

Optional `"prompt_no_profile"` and `"prompt_swapped"` strings give the control prompts that the
contrast scores need (the same prompt without the user's profile, and with another user's).
Each prompt becomes a user turn of the model's chat template (raw text, with BOS, when the model
has none); the target is tokenized as it stands and appended by the scorers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.data.tokenized import TokenizedExample
from workbench.data.tokenizer import PromptTokenizer
from workbench.errors import InputError

REQUIRED_FIELDS = ("id", "user_id", "prompt", "target")
CONTROL_FIELDS = {"prompt_no_profile": "no_profile_prompt_ids", "prompt_swapped": "swapped_prompt_ids"}


def read_prompt_records(path: str | Path) -> list[dict[str, str]]:
    """Parse and check the records of a prompt JSONL file (blank lines are skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason})") from None
    records: list[dict[str, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not valid JSON ({error.msg})") from None
        records.append(_checked_record(record, where))
        if record["id"] in seen:
            raise InputError(f"{where}: duplicate id {record['id']!r}")
        seen.add(record["id"])
    if not records:
        raise InputError(f"{path}: no records")
    return records


def _checked_record(record: Any, where: str) -> dict[str, str]:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise InputError(f"{where}: missing field {name!r}")
    for name in REQUIRED_FIELDS + tuple(CONTROL_FIELDS):
        if name in record and record[name] is not None:
            value = record[name]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name in ("id", "user_id"):
                record[name] = str(value)
            elif not isinstance(value, str):
                raise InputError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
            if not record[name].strip():
                raise InputError(f"{where}: field {name!r} is empty")
    return record


def encode_prompt(tokenizer: PromptTokenizer, prompt: str) -> list[int]:
    """The prompt as a chat-template user turn, or raw text with BOS for models without one."""
    return tokenizer.encode_chat(prompt) if tokenizer.has_chat_template else tokenizer.encode(prompt, add_bos=True)


def tokenize_pair(
    tokenizer: PromptTokenizer,
    example_id: str,
    user_id: str,
    prompt: str,
    target: str,
    *,
    prompt_no_profile: str | None = None,
    prompt_swapped: str | None = None,
) -> TokenizedExample:
    """One scored example from prompt and reference-output text, checked against the context."""
    controls = {"no_profile_prompt_ids": prompt_no_profile, "swapped_prompt_ids": prompt_swapped}
    example = TokenizedExample(
        example_id=example_id,
        user_id=user_id,
        prompt_ids=tuple(encode_prompt(tokenizer, prompt)),
        target_ids=tuple(tokenizer.encode(target)),
        **{name: None if text is None else tuple(encode_prompt(tokenizer, text)) for name, text in controls.items()},
    )
    example.check_fits(tokenizer.n_ctx)
    return example


def load_prompt_jsonl(path: str | Path, tokenizer: PromptTokenizer) -> list[TokenizedExample]:
    """Read a prompt JSONL file and tokenize every record for `lens`."""
    examples = []
    for record in read_prompt_records(path):
        try:
            examples.append(
                tokenize_pair(
                    tokenizer,
                    record["id"],
                    record["user_id"],
                    record["prompt"],
                    record["target"],
                    prompt_no_profile=record.get("prompt_no_profile"),
                    prompt_swapped=record.get("prompt_swapped"),
                )
            )
        except InputError as error:
            raise InputError(f"{path}: {error}") from None
    return examples
