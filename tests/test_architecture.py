"""The house's shape holds: the layers of `pyproject.toml`'s import-linter contracts (each layer
imports only from the layers below it, no module of any package in an import cycle with its
siblings), checked by `lint-imports` itself; and every module imports first in a fresh
interpreter (no import that only works because another module happened to be loaded before);
and the package's static types check clean (mypy, configured in `pyproject.toml`)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import workbench

ROOT = Path(workbench.__file__).parent
CONTRACTS = ("workbench layers: data flows one way", "no import cycles among the modules of any package")

# Each module is imported first, with every workbench module dropped from sys.modules before it
# (third-party libraries stay loaded, so this takes one interpreter start, not one per module).
IMPORT_EACH = """
import importlib, sys
failures = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "workbench" or m.startswith("workbench.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failures.append(f"{name}: {type(error).__name__}: {error}")
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=ROOT.parent, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for name in CONTRACTS:
        assert f"{name} KEPT" in done.stdout


def test_every_module_imports_first_in_a_fresh_interpreter():
    modules = [info.name for info in pkgutil.walk_packages([str(ROOT)], "workbench.")]
    assert {"workbench.engine.lens", "workbench.scores.pcs", "workbench.pipeline.run", "workbench.studio.app"} <= set(modules)
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_static_types_are_clean():
    """mypy over workbench/ (libraries without type information count as Any; see pyproject.toml)."""
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(ROOT.parent / ".mypy_cache")],
                          capture_output=True, text=True, cwd=ROOT.parent, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout
