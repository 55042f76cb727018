"""The decoding-trace card: what DPS did at each generated token, and which suppressed heads did it.

A strip of the generated tokens (shaded by Δ, how much suppressing the heads lowered the chosen
token's score); a click on a token shows its table (the top tokens of the full pass, the masked
pass and DPS with their log-probabilities, the γ used) and each suppressed head's share of Δ on the
layer × head map. The γ and number-of-heads sliders re-decode; a token click only redraws from the
kept trace (`StudioTraces`). CSV (the trace's tidy table) and PNG (the map shown) exports.

`layout(state)` gives the card and `register(app, state)` wires it, like every card.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from workbench.decoding import DecodingTrace
from workbench.figures import head_heatmap
from workbench.figures.heatmaps import SELECTED as RINGED_NAME
from workbench.studio import views
from workbench.studio.cards import common
from workbench.studio.cards.common import CARD, StudioState, current, example_states, gamma_slider
from workbench.studio.traces import StudioTraces, TraceSettings

ROW = {**common.ROW, "alignItems": "center"}
TOKEN = {"whiteSpace": "pre-wrap", "borderRadius": "2px", "cursor": "pointer", "padding": "0 1px"}
SELECTED = {**TOKEN, "outline": "2px solid #222"}
TOKEN_ID = "trace-token"
MAX_SLIDER_HEADS = 40
PASS_TITLES = {"full": "full model", "masked": "heads suppressed", "dps": "DPS"}

# A click on a token becomes the selected step in the browser (no round trip of its own).
SELECT_TOKEN = """
function (clicks) {
    const triggered = window.dash_clientside.callback_context.triggered_id;
    if (!triggered || !clicks.some(n => n)) {
        return window.dash_clientside.no_update;
    }
    return triggered.index;
}
"""


def layout(state: StudioState) -> html.Div:
    geometry = state.session.lens.geometry
    most = min(MAX_SLIDER_HEADS, geometry.n_layers * geometry.n_heads)
    return html.Div(
        style=CARD,
        id="trace-card",
        children=[
            html.Span("decoding trace (DPS): what each suppressed head did to each token", style={"fontWeight": "600"}),
            html.Div(
                style={**ROW, "marginTop": "6px"},
                children=[
                    html.Span("γ"),
                    gamma_slider("trace-gamma", width=220),
                    dcc.Checklist(
                        id="trace-adaptive", options=[{"label": " γ = entropy of the full pass", "value": "entropy"}], value=[]
                    ),
                    html.Span("heads"),
                    html.Div(
                        dcc.Slider(
                            id="trace-heads",
                            min=1,
                            max=most,
                            step=1,
                            value=min(10, most),
                            marks={1: "1", most: str(most)},
                            tooltip={"placement": "bottom"},
                        ),
                        style={"width": "220px"},
                    ),
                    html.Button("decode", id="trace-run"),
                    html.Button("CSV", id="trace-csv"),
                    html.Button("PNG", id="trace-png"),
                ],
            ),
            dcc.Store(id="trace-step", data=0),
            dcc.Store(id="trace-shown", data=None),
            dcc.Download(id="trace-download"),
            dcc.Loading(
                html.Div(
                    [
                        html.Div(id="trace-info", style={"color": "#555", "margin": "4px 0"}),
                        html.Div(id="trace-strip", style={"fontFamily": "monospace", "fontSize": "15px", "lineHeight": "1.8"}),
                        html.Div(
                            "shade: Δ = the chosen token's score with the full model minus with the heads suppressed "
                            "(red: the heads supported the token, so DPS raised it; blue: the reverse)",
                            style={"color": "#666", "fontSize": "12px"},
                        ),
                    ]
                ),
                delay_show=400,
            ),
            html.Div(
                style={**ROW, "alignItems": "flex-start"},
                children=[
                    html.Div(id="trace-table", style={"flex": "1 1 420px"}),
                    dcc.Graph(id="trace-map", config={"displaylogo": False}, style={"flex": "1 1 480px"}),
                ],
            ),
        ],
    )


def register(app: Dash, state: StudioState) -> None:
    session = state.session
    traces = StudioTraces(session)

    def settings(gamma, adaptive, n_heads) -> TraceSettings:
        return TraceSettings("entropy" if adaptive else (1.0 if gamma is None else float(gamma)), n_heads)

    def look_up(shown: dict) -> tuple[DecodingTrace, str]:
        example, profile = current(session, *shown["example"])
        return traces.trace(example, profile, TraceSettings(shown["gamma"], shown["n_heads"]))

    @app.callback(
        Output("trace-strip", "children"),
        Output("trace-info", "children"),
        Output("trace-shown", "data"),
        Output("trace-step", "data"),
        Input("trace-run", "n_clicks"),
        Input("trace-gamma", "value"),
        Input("trace-adaptive", "value"),
        Input("trace-heads", "value"),
        *example_states(),
        prevent_initial_call=True,
    )
    def decode(_, gamma, adaptive, n_heads, *example):
        chosen = settings(gamma, adaptive, n_heads)
        shown = {"example": list(example), "gamma": chosen.gamma, "n_heads": chosen.n_heads}
        trace, source = look_up(shown)
        info = (
            f"{chosen.describe()}: {len(trace.heads)} suppressed ({source}, heads with PCS > 0); "
            f"{len(trace.token_ids)} tokens, stopped at {trace.stop_reason}; scores in {trace.space}; click a token"
        )
        return _strip(trace), info, shown, 0

    app.clientside_callback(
        SELECT_TOKEN,
        Output("trace-step", "data", allow_duplicate=True),
        Input({"type": TOKEN_ID, "index": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("trace-table", "children"),
        Output("trace-map", "figure"),
        Output({"type": TOKEN_ID, "index": ALL}, "style"),
        Input("trace-step", "data"),
        Input("trace-shown", "data"),
        State({"type": TOKEN_ID, "index": ALL}, "style"),
    )
    def show(step, shown, styles):
        if not shown:
            raise PreventUpdate
        trace, _ = look_up(shown)
        step = min(int(step or 0), len(trace.token_ids) - 1)
        marked = [
            {**(style or TOKEN), **(SELECTED if index == step else {"outline": "none"})} for index, style in enumerate(styles)
        ]
        return _table(trace, step), share_map(trace, step), marked

    @app.callback(
        Output("trace-download", "data"),
        Input("trace-csv", "n_clicks"),
        Input("trace-png", "n_clicks"),
        State("trace-shown", "data"),
        State("trace-step", "data"),
        prevent_initial_call=True,
    )
    def export(csv_clicks, png_clicks, shown, step):
        if not shown:
            raise PreventUpdate
        trace, _ = look_up(shown)
        if ctx.triggered_id == "trace-csv":
            return dcc.send_string(trace.to_frame().to_csv(index=False), "decoding-trace.csv", type="text/csv")
        step = min(int(step or 0), len(trace.token_ids) - 1)
        return dcc.send_bytes(pio.to_image(share_map(trace, step), format="png", scale=2), f"decoding-trace-token-{step}.png")


def share_map(trace: DecodingTrace, step: int) -> go.Figure:
    """Each suppressed head's share of Δ at token `step`, on the layer × head map (suppressed heads ringed)."""
    token = trace.tokens[step]
    figure = head_heatmap(
        trace.share_grid(step),
        title=f"token {step} {token!r}: each head's share of Δ = {trace.total[step]:+.3f} ({trace.space})",
        value_label="share of Δ (one head suppressed alone)",
        highlight=trace.heads,
    )
    figure.update_traces(name="suppressed heads (ringed)", selector={"name": RINGED_NAME})
    figure.update_layout(width=None, autosize=True, height=420, margin={"t": 60, "l": 60, "r": 20, "b": 50})
    return figure


def _strip(trace: DecodingTrace) -> list[html.Span]:
    limit = views.damage_scale(trace.total)
    return [
        html.Span(
            token,
            id={"type": TOKEN_ID, "index": index},
            n_clicks=0,
            title=f"token {index}: γ {gamma:.3f}, Δ {total:+.3f}, log p full {full:.3f}, DPS {dps:.3f}",
            style={**TOKEN, "background": views.damage_colour(total, limit)},
            className="trace-token",
        )
        for index, (token, gamma, total, full, dps) in enumerate(
            zip(trace.tokens, trace.gamma, trace.total, trace.logprobs["full"], trace.logprobs["dps"])
        )
    ]


def _table(trace: DecodingTrace, step: int) -> html.Div:
    cell = {"padding": "2px 10px 2px 0", "textAlign": "left", "fontFamily": "monospace"}
    ranks = range(trace.top_ids["full"].shape[1])
    header = html.Tr([html.Th("rank", style=cell), *[html.Th(PASS_TITLES[name], style=cell, colSpan=2) for name in PASS_TITLES]])
    rows = [
        html.Tr(
            [
                html.Td(str(rank + 1), style=cell),
                *[
                    part
                    for name in PASS_TITLES
                    for part in (
                        html.Td(
                            repr(trace.top_tokens[int(trace.top_ids[name][step, rank])]),
                            className=f"top-{name}-token",
                            style=cell,
                        ),
                        html.Td(
                            f"{trace.top_logprobs[name][step, rank]:.3f}",
                            title=repr(float(trace.top_logprobs[name][step, rank])),
                            className=f"top-{name}-logprob",
                            style=cell,
                        ),
                    )
                ],
            ],
            className=f"trace-rank-{rank}",
        )
        for rank in ranks
    ]
    shares = np.nansum(trace.shares[step])
    return html.Div(
        [
            html.Div(
                [
                    html.B(f"token {step}: {trace.tokens[step]!r}"),
                    f" · γ = {trace.gamma[step]:.3f} · log p full {trace.logprobs['full'][step]:.3f}, "
                    f"masked {trace.logprobs['masked'][step]:.3f}, DPS {trace.logprobs['dps'][step]:.3f} · "
                    f"Δ = {trace.total[step]:+.3f}; the heads' shares sum to {shares:.3f}",
                ],
                id="trace-token-summary",
                **{"data-step": str(step), "data-gamma": repr(float(trace.gamma[step]))},  # type: ignore[arg-type]  # data-* attributes
            ),
            html.Table([header, *rows], style={"borderCollapse": "collapse", "marginTop": "4px"}, className="trace-top"),
        ]
    )
