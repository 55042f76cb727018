"""The head-set card: the ablation kind (and the weighted kind's strength), the selected heads,
and sets loaded from the run, taken from the map's top K, or drawn at random (the control)."""

from __future__ import annotations

from dash import Dash, Input, Output, State, ctx, dcc, html

from workbench.heads import HeadWeights
from workbench.studio.cards.common import (
    ATTRIBUTION_SOURCES,
    CARD,
    LABEL,
    ROW,
    StudioState,
    as_list,
    current,
    example_states,
    head_set,
    map_result,
    non_negative,
    positive,
)
from workbench.studio.session import KINDS

TOP_OF_MAP = "map-top-k"


def layout(state: StudioState) -> html.Div:
    run = state.session.run
    set_options = [{"label": entry.label, "value": entry.path} for entry in run.head_sets]
    set_options.append({"label": "top-K of the map shown", "value": TOP_OF_MAP})
    default_k = run.head_sets[0].n_heads if run.head_sets and run.head_sets[0].n_heads else 10
    return html.Div(
        style=CARD,
        children=[
            html.Div(
                [
                    html.Span("ablation", style=LABEL),
                    dcc.RadioItems(
                        id="kind",
                        options=[{"label": f" {k}", "value": k} for k in KINDS],
                        value="zero",
                        inline=True,
                        inputStyle={"marginLeft": "10px"},
                    ),
                ]
            ),
            html.Div(
                id="strength-box",
                children=[
                    html.Span("weighted strength (head output × (1 − strength · w))", style={"fontSize": "12px"}),
                    dcc.Slider(
                        id="strength",
                        min=0,
                        max=1,
                        step=0.05,
                        value=1.0,
                        marks={0: "0", 0.5: "0.5", 1: "1"},
                        tooltip={"placement": "bottom"},
                    ),
                ],
            ),
            html.Div(
                style={"marginTop": "6px"},
                children=[
                    html.Span("head set", style=LABEL),
                    html.Span(id="heads-list", children="none selected"),
                ],
            ),
            html.Div(
                style={**ROW, "marginTop": "6px", "alignItems": "center"},
                children=[
                    dcc.Dropdown(
                        id="set-source",
                        options=set_options,
                        value=set_options[0]["value"],
                        clearable=False,
                        style={"width": "300px"},
                    ),
                    html.Span("K"),
                    dcc.Input(id="top-k", type="number", min=1, step=1, value=default_k, style={"width": "60px"}),
                    html.Button("load set", id="load-set"),
                ],
            ),
            html.Div(
                style={**ROW, "marginTop": "6px", "alignItems": "center"},
                children=[
                    html.Button("random set of the same size", id="random-set"),
                    html.Span("seed"),
                    dcc.Input(id="seed", type="number", min=0, step=1, value=0, style={"width": "70px"}),
                    html.Button("clear", id="clear"),
                ],
            ),
            html.Div(id="set-info", style={"color": "#555", "marginTop": "4px"}),
        ],
    )


def register(app: Dash, state: StudioState) -> None:
    session = state.session

    @app.callback(Output("strength-box", "style"), Input("kind", "value"))
    def strength_visibility(kind):
        return {} if kind == "weighted" else {"display": "none"}

    @app.callback(
        Output("heads", "data"),
        Output("set-info", "children"),
        Input("clear", "n_clicks"),
        Input("load-set", "n_clicks"),
        Input("random-set", "n_clicks"),
        State("heads", "data"),
        State("set-source", "value"),
        State("top-k", "value"),
        State("seed", "value"),
        State("map-source", "value"),
        *example_states(),
        prevent_initial_call=True,
    )
    def change_heads(_clear, _load, _random, data, set_source, k, seed, map_source, *example_state):
        heads = head_set(data)
        trigger = ctx.triggered_id
        geometry = session.lens.geometry
        if trigger == "clear":
            return [], "cleared"
        if trigger == "random-set":
            size = len(heads) or positive(k, "K")
            seed = non_negative(seed, "seed")
            drawn = HeadWeights.random_heads(geometry, size, seed=seed).heads()
            return as_list(dict.fromkeys(drawn, 1.0)), f"random set of {size} heads, seed {seed} (the control)"
        # load-set
        if set_source == TOP_OF_MAP:
            example, profile = (None, None)
            if map_source in ATTRIBUTION_SOURCES:
                example, profile = current(session, *example_state)
            result, label = map_result(session, map_source, example, profile)
            weights = HeadWeights.from_scores(result, top_k=positive(k, "K"))
            source_label = f"top-{positive(k, 'K')} of {label}"
        else:
            weights = session.run.load_heads(set_source)  # refuses names outside the run's listing
            weights.check(geometry)
            source_label = f"{set_source} ({len(weights.heads())} heads, weights as in the file)"
        loaded = {head: float(weights.weights[head]) for head in weights.heads()}
        return as_list(loaded), f"loaded {source_label}"

    @app.callback(Output("heads-list", "children"), Input("heads", "data"))
    def list_heads(data):
        heads = head_set(data)
        if not heads:
            return "none selected"
        return ", ".join(
            f"L{layer}H{head}" + (f" (w {weight:.2f})" if weight != 1.0 else "")
            for (layer, head), weight in sorted(heads.items())
        )
