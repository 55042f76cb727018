"""A resumable per-item checkpoint store: one small `.npz` file per finished item.

A long run saves each item (an example, a batch, ...) as soon as it is done, so an interrupted
run loses at most the item in progress. The folder records a fingerprint of the arguments that
produced it; opening it with a different fingerprint is an error, never a silent reuse.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from workbench import io
from workbench.errors import InputError

MANIFEST = "fingerprint.json"


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (for fingerprints of inputs too large to store)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(json.dumps(part, sort_keys=True, default=str).encode())
    return hasher.hexdigest()[:16]


class CheckpointStore:
    """Per-item arrays under `folder`, guarded by a fingerprint of the run's arguments."""

    def __init__(self, folder: str | Path, fingerprint: dict[str, Any]):
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        manifest = self.folder / MANIFEST
        if manifest.is_file():
            stored = json.loads(manifest.read_text(encoding="utf-8"))
            if stored != self.fingerprint:
                changed = sorted(k for k in stored.keys() | self.fingerprint.keys() if stored.get(k) != self.fingerprint.get(k))
                raise InputError(
                    f"checkpoint {self.folder} was made with other arguments "
                    f"(differs in: {', '.join(_change(name, stored, self.fingerprint) for name in changed)}); "
                    "use another output folder or delete the checkpoint"
                )
        else:
            io.write_json(manifest, self.fingerprint)

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def load(self, key: str) -> dict[str, np.ndarray]:
        with np.load(self._path(key)) as stored:
            if str(stored["__key__"]) != key:
                raise InputError(f"checkpoint {self.folder}: entry for {key!r} holds {str(stored['__key__'])!r}")
            return {name: stored[name] for name in stored.files if name != "__key__"}

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        with io.atomic_path(self._path(key)) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, __key__=np.array(key), **arrays)  # type: ignore[arg-type]  # numpy's stub: **arrays may hit allow_pickle


def _change(name: str, stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    """`name (old -> new)`, or just `name` when the values are long (a geometry, a digest list)."""
    old, new = (_shown(values.get(name)) for values in (stored, wanted))
    return name if len(old) + len(new) > 60 else f"{name} ({old} -> {new})"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
