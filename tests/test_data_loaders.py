"""Loading LaMP, LongLaMP and generic files: official-schema fixtures load; malformed files give
errors naming the file, record and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from workbench.data.generic import load_generic
from workbench.data.lamp import load_lamp
from workbench.data.longlamp import load_longlamp
from workbench.data.sources import load_examples
from workbench.data.tasks import task_spec
from workbench.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures"
LAMP = FIXTURES / "lamp"
GOLDS = {
    "LaMP-1": ["[1]", "[2]"],
    "LaMP-2": ["romance", "dark comedy"],
    "LaMP-3": ["1", "4"],
    "LaMP-4": ["New bridge opens over river", "Snow shuts mountain pass"],
    "LaMP-5": ["Preference heads in language models", "Decoding: a survey"],
    "LaMP-7": ['Listening to "Listen to Eason Chan" it\'s a good album ', "late train AGAIN this morning"],
}


@pytest.mark.parametrize("task", sorted(GOLDS))
def test_official_lamp_fixtures_load(task: str) -> None:
    raw = json.loads((LAMP / task / "dev" / "dev_questions.json").read_text())
    examples = load_examples(LAMP / task, task, "dev")  # `{split}/` subfolder layout
    assert [e.output for e in examples] == GOLDS[task]
    assert [e.example_id for e in examples] == [r["id"] for r in raw]
    assert [e.user_id for e in examples] == [r["id"] for r in raw]  # user-based split: no user_id field
    assert [list(e.profile) for e in examples] == [r["profile"] for r in raw]
    assert all(e.task == task and e.input == r["input"] for e, r in zip(examples, raw))


def _copy(task: str, tmp_path: Path) -> tuple[Path, Path]:
    """Flat copy (`{split}_questions.json` directly in the folder) to corrupt."""
    for name in ("dev_questions.json", "dev_outputs.json"):
        shutil.copy(LAMP / task / "dev" / name, tmp_path / name)
    return tmp_path / "dev_questions.json", tmp_path / "dev_outputs.json"


def _rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda q, o: q[1].pop("input"), r"record 1: missing field 'input'"),
        (lambda q, o: q[0].__setitem__("profile", "none"), r"record 0: field 'profile' must be list, got str"),
        (lambda q, o: q[0].__setitem__("profile", []), r"record 0 \(id '130'\): empty profile"),
        (lambda q, o: q[0]["profile"][1].pop("title"), r"record 0 \(id '130'\), profile item 1: missing field 'title'"),
        (lambda q, o: q[1].__setitem__("input", 7), r"record 1: field 'input' must be str, got int"),
        (
            lambda q, o: q[1].__setitem__("id", "999"),
            r"dev_outputs.json: 1 question id\(s\) have no gold here, ids of dev_questions.json \(e.g. '999'\)",
        ),
        (
            lambda q, o: o["golds"].pop(),
            r"dev_outputs.json: 1 question id\(s\) have no gold here, ids of dev_questions.json \(e.g. '131'\)",
        ),
        (
            lambda q, o: o["golds"].append({"id": "777", "output": "x"}),
            r"dev_questions.json: 1 gold id\(s\) have no question here, ids of dev_outputs.json \(e.g. '777'\)",
        ),
        (lambda q, o: o["golds"][0].pop("output"), r"dev_outputs.json, gold 0: missing field 'output'"),
        (lambda q, o: o.__setitem__("task", "LaMP_5"), r"file is for task 'LaMP_5', but task LaMP-4 was requested"),
        (lambda q, o: q.append(dict(q[0])), r"record 2 \(id '130'\): duplicate id"),
    ],
)
def test_malformed_lamp_files_name_the_problem(tmp_path: Path, corrupt, message: str) -> None:
    questions, outputs = _copy("LaMP-4", tmp_path)
    q, o = json.loads(questions.read_text()), json.loads(outputs.read_text())
    corrupt(q, o)
    questions.write_text(json.dumps(q))
    outputs.write_text(json.dumps(o))
    with pytest.raises(InputError, match=message):
        load_examples(tmp_path, "LaMP-4", "dev")


def test_non_utf8_and_malformed_json_are_refused(tmp_path: Path) -> None:
    questions, outputs = _copy("LaMP-4", tmp_path)
    questions.write_bytes(questions.read_bytes().replace(b"bridge", b"br\xe9dge"))
    with pytest.raises(InputError, match=r"dev_questions.json: not UTF-8 text"):
        load_lamp(questions, outputs)
    questions.write_text('[{"id": "130",')
    message = r"dev_questions.json: malformed JSON: expecting property name enclosed in double quotes at line 1, column 15 \(is"
    with pytest.raises(InputError, match=message):
        load_lamp(questions, outputs)


def test_quirks_numeric_ids_bom_and_lamp2_input_without_description(tmp_path: Path) -> None:
    questions, outputs = _copy("LaMP-2", tmp_path)
    _rewrite(questions, lambda q: q[0].update(id=110, input="Roman Holiday, a princess in Rome"))
    _rewrite(outputs, lambda o: o["golds"][0].update(id=110))
    questions.write_bytes(b"\xef\xbb\xbf" + questions.read_bytes())
    with pytest.warns(UserWarning, match="lacks 'description:'"):
        examples = load_examples(tmp_path, "LaMP-2", "dev")
    assert examples[0].example_id == "110" and examples[0].output == "romance"
    spec = task_spec("LaMP-2")
    assert spec.query(examples[0].input) == "Roman Holiday, a princess in Rome"
    assert spec.query(examples[1].input) == "A bleakly funny story about a funeral gone wrong."


def test_lamp6_and_unknown_tasks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="LaMP-6 .* licensed Avocado corpus"):
        load_examples(LAMP / "LaMP-4", "LaMP_6", "dev")
    questions, outputs = _copy("LaMP-4", tmp_path)
    _rewrite(outputs, lambda o: o.update(task="LaMP_6"))
    with pytest.raises(InputError, match="Avocado"):
        load_lamp(questions, outputs)
    _rewrite(outputs, lambda o: o.update(task="LaMP_4"))
    _rewrite(questions, lambda q: q[0].update(input="147-000874-EM.txt"))
    with pytest.raises(InputError, match="record 0 .*Avocado file name"):
        load_lamp(questions, outputs)
    with pytest.raises(InputError, match="unknown task 'LaMP-9'"):
        task_spec("LaMP-9")


def test_missing_split_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no train_questions.json here or in .*train"):
        load_examples(LAMP / "LaMP-4", "LaMP-4", "train")


def test_questions_without_outputs_load_without_gold() -> None:
    examples = load_lamp(LAMP / "LaMP-7" / "dev" / "dev_questions.json", None, "LaMP-7")
    assert [e.output for e in examples] == [None, None]


def test_a_lamp_folder_without_gold_outputs_is_refused_at_load_time(tmp_path: Path) -> None:
    """Not at evaluation time as "no gold output for id ...": the missing file is named."""
    shutil.copytree(LAMP / "LaMP-7", tmp_path / "LaMP-7")
    (tmp_path / "LaMP-7" / "dev" / "dev_outputs.json").unlink()
    with pytest.raises(InputError, match=r"LaMP-7/dev: no dev_outputs.json \(the gold outputs\); evaluation and head"):
        load_examples(tmp_path / "LaMP-7", "LaMP-7", "dev")
    examples = load_examples(tmp_path / "LaMP-7", "LaMP-7", "dev", need_gold=False)
    assert [e.output for e in examples] == [None, None]


@pytest.mark.parametrize(
    ("styles", "message"),
    [
        ({"u1": "sparkly"}, "user 'u1': unknown style 'sparkly'"),
        ({"u1": "emoji"}, "user 'u1': style 'emoji': kind 'emoji' needs a parameter"),
    ],
)
def test_a_styles_file_of_another_format_fails_at_load_time(tmp_path: Path, styles, message) -> None:
    """Before any model work, naming the file and the user (it used to fail when the first batch was scored)."""
    shutil.copytree(LAMP / "LaMP-7", tmp_path / "LaMP-7")
    (tmp_path / "LaMP-7" / "styles.json").write_text(json.dumps(styles))
    with pytest.raises(InputError, match=r"styles.json: " + message):
        load_examples(tmp_path / "LaMP-7", "LaMP-7", "dev")
    (tmp_path / "LaMP-7" / "styles.json").write_text(json.dumps({"u1": "emoji:🌿"}))
    assert load_examples(tmp_path / "LaMP-7", "LaMP-7", "dev")


def test_longlamp_jsonl_and_parquet(tmp_path: Path) -> None:
    jsonl = FIXTURES / "longlamp_abstract.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    from_jsonl = load_longlamp(jsonl, "LongLaMP-2")
    assert [(e.user_id, e.output) for e in from_jsonl] == [(r["name"], r["output"]) for r in rows]
    pd.DataFrame(rows).to_parquet(tmp_path / "val.parquet")
    from_parquet = load_examples(tmp_path, "LongLaMP-2", "val")
    assert [list(e.profile) for e in from_parquet] == [r["profile"] for r in rows]
    assert [e.input for e in from_parquet] == [e.input for e in from_jsonl]
    with pytest.raises(InputError, match="LongLaMP rows need a LongLaMP task"):
        load_longlamp(jsonl, "LaMP-4")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "profile": [{"abstract": "no title"}]}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl, line 1, profile item 0: missing field 'title'"):
        load_longlamp(bad, "LongLaMP-2")


def test_generic_jsonl(tmp_path: Path) -> None:
    examples = load_examples(FIXTURES / "generic.jsonl", "generic")
    assert [(e.example_id, e.user_id, e.style) for e in examples] == [("g1", "ann", "lowercase"), ("g2", "bob", None)]
    assert examples[0].profile[1] == {"output": "short and sweet"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "user_id": "u", "input": "i", "output": "o", "profile": [], "style": "lowercase"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl, line 1: empty profile"):
        load_generic(bad)
    bad.write_text('{"id": "x"}\nnot json\n')
    with pytest.raises(InputError, match=r"bad.jsonl, line 1: missing field 'user_id'"):
        load_generic(bad)
