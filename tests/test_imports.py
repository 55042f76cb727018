"""Import structure: every top-level module imports on its own, and the packages `data`,
`scores` and `heads` do not import each other in a cycle."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import workbench

ROOT = Path(workbench.__file__).parent
PACKAGES = ("workbench.data", "workbench.scores", "workbench.heads")

# Each module is imported first, with every workbench module dropped from sys.modules before it
# (third-party libraries stay loaded, so this takes one interpreter start, not one per module).
IMPORT_EACH = """
import importlib, sys, traceback
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


def test_every_top_level_module_imports_first_in_a_fresh_interpreter():
    modules = [f"workbench.{module.name}" for module in pkgutil.iter_modules([str(ROOT)])]
    assert {"workbench.heads", "workbench.scores", "workbench.data", "workbench.profile_effect"} <= set(modules)
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def imported_modules(path: Path) -> set[str]:
    """Every `workbench...` module a source file imports, anywhere in it (functions and
    type-checking blocks included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("workbench.")}


def owner(module: str) -> str | None:
    return next((package for package in PACKAGES if module == package or module.startswith(package + ".")), None)


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for path in ROOT.rglob("*.py"):
        source = owner("workbench." + ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
        if source is None:
            continue
        for module in imported_modules(path):
            target = owner(module)
            if target is not None and target != source:
                graph[source].add(target)
    return graph


def test_no_import_cycles_between_data_scores_and_heads():
    graph = package_graph()
    assert "workbench.scores" in graph["workbench.heads"]  # heads ranks with scores' ranking
    assert "workbench.data" in graph["workbench.scores"]  # scores consume tokenized examples

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(step == goal or (step not in seen and reaches(step, goal, seen | {step})) for step in graph[start])

    cycles = [package for package in PACKAGES if reaches(package, package)]
    assert not cycles, f"import cycle through {cycles}: {graph}"
