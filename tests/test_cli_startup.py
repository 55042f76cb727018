"""The command line starts fast: importing `workbench.cli`, parsing, and every `--help` load no
torch, transformers or transformer_lens (issue 22.4; their imports take seconds). Checked through
`sys.modules` in a fresh interpreter, not with a timer; `benchmarks/bench_cli.py` times it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench.commands import _decoder_options

HEAVY = ("torch", "transformers", "transformer_lens", "pandas")

pytestmark = pytest.mark.unit


def modules_loaded_by(code: str) -> list[str]:
    """The heavy modules present after `code` runs in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_torch() -> None:
    assert modules_loaded_by("import workbench.cli") == []


def test_every_help_and_a_parse_error_import_no_torch() -> None:
    code = """
import typer
from typer.testing import CliRunner
from workbench.cli import app
group = typer.main.get_command(app)
runner = CliRunner()
assert runner.invoke(app, ["--help"]).exit_code == 0
for name, command in group.commands.items():
    paths = [[name, sub] for sub in command.commands] if hasattr(command, "commands") else [[name]]
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
assert runner.invoke(app, ["discover", "--top-k", "x", "--out", "o"]).exit_code == 2
"""
    assert modules_loaded_by(code) == []


def test_the_decoder_options_snapshot_matches_the_registry() -> None:
    """The command line reads decoder options from a snapshot; it must equal the live registry
    (refresh: `python -m workbench.commands._decoder_options`)."""
    snapshot = json.loads(_decoder_options.SNAPSHOT.read_text(encoding="utf-8"))
    assert snapshot["sources"] == _decoder_options.sources_digest(), "stale: python -m workbench.commands._decoder_options"
    assert snapshot["decoders"] == _decoder_options.registry_surface()
    assert _decoder_options.surface() == snapshot["decoders"]


def test_a_stale_snapshot_falls_back_to_the_registry(monkeypatch, tmp_path) -> None:
    stale = tmp_path / "decoder_options.json"
    stale.write_text(json.dumps({"sources": "edited since", "decoders": {"greedy": {"options": []}}}))
    monkeypatch.setattr(_decoder_options, "SNAPSHOT", stale)
    _decoder_options.surface.cache_clear()
    try:
        assert _decoder_options.surface() == _decoder_options.registry_surface()
    finally:
        _decoder_options.surface.cache_clear()
