"""The head-map card: a layer × head map (a PCS file of the run, or attribution PCS of the
example computed now); a click on a head adds it to the ablation set or removes it, and rings
mark the selected heads."""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html

from workbench.studio import views
from workbench.studio.cards.common import (
    ATTRIBUTION_SOURCES,
    CARD,
    EXAMPLE_STATE,
    LABEL,
    StudioState,
    current,
    map_result,
)

# A click on the map and the rings that show the selection are answered in the browser: a click
# costs one server round trip (the NLL panel's), not three. The session checks every head it gets.
TOGGLE_CLICKED_HEAD = """
function (click, data) {
    if (!click || !click.points || !click.points.length) {
        return [window.dash_clientside.no_update, null];
    }
    const layer = click.points[0].y, head = click.points[0].x;
    const heads = (data || []).filter(entry => !(entry[0] === layer && entry[1] === head));
    if (heads.length === (data || []).length) {
        heads.push([layer, head, 1.0]);
    }
    heads.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    return [heads, null];  // clickData cleared: a second click on the same cell is a new event
}
"""
RING_SELECTED_HEADS = f"""
function (base, data) {{
    if (!base) {{
        return window.dash_clientside.no_update;
    }}
    const heads = data || [];
    const ring = trace => trace.uid === "{views.SELECTION_UID}"
        ? {{...trace, x: heads.map(entry => entry[1]), y: heads.map(entry => entry[0])}}
        : trace;
    return {{...base, data: base.data.map(ring)}};
}}
"""


def layout(state: StudioState) -> html.Div:
    map_options = [{"label": f"{entry.label} — {entry.path}", "value": entry.path} for entry in state.session.run.scores]
    map_options += [{"label": label, "value": value} for value, label in ATTRIBUTION_SOURCES.items()]
    return html.Div(
        style=CARD,
        children=[
            dcc.Store(id="map-base", data=None),
            html.Span("head map", style=LABEL),
            dcc.Dropdown(id="map-source", options=map_options, value=map_options[0]["value"], clearable=False),
            html.Div(
                "click a head to add it to the ablation set, click it again to remove it",
                style={"color": "#666", "fontSize": "12px", "margin": "4px 0"},
            ),
            dcc.Graph(id="map", config={"displaylogo": False}),
        ],
    )


def register(app: Dash, state: StudioState) -> None:
    session = state.session
    app.clientside_callback(
        TOGGLE_CLICKED_HEAD,
        Output("heads", "data", allow_duplicate=True),
        Output("map", "clickData"),
        Input("map", "clickData"),
        State("heads", "data"),
        prevent_initial_call=True,
    )

    @app.callback(Output("map-base", "data"), Input("map-source", "value"), *EXAMPLE_STATE)
    def draw_map(source, *example_state):
        example = profile = None
        if source in ATTRIBUTION_SOURCES:
            example, profile = current(session, *example_state)
        result, label = map_result(session, source, example, profile)
        session.lens.geometry.check_grid(result.mean(), f"the map {label!r}")
        return views.head_map(result.mean().numpy(), title=label)

    app.clientside_callback(RING_SELECTED_HEADS, Output("map", "figure"), Input("map-base", "data"), Input("heads", "data"))
