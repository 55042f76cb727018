"""Atomic file output: write to a temporary sibling, flush to disk, then rename over the target,
so an interrupted run never leaves a half-written result behind."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _new_sibling(target: Path) -> Path:
    """Create an empty, uniquely named temporary file next to `target`, with the permissions of
    any new file (0666 less the umask: `tempfile.mkstemp` would make it private, 0600)."""
    while True:
        temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temporary
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _new_sibling(target)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    with atomic_path(path) as temporary, open(temporary, mode, encoding=None if "b" in mode else encoding) as handle:
        yield handle


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_parquet(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as Parquet, atomically."""
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)
