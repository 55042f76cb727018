"""Atomic writes: the target appears whole or not at all, and with the permissions of any new file
(0666 less the umask, like `open(path, "w")`), not the private 0600 of a temporary file."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from workbench import io


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_the_permissions_of_an_ordinary_new_file(tmp_path, umask) -> None:
    with open(tmp_path / "plain.txt", "w") as handle:  # the reference: what any program would create
        handle.write("x")
    io.write_text(tmp_path / "text.txt", "x")
    io.write_json(tmp_path / "data.json", {"a": 1})
    io.write_parquet(tmp_path / "table.parquet", pd.DataFrame({"a": [1]}))
    expected = mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~umask
    for name in ("text.txt", "data.json", "table.parquet"):
        assert mode(tmp_path / name) == expected, name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "result.json"
    io.write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), io.atomic_open(target) as handle:
        handle.write('{"version": 2, "half')
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
