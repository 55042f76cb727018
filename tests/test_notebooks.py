"""Every notebook in notebooks/ runs top to bottom on small settings (a tiny random model, a small
run folder made by the pipeline on it) and shows what it promises: the outputs are checked, not
only the absence of errors. The notebooks' own assert cells check each figure against its table.
What a notebook stores must read anywhere: every figure also as a PNG (a static viewer such as
GitHub cannot run plotly), and no path of the machine that ran it."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration  # whole jobs end to end

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TINY_RUN = Path(__file__).parent / "fixtures" / "demo-run-tiny"  # tests/test_pipeline.py's SMALL run, checkpoints dropped
SETTINGS = {  # notebook: (environment, texts its outputs must show)
    "head_ablation_tour.ipynb": (
        {"WORKBENCH_NOTEBOOK_MODEL": "tiny"},
        ["Lens('tiny-llama", "'standard': [(", "'profile-contrast': [(", "delta_nll", "random"],
    ),
    "run_folder_to_figures.ipynb": (
        {"WORKBENCH_RUN": str(TINY_RUN)},
        [
            "PCS results: ['standard', 'profile-contrast', 'cluster 0 · standard'",
            "mean_delta_nll",
            "dps-profile-contrast",
            "'pcs-side-by-side'",
        ],
    ),
    "clusters_and_routing.ipynb": (
        {"WORKBENCH_RUN": str(TINY_RUN)},
        [
            "users in K = 2 clusters",
            "cluster sizes (users): [",
            "cluster 0: heads [(",
            "'cluster 1':",
            "soft-routed heads",
            "mean_cosine_to_global",
            "dps-routed-soft",
        ],
    ),
}


PLOT, PNG = "application/vnd.plotly.v1+json", "image/png"
MACHINE_PATH = re.compile(r"/root\b|/home/|/work/|\.venv\b")  # where a developer's files live


def stored_strings(value, key: str = ""):
    """Every string of a notebook's JSON except binary payloads (images, plotly's base64 arrays),
    whose characters could spell anything."""
    if isinstance(value, str):
        if not (key.startswith("image/") or key == "bdata"):
            yield value
    elif isinstance(value, dict):
        for inner_key, inner in value.items():
            yield from stored_strings(inner, inner_key)
    elif isinstance(value, list):
        for inner in value:
            yield from stored_strings(inner, key)


def unreadable_outputs(notebook) -> list[str]:
    """What a reader elsewhere could not use: plots without a PNG, paths of the machine that ran it."""
    problems = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data", {})
            if PLOT in data and PNG not in data:
                problems.append(f"cell {index}: a plot without a PNG")
        problems += [f"cell {index}: {match.group()!r} in {text[:80]!r}" for text in stored_strings(dict(cell))
                     for match in [MACHINE_PATH.search(text)] if match]  # fmt: skip
    return problems + [
        f"metadata: {text[:80]!r}" for text in stored_strings(dict(notebook.metadata)) if MACHINE_PATH.search(text)
    ]


def outputs_text(notebook) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            texts.append(output.get("text", ""))
            texts += [str(value) for key, value in output.get("data", {}).items() if key.startswith("text/")]
    return "\n".join(texts)


def test_every_notebook_has_settings():
    assert NOTEBOOKS and {path.name for path in NOTEBOOKS} == set(SETTINGS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_and_shows_its_content(path, tmp_path, monkeypatch):
    environment, expected = SETTINGS[path.name]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not any(output.get("output_type") == "error" for output in outputs)
    text = outputs_text(notebook)
    for snippet in expected:
        assert snippet in text, snippet
    figures = [output for output in outputs if PLOT in output.get("data", {})]
    assert figures, "no figure was shown"
    assert not unreadable_outputs(notebook)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_their_outputs(path):
    """A reader on the repository sees the results without running anything."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.get("outputs") for cell in code if not cell.source.rstrip().endswith(";"))
    assert any(PLOT in output.get("data", {}) for cell in code for output in cell.get("outputs", []))
    assert not unreadable_outputs(notebook)
