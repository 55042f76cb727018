"""The results card: the reference's NLL clean and with the head set ablated (with the chosen
profile state and without profile, and the profile-specific effect), the per-token damage on the
reference, and the comparisons made so far (kept in the tab, for the CSV export)."""

from __future__ import annotations

from dash import Dash, Input, Output, State, dcc, html

from workbench.engine.masks import Head
from workbench.studio import export, views
from workbench.studio.cards.common import CARD, EXAMPLE_STATE, LABEL, StudioState, ablation, current, head_set, names
from workbench.studio.session import NLLReport

MAX_HISTORY_ROWS = 2000  # comparisons kept per tab (the oldest go first)

# The comparisons made so far stay in the tab: each NLL answer brings only its own rows, which the
# browser appends (unless they repeat the last ones: the same inputs answered again), keeping the
# newest MAX_HISTORY_ROWS, so a request does not carry the whole table both ways.
APPEND_COMPARISONS = f"""
function (rows, history) {{
    const kept = history || [];
    if (!rows || !rows.length) {{
        return window.dash_clientside.no_update;
    }}
    if (JSON.stringify(kept.slice(-rows.length)) === JSON.stringify(rows)) {{
        return window.dash_clientside.no_update;
    }}
    return kept.concat(rows).slice(-{MAX_HISTORY_ROWS});
}}
"""


def layout(state: StudioState) -> html.Div:
    return html.Div(
        style=CARD,
        children=[
            html.Span("reference NLL (nats/token)", style=LABEL),
            dcc.Loading(html.Div(id="nll-table"), delay_show=400),
            html.Div(
                "per-token damage on the reference (red: less likely with the set ablated, blue: more likely; hover for values)",
                style={"color": "#666", "fontSize": "12px", "marginTop": "8px"},
            ),
            html.Div(
                id="per-token", style={"fontFamily": "monospace", "fontSize": "15px", "lineHeight": "1.8", "marginTop": "4px"}
            ),
        ],
    )


def register(app: Dash, state: StudioState) -> None:
    session = state.session

    @app.callback(
        Output("nll-table", "children"),
        Output("per-token", "children"),
        Output("history-new", "data"),
        *EXAMPLE_STATE,
        Input("heads", "data"),
        Input("kind", "value"),
        Input("strength", "value"),
    )
    def update_nll(*args):
        *example_state, data, kind, strength = args
        example, profile = current(session, *example_state)
        heads = head_set(data)
        report = session.nll(example, profile, heads, ablation(kind, strength))
        rows = export.comparison_rows(example.key, example.user_id, profile.describe(), heads, report) if heads else []
        return _nll_table(report, heads), _per_token(report), rows

    app.clientside_callback(APPEND_COMPARISONS, Output("history", "data"), Input("history-new", "data"), State("history", "data"))


def _nll_table(report: NLLReport, heads: dict[Head, float]) -> html.Div:
    cell = {"padding": "2px 14px 2px 0", "textAlign": "left"}
    header = html.Tr([html.Th(text, style=cell) for text in ("prompt", "clean", "ablated", "Δ (ablated − clean)")])
    rows = [
        html.Tr(
            [
                html.Td(c.name, style=cell),
                html.Td(f"{c.clean:.4f}", title=repr(c.clean), className="nll-clean", style=cell),
                html.Td(f"{c.ablated:.4f}", title=repr(c.ablated), className="nll-ablated", style=cell),
                html.Td(f"{c.delta:+.4f}", title=repr(c.delta), className="nll-delta", style=cell),
            ],
            className=f"nll-row-{index}",
        )
        for index, c in enumerate(report.conditions)
    ]
    specific = report.profile_specific
    summary = (
        html.Div(
            [
                "profile-specific effect (Δ with profile − Δ without): ",
                html.B(f"{specific:+.4f}", id="profile-specific", title=repr(specific)),
            ]
        )
        if specific is not None
        else html.Div(["profile-specific effect: ", html.B("— (the profile is off)", id="profile-specific", title="none")])
    )
    described = f"{report.n_heads} heads ({names(heads) or 'none'}), {report.ablation} ablation"
    return html.Div(
        [
            html.Div(described, id="nll-heads", **{"data-heads": names(heads)}),  # type: ignore[arg-type]  # a data-* attribute
            html.Table([header, *rows], style={"borderCollapse": "collapse", "marginTop": "4px"}, className="nll"),
            summary,
            html.Div(
                f"computed in {report.seconds:.3f} s on the server", id="nll-seconds", style={"color": "#777", "fontSize": "12px"}
            ),
        ]
    )


def _per_token(report: NLLReport) -> list:
    condition = report.conditions[0]
    delta = condition.ablated_tokens - condition.clean_tokens
    limit = views.damage_scale(delta)
    return [
        html.Span(
            token,
            title=f"token {index}: Δ {d:+.3f} nats (clean {c:.3f}, ablated {a:.3f})",
            style={"background": views.damage_colour(d, limit), "whiteSpace": "pre-wrap", "borderRadius": "2px"},
            className="token",
        )
        for index, (token, d, c, a) in enumerate(zip(report.tokens, delta, condition.clean_tokens, condition.ablated_tokens))
    ]
