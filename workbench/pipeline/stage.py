"""Stages with fingerprints: a stage's folder is reused only when everything that made it is unchanged.

A stage (a discovery, a validation study, an evaluation, ...) writes its outputs into one folder
together with `fingerprint.json`: its options, the model (name and a digest of its weights), a
content hash of its data and the fingerprints of the stages it reads. Opening the folder again:

- no fingerprint and none of the stage's outputs: a new stage; it is computed;
- the same fingerprint, finished: the outputs are reused as they are;
- the same fingerprint, unfinished (an interrupted run), or one that differs only in options the
  stage declares `resumable` (e.g. `limit`: per-example checkpoints keyed by content stay valid):
  the stage is computed again and resumes from its own checkpoints;
- any other difference, or outputs without a fingerprint: a one-line `InputError` naming what
  changed and how to start afresh. A folder is never silently reused for other options.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from workbench import io
from workbench.checkpoint import digest
from workbench.data.files import read_json
from workbench.errors import InputError

if TYPE_CHECKING:
    from workbench.data.examples import Example
    from workbench.data.tokenized import TokenizedExample
    from workbench.engine.lens import Lens

FINGERPRINT = "fingerprint.json"
T = TypeVar("T")
_WEIGHT_DIGESTS: dict[int, tuple[Any, tuple[int, ...], str]] = {}  # id(bridge) -> (bridge, versions, digest)


def weights_digest(lens: Lens) -> str:
    """A digest of every parameter's name, dtype, shape and bytes. It is hashed once per loaded
    model and hashed again only when a parameter was changed in place (torch's version counters)."""
    bridge = lens.bridge
    parameters = list(bridge.named_parameters())
    versions = tuple(parameter._version for _, parameter in parameters)
    cached = _WEIGHT_DIGESTS.get(id(bridge))
    if cached is not None and cached[0] is bridge and cached[1] == versions:
        return cached[2]
    hasher = hashlib.blake2b(digest_size=16)
    for name, parameter in parameters:
        tensor = parameter.detach().to("cpu").contiguous().reshape(-1)
        hasher.update(f"{name}:{tensor.dtype}:{tuple(parameter.shape)}".encode())
        hasher.update(tensor.view(torch.uint8).numpy().tobytes())
    value = hasher.hexdigest()
    _WEIGHT_DIGESTS[id(bridge)] = (bridge, versions, value)
    return value


def model_identity(lens: Lens) -> dict[str, str]:
    """What a stage records of the model: its name and the digest of its weights."""
    return {"name": lens.name, "weights": weights_digest(lens)}


def data_digest(examples: Sequence[Example] | Sequence[TokenizedExample]) -> str:
    """A content hash of examples: every field (input, profile, output, style; or token ids) of each, in order."""
    return digest([dataclasses.asdict(example) for example in examples])


def flat(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`options.top_k`)."""
    items: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.update(flat(value, f"{name}."))
        else:
            items[name] = value
    return items


@dataclass(frozen=True)
class Stage:
    """One stage's folder and everything its outputs depend on.

    `outputs`: the files the stage writes (their presence without a fingerprint marks an older,
    unfingerprinted run). `resumable`: option names whose change is resumed from the stage's own
    content-keyed checkpoints rather than refused. `inputs`: the stages it reads, by name."""

    name: str
    folder: Path
    options: Mapping[str, Any]
    outputs: tuple[str, ...]
    model: Mapping[str, str] | None = None
    data: str | None = None
    inputs: Mapping[str, Stage] = field(default_factory=dict)
    resumable: tuple[str, ...] = ()

    @property
    def record(self) -> dict[str, Any]:
        """The fingerprint as stored (JSON-normalised)."""
        import json

        record = {
            "stage": self.name,
            "options": dict(self.options),
            "model": dict(self.model) if self.model else None,
            "data": self.data,
            "inputs": {name: stage.digest for name, stage in self.inputs.items()},
        }
        return json.loads(json.dumps(record, sort_keys=True, default=str))

    @property
    def digest(self) -> str:
        return digest(self.record)

    def stored(self) -> dict[str, Any] | None:
        path = self.folder / FINGERPRINT
        if not path.is_file():
            return None
        stored = read_json(path)
        if not isinstance(stored, dict) or "stage" not in stored:
            raise InputError(f"{path}: not a stage fingerprint; delete {self.folder} to start afresh")
        return stored

    def check(self) -> bool:
        """True when the finished outputs can be reused; False when the stage is (re)computed.
        Raises `InputError` when the folder holds a stage made otherwise."""
        stored = self.stored()
        if stored is None:
            present = [name for name in self.outputs if _holds_something(self.folder / name)]
            if present:
                raise InputError(
                    f"{self.folder} holds {present[0]} without a fingerprint (an older or foreign run); "
                    f"use another --out, or delete {self.folder / present[0]} to start afresh"
                )
            return False
        old, new = flat({k: stored.get(k) for k in self.record}), flat(self.record)
        changed = [key for key in dict.fromkeys([*old, *new]) if old.get(key) != new.get(key)]
        hard = [key for key in changed if key.removeprefix("options.") not in self.resumable]
        if hard:
            raise InputError(
                f"{self.folder} was made with other arguments ({describe_change(hard[0], old, new)}"
                f"{f' and {len(hard) - 1} more' if len(hard) > 1 else ''}); "
                f"use another --out, or delete {self.folder} to start afresh"
            )
        finished = stored.get("finished") is True and all((self.folder / name).exists() for name in self.outputs)
        return finished and not changed

    def run(self, compute: Callable[[], T], load: Callable[[], T], *, announce: Callable[[str], None] | None = None) -> T:
        """`load()` the finished outputs when the fingerprint matches, else `compute()` them
        (which resumes from its checkpoints) and mark the stage finished."""
        if self.check():
            if announce:
                announce(f"reusing {self.folder} (fingerprint {self.digest})")
            return load()
        created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        io.write_json(self.folder / FINGERPRINT, {**self.record, "digest": self.digest, "finished": False})
        start = time.perf_counter()
        try:
            result = compute()
        except InputError:
            if [path.name for path in self.folder.iterdir()] == [FINGERPRINT]:  # bad input: leave no trace
                (self.folder / FINGERPRINT).unlink()
                if created:
                    self.folder.rmdir()
            raise
        seconds = time.perf_counter() - start
        io.write_json(self.folder / FINGERPRINT, {**self.record, "digest": self.digest, "finished": True, "seconds": seconds})
        return result


def _holds_something(path: Path) -> bool:
    """An output that exists and is not empty (an empty file is what a failed start leaves)."""
    return path.is_dir() or (path.is_file() and path.stat().st_size > 0)


def describe_change(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """`top_k 2 -> 4`, `model weights`, `data`, or `input discover-standard` for one changed key."""
    if key.startswith("options."):
        name = key.removeprefix("options.")
        return f"{name} {old.get(key)!r} -> {new.get(key)!r}"
    if key.startswith("inputs."):
        return f"input stage {key.removeprefix('inputs.')} changed"
    if key == "model.weights":
        return "other model weights"
    if key == "data":
        return "other data (content hash)"
    return f"{key} {old.get(key)!r} -> {new.get(key)!r}"
