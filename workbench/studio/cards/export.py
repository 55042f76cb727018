"""The export card: the head set as `heads.json` (what `steer` / `evaluate --heads` read), the
current views as PNG files in a zip, and the comparisons made as CSV."""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html

from workbench.studio import export, views
from workbench.studio.cards.common import CARD, LABEL, StudioState, ablation, current, example_states, head_set


def layout(state: StudioState) -> html.Div:
    return html.Div(
        style=CARD,
        children=[
            dcc.Download(id="download-heads"),
            dcc.Download(id="download-png"),
            dcc.Download(id="download-csv"),
            html.Span("export", style=LABEL),
            html.Button("head set as heads.json", id="export-heads"),
            html.Button("views as PNG (zip)", id="export-png", style={"marginLeft": "8px"}),
            html.Button("comparisons as CSV", id="export-csv", style={"marginLeft": "8px"}),
        ],
    )


def register(app: Dash, state: StudioState) -> None:
    session = state.session

    @app.callback(
        Output("download-heads", "data"),
        Input("export-heads", "n_clicks"),
        State("heads", "data"),
        State("kind", "value"),
        State("strength", "value"),
        prevent_initial_call=True,
    )
    def export_heads(_, data, kind, strength):
        text = export.heads_json(session, head_set(data), ablation(kind, strength))
        return dcc.send_string(text, "heads.json", type="application/json")

    @app.callback(
        Output("download-csv", "data"), Input("export-csv", "n_clicks"), State("history", "data"), prevent_initial_call=True
    )
    def export_csv(_, history):
        return dcc.send_string(export.comparisons_csv(history or []), "comparisons.csv", type="text/csv")

    @app.callback(
        Output("download-png", "data"),
        Input("export-png", "n_clicks"),
        State("map", "figure"),
        *example_states(),
        State("heads", "data"),
        State("kind", "value"),
        State("strength", "value"),
        prevent_initial_call=True,
    )
    def export_png(_, map_figure, *args):
        *example_state, data, kind, strength = args
        example, profile = current(session, *example_state)
        heads = head_set(data)
        report = session.nll(example, profile, heads, ablation(kind, strength))
        title = f"{example.key}, {profile.describe()}: {report.n_heads} heads ({report.ablation})"
        figures = {"head-map": map_figure, "nll": views.nll_figure(report, title=title)}
        if heads:
            figures["per-token"] = views.per_token_figure(report, title=f"per-token Δ NLL, {title}")
        return dcc.send_bytes(export.figures_zip(figures), "studio-views.zip")
