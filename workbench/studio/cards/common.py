"""What the studio's cards share: the `StudioState` each card is handed (the session and the
job board, one per app), the page styles, and the readers that turn the browser's values (head
lists, example choice, ablation controls) into the session's arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dash import Input, State, dcc, html
from dash.exceptions import PreventUpdate

from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.scores import PCSResult
from workbench.studio.examples import ProfileState, StudioExample
from workbench.studio.jobs import JobBoard
from workbench.studio.session import AblationKind, StudioSession

CARD = {"border": "1px solid #ddd", "borderRadius": "6px", "padding": "10px 14px", "marginBottom": "12px", "background": "#fff"}
ROW = {"display": "flex", "gap": "14px", "alignItems": "flex-start", "flexWrap": "wrap"}
LABEL = {"fontWeight": "600", "marginRight": "8px"}

ATTRIBUTION_SOURCES = {
    "attribution:standard": "attribution PCS of this example (standard), computed now",
    "attribution:profile-contrast": "attribution PCS of this example (profile-contrast), computed now",
}

# The page's choice of example and profile state: what `current` reads.
EXAMPLE_STATE = [
    Input("example-mode", "value"),
    Input("split", "value"),
    Input("example", "value"),
    Input("typed", "data"),
    Input("profile-mode", "value"),
    Input("swap-user", "value"),
]


@dataclass
class StudioState:
    """What every card of one app works with: the session (model, run, caches, lock) and the board
    of background generations. Per-tab state lives in the page's `dcc.Store`s, not here."""

    session: StudioSession
    jobs: JobBoard = field(default_factory=JobBoard)


def example_states() -> list[State]:
    """`EXAMPLE_STATE` as `State`s (callbacks that read the example without reacting to it)."""
    return [State(i.component_id, i.component_property) for i in EXAMPLE_STATE]


def head_set(data: list | None) -> dict[Head, float]:
    """The browser's head list `[[layer, head, weight], ...]` as a mapping (checked by the session)."""
    heads: dict[Head, float] = {}
    for entry in data or []:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise InputError(f"malformed head entry {entry!r}")
        layer, head, weight = entry
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (layer, head)):
            raise InputError(f"malformed head entry {entry!r}")
        heads[(layer, head)] = weight
    return heads


def as_list(heads: dict[Head, float]) -> list[list]:
    return [[layer, head, weight] for (layer, head), weight in sorted(heads.items())]


def names(heads) -> str:
    return " ".join(f"L{layer}H{head}" for layer, head in sorted(heads))


def current(session: StudioSession, mode, split, key, typed, profile_mode, swap_user) -> tuple[StudioExample, ProfileState]:
    """The example and profile state the page's `EXAMPLE_STATE` values name."""
    example: StudioExample
    if mode == "typed":
        if not typed:
            raise PreventUpdate
        example = session.typed_example(
            typed["prompt"], typed["reference"], typed.get("profile", ""), chat=bool(typed.get("chat"))
        )
    else:
        if not key:
            raise PreventUpdate
        example = session.example(split, key)
    if profile_mode == "swap":
        if not example.swap_partners():
            raise InputError("this example has no other users' profiles to swap in")
        state = ProfileState("swap", swap_user or example.default_partner())
    else:
        state = ProfileState.parse(profile_mode)
    return example, state


def ablation(kind, strength) -> AblationKind:
    return AblationKind(kind or "zero", 1.0 if strength is None else float(strength))


def map_result(
    session: StudioSession, source: str, example: StudioExample | None, state: ProfileState | None
) -> tuple[PCSResult, str]:
    """The head map `source` names (a run file, or attribution PCS of the example) and its label."""
    if source in ATTRIBUTION_SOURCES:
        if example is None:
            raise PreventUpdate
        variant = source.split(":", 1)[1]
        return session.attribution(example, state, variant), ATTRIBUTION_SOURCES[source].replace(", computed now", "")  # type: ignore[arg-type]
    entry = next((e for e in session.run.scores if e.path == source), None)
    result = session.run.load_scores(source)  # refuses names outside the run's listing
    return result, entry.label if entry else source


def positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def non_negative(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise InputError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def gamma_slider(component_id: str, width: int) -> html.Div:
    """A DPS γ slider, 0 to 3 in steps of 0.1, starting at 1 (the generations and the trace cards)."""
    slider = dcc.Slider(id=component_id, min=0, max=3, step=0.1, value=1.0, marks={0: "0", 1: "1", 2: "2", 3: "3"},
                        tooltip={"placement": "bottom"})  # fmt: skip
    return html.Div(slider, style={"width": f"{width}px"})
