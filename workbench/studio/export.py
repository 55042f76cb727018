"""What the studio hands back: the head set as `heads.json`, the comparisons made as CSV and the
current views as PNG (plotly's kaleido, which drives the installed chromium offline)."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.studio.session import AblationKind, HeadSet, NLLReport, StudioSession

COMPARISON_COLUMNS = [
    "example",
    "user",
    "profile",
    "ablation",
    "n_heads",
    "heads",
    "condition",
    "clean_nll",
    "ablated_nll",
    "delta_nll",
    "profile_specific",
]


def head_weights(session: StudioSession, heads: HeadSet, ablation: AblationKind) -> HeadWeights:
    """The set as the decoders suppress it (`steer` / `evaluate --heads` read this file)."""
    weights = session.weights(heads, ablation)
    if weights is None:
        raise InputError("the head set is empty: click heads on the map first")
    weights.task = session.source.task
    weights.method = "studio"
    weights.ablation = ablation.kind
    weights.extra = {
        "suppression": "weighted" if ablation.kind == "weighted" else ablation.kind,
        "strength": ablation.strength if ablation.kind == "weighted" else None,
        "heads": [[layer, head, float(weight)] for (layer, head), weight in sorted(heads.items())],
    }
    return weights


def heads_json(session: StudioSession, heads: HeadSet, ablation: AblationKind) -> str:
    return json.dumps(head_weights(session, heads, ablation).to_json(), indent=2) + "\n"


def comparison_rows(example: str, user: str, profile: str, heads: HeadSet, report: NLLReport) -> list[dict[str, Any]]:
    """One row per condition of an NLL report, for the comparisons table."""
    names = " ".join(f"L{layer}H{head}" for layer, head in sorted(heads))
    return [
        {
            "example": example,
            "user": user,
            "profile": profile,
            "ablation": report.ablation,
            "n_heads": report.n_heads,
            "heads": names,
            "condition": condition.name,
            "clean_nll": condition.clean,
            "ablated_nll": condition.ablated,
            "delta_nll": condition.delta,
            "profile_specific": report.profile_specific,
        }
        for condition in report.conditions
    ]


def comparisons_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        raise InputError("no comparisons yet: select heads to compare first")
    return pd.DataFrame(list(rows), columns=COMPARISON_COLUMNS).to_csv(index=False)


def figures_zip(figures: Mapping[str, go.Figure]) -> bytes:
    """The figures as `NAME.png` files in one zip archive (one kaleido session for all)."""
    if not figures:
        raise InputError("nothing to export yet")
    with tempfile.TemporaryDirectory(prefix="workbench-studio-") as folder:
        paths = [Path(folder) / f"{name}.png" for name in figures]
        pio.write_images(list(figures.values()), paths, format="png", scale=2)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in paths:
                archive.write(path, path.name)
    return buffer.getvalue()
