from __future__ import annotations

import json

import pytest

from workbench.data.prompt_jsonl import load_prompt_jsonl, read_prompt_records, tokenize_pair
from workbench.errors import InputError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def record(**fields):
    base = {"id": "e1", "user_id": "u1", "prompt": "Write a title.", "target": "A title"}
    return json.dumps({**base, **fields})


def test_prompt_is_a_chat_user_turn_and_target_is_appended_raw(tiny, tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [record(prompt_no_profile="Bare.", prompt_swapped="Other."), "", record(id="e2")])
    first, second = load_prompt_jsonl(path, tiny)
    assert list(first.prompt_ids) == tiny.encode(tiny.chat_text("Write a title."))
    assert list(first.target_ids) == tiny.encode("A title")
    assert list(first.no_profile_prompt_ids) == tiny.encode(tiny.chat_text("Bare."))
    assert list(first.swapped_prompt_ids) == tiny.encode(tiny.chat_text("Other."))
    assert second.example_id == "e2" and second.no_profile_prompt_ids is None


def test_model_without_chat_template_gets_raw_prompt_with_bos(tiny, monkeypatch):
    monkeypatch.setattr(tiny.tokenizer, "chat_template", None)
    example = tokenize_pair(tiny, "e", "u", "hi", "yo")
    assert list(example.prompt_ids) == [tiny.tokenizer.bos_token_id] + tiny.encode("hi")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1: not valid JSON"),
        ("[1, 2]", "line 1: expected a JSON object"),
        (json.dumps({"id": "a", "user_id": "u", "prompt": "p"}), "missing field 'target'"),
        (record(target=""), "field 'target' is empty"),
        (record(prompt=3), "field 'prompt' must be a string"),
    ],
)
def test_malformed_records_name_file_line_and_field(tmp_path, line, message):
    path = write_lines(tmp_path / "bad.jsonl", [line])
    with pytest.raises(InputError, match=message) as error:
        read_prompt_records(path)
    assert str(path) in str(error.value)


def test_duplicate_ids_and_empty_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="line 2: duplicate id 'e1'"):
        read_prompt_records(write_lines(tmp_path / "dup.jsonl", [record(), record()]))
    with pytest.raises(InputError, match="no records"):
        read_prompt_records(write_lines(tmp_path / "empty.jsonl", [""]))


def test_example_longer_than_the_context_is_refused(tiny, tmp_path):
    path = write_lines(tmp_path / "long.jsonl", [record(target="x" * (tiny.geometry.n_ctx + 1))])
    with pytest.raises(InputError, match="exceeds the model context"):
        load_prompt_jsonl(path, tiny)
