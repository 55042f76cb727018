"""The bundled demo set: rebuilt byte for byte by its script, split by user, small, and every
output its users wrote follows their recorded style (and the style checkers can tell styles apart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.data.demo.build import build
from workbench.data.sources import DEMO_FOLDER, DEMO_TASKS, load_examples
from workbench.data.styles import apply_style, matches_style, parse_style
from workbench.data.tasks import task_spec
from workbench.errors import InputError


def test_build_script_reproduces_the_committed_files(tmp_path: Path) -> None:
    build(tmp_path)
    committed = sorted(p.relative_to(DEMO_FOLDER) for p in DEMO_FOLDER.rglob("*.json"))
    assert committed == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    for relative in committed:
        assert (tmp_path / relative).read_bytes() == (DEMO_FOLDER / relative).read_bytes(), relative
    assert sum(p.stat().st_size for p in DEMO_FOLDER.rglob("*.json")) < 1_000_000


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_users_split_by_user_and_outputs_follow_their_style(task: str) -> None:
    spec = task_spec(task)
    train, dev = load_examples(None, task, "train"), load_examples(None, task, "dev")
    assert not {e.user_id for e in train} & {e.user_id for e in dev}
    users = {e.user_id for e in train + dev}
    assert 55 <= len(users) <= 65
    for split in (train, dev):  # every style kind in both splits
        assert {e.style.split(":")[0] for e in train} == {e.style.split(":")[0] for e in split}
    for example in train + dev:
        assert 5 <= len(example.profile) <= 8
        assert matches_style(example.style, example.output), (example.example_id, example.output)
        for item in example.profile:
            assert matches_style(example.style, str(item[spec.shot_output]))


STYLES = ["lowercase", "caps", "titlecase", "question", "exclaim", "short", "quoted", "prefix:PSA:", "signature:- Rosa",
          "emoji:🌿", "hashtag:news"]  # fmt: skip
NEUTRAL = "Riverton council approves new library for families."


@pytest.mark.parametrize("style", STYLES)
def test_each_style_checker_accepts_its_style_and_rejects_plain_text(style: str) -> None:
    assert matches_style(style, apply_style(style, NEUTRAL))
    assert not matches_style(style, NEUTRAL)


def test_style_names_are_validated() -> None:
    assert parse_style("emoji:🔥") == ("emoji", "🔥")
    with pytest.raises(InputError, match="unknown style 'gothic'"):
        parse_style("gothic")
    with pytest.raises(InputError, match="needs a parameter"):
        parse_style("signature")
    with pytest.raises(InputError, match="takes no parameter"):
        parse_style("caps:x")
