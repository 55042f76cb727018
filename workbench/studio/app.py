"""The studio page (Dash): pick an example, click heads on the layer × head map, see what breaks.

Every number comes from a `StudioSession`; the page is made of cards (`workbench.studio.cards`),
each owning its layout and callbacks: `layout(state)` and `register(app, state)`, with the one
`StudioState` (session and job board) handed to all. This module places the cards and holds what
belongs to the page as a whole: the run line, the error banner and the stores several cards
share. Each browser tab keeps its own head set and comparisons (in `dcc.Store`s); the session,
its caches and its lock are shared. A callback that fails shows its message in the page's banner
and the server keeps serving. Files are named to the server only by their place in the run
folder's listing.
"""

from __future__ import annotations

import sys
import traceback

import dash
from dash import Dash, Input, Output, dcc, html

from workbench.errors import InputError
from workbench.studio.cards import example, export, generation, head_map, heads, results, trace
from workbench.studio.cards.common import ROW, StudioState
from workbench.studio.session import StudioSession

MAX_REQUEST_BYTES = 8 * 1024 * 1024  # typed texts are capped far below this; larger requests are refused

# The page's cards, by where they sit: two columns, then full-width cards one below the other.
LEFT = (example, heads)
RIGHT = (head_map,)
BELOW = (results, generation, trace, export)


def create_app(session: StudioSession) -> Dash:
    """The Dash app over `session` (serve it with `app.run` or any WSGI server: `app.server`)."""
    app = Dash(
        __name__,
        title="workbench studio",
        on_error=_show_error,
        update_title=None,  # type: ignore[arg-type]  # None: no "Updating..." title (Dash's documented value)
    )
    app.server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    state = StudioState(session)
    app.layout = _layout(state)
    _register(app)
    for card in (*LEFT, *RIGHT, *BELOW):
        card.register(app, state)
    return app


def _show_error(error: Exception) -> None:
    """Global callback error handler: one line in the page's banner, the traceback (bugs only) on stderr."""
    if isinstance(error, InputError):
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    else:
        traceback.print_exception(error, file=sys.stderr)
        message = f"internal error ({type(error).__name__}: {error}); the studio keeps serving"
    dash.set_props("error-text", {"children": message})
    dash.set_props("error-box", {"style": _BANNER})


_BANNER = {
    "display": "block",
    "background": "#fde2e1",
    "border": "1px solid #e45756",
    "padding": "8px 12px",
    "borderRadius": "6px",
    "marginBottom": "10px",
}


def _layout(state: StudioState) -> html.Div:
    source, run, lens = state.session.source, state.session.run, state.session.lens
    where = str(run.root) if run.root else "no run folder (the bundled demo set)"
    notes = [html.Div(f"note: {note}") for note in source.notes]
    return html.Div(
        style={"fontFamily": "system-ui, sans-serif", "fontSize": "14px", "background": "#f6f6f6", "padding": "12px"},
        children=[
            html.H2("workbench studio: head ablations", style={"margin": "0 0 4px 0"}),
            html.Div(
                f"{lens!r} · run: {where} · data: {source.data or 'the bundled demo set'} · "
                f"task {source.task}, {source.prompt_format} prompts, k={source.k}",
                id="run-info",
                style={"color": "#555", "marginBottom": "6px"},
            ),
            html.Div(notes, style={"color": "#8a5a00"}),
            html.Div(
                [html.Span(id="error-text"), html.Button("dismiss", id="dismiss", style={"marginLeft": "12px"})],
                id="error-box",
                role="alert",
                style={"display": "none"},
            ),
            # the stores several cards read or write
            dcc.Store(id="heads", data=[]),
            dcc.Store(id="typed", data=None),
            dcc.Store(id="history", data=[]),
            dcc.Store(id="history-new", data=[]),
            html.Div(
                style=ROW,
                children=[
                    html.Div(style={"flex": "1 1 460px", "minWidth": "420px"}, children=[card.layout(state) for card in LEFT]),
                    html.Div(style={"flex": "1 1 560px"}, children=[card.layout(state) for card in RIGHT]),
                ],
            ),
            *(card.layout(state) for card in BELOW),
        ],
    )


def _register(app: Dash) -> None:
    @app.callback(Output("error-box", "style"), Input("dismiss", "n_clicks"), prevent_initial_call=True)
    def dismiss(_):
        return {"display": "none"}
