"""The studio page (Dash): pick an example, click heads on the layer × head map, see what breaks.

Every number comes from a `StudioSession`; this module only lays out the page and wires it. Each
browser tab keeps its own head set and comparisons (in `dcc.Store`s); the session, its caches and
its lock are shared. A callback that fails shows its message in the page's banner and the server
keeps serving. Files are named to the server only by their place in the run folder's listing.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import dash
from dash import Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.studio import export, trace_card, views
from workbench.studio.examples import MAX_TEXT_CHARS, ProfileState, StudioExample
from workbench.studio.jobs import Job, JobBoard
from workbench.studio.session import DECODERS, KINDS, MAX_NEW_TOKENS, AblationKind, NLLReport, StudioSession

ATTRIBUTION_SOURCES = {
    "attribution:standard": "attribution PCS of this example (standard), computed now",
    "attribution:profile-contrast": "attribution PCS of this example (profile-contrast), computed now",
}
TOP_OF_MAP = "map-top-k"
POLL_MS = 300
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # typed texts are capped far below this; larger requests are refused
MAX_HISTORY_ROWS = 2000  # comparisons kept per tab (the oldest go first)
DECODER_TITLES = {"greedy": "greedy (full model)", "ablated": "greedy, head set ablated", "dps": "DPS"}

CARD = {"border": "1px solid #ddd", "borderRadius": "6px", "padding": "10px 14px", "marginBottom": "12px", "background": "#fff"}
ROW = {"display": "flex", "gap": "14px", "alignItems": "flex-start", "flexWrap": "wrap"}
LABEL = {"fontWeight": "600", "marginRight": "8px"}


def create_app(session: StudioSession) -> Dash:
    """The Dash app over `session` (serve it with `app.run` or any WSGI server: `app.server`)."""
    app = Dash(
        __name__,
        title="workbench studio",
        on_error=_show_error,
        update_title=None,
    )
    app.server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.layout = _layout(session)
    _register(app, session, JobBoard())
    trace_card.register(app, session, EXAMPLE_STATE, _current)
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


# --- layout ------------------------------------------------------------------------------------


def _layout(session: StudioSession) -> html.Div:
    source, run, lens = session.source, session.run, session.lens
    splits = sorted({source.split, "train", "dev"})
    split_options = [
        {"label": f"{s} (the run's heads were found here)" if s == source.split and run.scores else s, "value": s} for s in splits
    ]
    map_options = [{"label": f"{entry.label} — {entry.path}", "value": entry.path} for entry in run.scores]
    map_options += [{"label": label, "value": value} for value, label in ATTRIBUTION_SOURCES.items()]
    set_options = [{"label": entry.label, "value": entry.path} for entry in run.head_sets]
    set_options.append({"label": "top-K of the map shown", "value": TOP_OF_MAP})
    default_k = run.head_sets[0].n_heads if run.head_sets and run.head_sets[0].n_heads else 10
    where = str(run.root) if run.root else "no run folder (the bundled demo set)"
    notes = [html.Div(f"note: {note}") for note in source.notes]
    return html.Div(
        style={"fontFamily": "system-ui, sans-serif", "fontSize": "14px", "background": "#f6f6f6", "padding": "12px"},
        children=[
            html.H2("workbench studio: head ablations", style={"margin": "0 0 4px 0"}),
            html.Div(
                f"{lens!r} · run: {where} · task {source.task}, {source.prompt_format} prompts, k={source.k}",
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
            dcc.Store(id="heads", data=[]),
            dcc.Store(id="map-base", data=None),
            dcc.Store(id="typed", data=None),
            dcc.Store(id="history", data=[]),
            dcc.Store(id="history-new", data=[]),
            dcc.Store(id="job", data=None),
            dcc.Download(id="download-heads"),
            dcc.Download(id="download-png"),
            dcc.Download(id="download-csv"),
            dcc.Interval(id="poll", interval=POLL_MS, disabled=True),
            html.Div(
                style=ROW,
                children=[
                    html.Div(
                        style={"flex": "1 1 460px", "minWidth": "420px"},
                        children=[
                            _example_card(split_options, source.split),
                            _controls_card(set_options, default_k),
                        ],
                    ),
                    html.Div(
                        style={"flex": "1 1 560px"},
                        children=[
                            html.Div(
                                style=CARD,
                                children=[
                                    html.Span("head map", style=LABEL),
                                    dcc.Dropdown(
                                        id="map-source", options=map_options, value=map_options[0]["value"], clearable=False
                                    ),
                                    html.Div(
                                        "click a head to add it to the ablation set, click it again to remove it",
                                        style={"color": "#666", "fontSize": "12px", "margin": "4px 0"},
                                    ),
                                    dcc.Graph(id="map", config={"displaylogo": False}),
                                ],
                            ),
                        ],
                    ),
                ],
            ),
            _results_card(),
            _generation_card(),
            trace_card.layout(session),
            _export_card(),
        ],
    )


def _example_card(split_options: list[dict], split: str) -> html.Div:
    return html.Div(
        style=CARD,
        children=[
            html.Span("example", style=LABEL),
            dcc.RadioItems(
                id="example-mode",
                options=[{"label": " from the run's data", "value": "task"}, {"label": " typed in", "value": "typed"}],
                value="task",
                inline=True,
                inputStyle={"marginLeft": "10px"},
            ),
            html.Div(
                id="task-picker",
                children=[
                    dcc.Dropdown(id="split", options=split_options, value=split, clearable=False),
                    dcc.Dropdown(id="example", clearable=False, optionHeight=40),
                ],
            ),
            html.Div(
                id="typed-picker",
                style={"display": "none"},
                children=[
                    dcc.Textarea(
                        id="typed-profile",
                        placeholder="profile (optional): the user's earlier writing, put before the prompt",
                        maxLength=MAX_TEXT_CHARS,
                        style={"width": "100%", "height": "50px"},
                    ),
                    dcc.Textarea(
                        id="typed-prompt",
                        placeholder="prompt",
                        maxLength=MAX_TEXT_CHARS,
                        style={"width": "100%", "height": "60px"},
                    ),
                    dcc.Textarea(
                        id="typed-reference",
                        placeholder="reference output (the text whose NLL is measured)",
                        maxLength=MAX_TEXT_CHARS,
                        style={"width": "100%", "height": "40px"},
                    ),
                    dcc.Checklist(
                        id="typed-chat", options=[{"label": " wrap in the chat template", "value": "chat"}], value=["chat"]
                    ),
                    html.Button("use this example", id="typed-use"),
                    html.Div(id="typed-message", style={"color": "#b00020", "marginTop": "4px"}),
                ],
            ),
            html.Div(id="example-details", style={"marginTop": "8px"}),
            html.Div(
                style={"marginTop": "8px"},
                children=[
                    html.Span("profile", style=LABEL),
                    dcc.RadioItems(
                        id="profile-mode",
                        options=[
                            {"label": " own", "value": "own"},
                            {"label": " off", "value": "off"},
                            {"label": " swapped for user", "value": "swap"},
                        ],
                        value="own",
                        inline=True,
                        inputStyle={"marginLeft": "10px"},
                    ),
                    dcc.Dropdown(id="swap-user", clearable=False, style={"width": "200px", "display": "inline-block"}),
                ],
            ),
        ],
    )


def _controls_card(set_options: list[dict], default_k: int) -> html.Div:
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


def _results_card() -> html.Div:
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


def _generation_card() -> html.Div:
    columns = [
        html.Div(
            style={"flex": "1 1 240px"},
            children=[
                html.Div(DECODER_TITLES[name], id=f"gen-{name}-title", style={"fontWeight": "600"}),
                html.Pre(
                    id=f"gen-{name}",
                    style={"whiteSpace": "pre-wrap", "background": "#f3f3f3", "padding": "6px", "minHeight": "40px"},
                ),
            ],
        )
        for name in DECODERS
    ]
    return html.Div(
        style=CARD,
        children=[
            html.Span("generations", style=LABEL),
            html.Div(
                style={**ROW, "alignItems": "center"},
                children=[
                    html.Span("DPS γ"),
                    html.Div(
                        dcc.Slider(
                            id="gamma",
                            min=0,
                            max=3,
                            step=0.1,
                            value=1.0,
                            marks={0: "0", 1: "1", 2: "2", 3: "3"},
                            tooltip={"placement": "bottom"},
                        ),
                        style={"width": "260px"},
                    ),
                    html.Span("new tokens"),
                    dcc.Input(
                        id="new-tokens", type="number", min=1, max=MAX_NEW_TOKENS, step=1, value=24, style={"width": "70px"}
                    ),
                    html.Button("generate", id="generate"),
                    html.Button("cancel", id="cancel"),
                    html.Progress(id="progress", value="0", max="1", style={"width": "160px"}),
                    html.Span(id="progress-text"),
                ],
            ),
            html.Div(id="gen-settings", style={"color": "#555", "margin": "4px 0"}),
            html.Div(style=ROW, children=columns),
        ],
    )


def _export_card() -> html.Div:
    return html.Div(
        style=CARD,
        children=[
            html.Span("export", style=LABEL),
            html.Button("head set as heads.json", id="export-heads"),
            html.Button("views as PNG (zip)", id="export-png", style={"marginLeft": "8px"}),
            html.Button("comparisons as CSV", id="export-csv", style={"marginLeft": "8px"}),
        ],
    )


# --- helpers -----------------------------------------------------------------------------------


def _head_set(data: list | None) -> dict[Head, float]:
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


def _as_list(heads: dict[Head, float]) -> list[list]:
    return [[layer, head, weight] for (layer, head), weight in sorted(heads.items())]


def _names(heads) -> str:
    return " ".join(f"L{layer}H{head}" for layer, head in sorted(heads))


def _current(session: StudioSession, mode, split, key, typed, profile_mode, swap_user) -> tuple[StudioExample, ProfileState]:
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


def _ablation(kind, strength) -> AblationKind:
    return AblationKind(kind or "zero", 1.0 if strength is None else float(strength))


def _map_result(session: StudioSession, source: str, example: StudioExample | None, state: ProfileState | None):
    if source in ATTRIBUTION_SOURCES:
        if example is None:
            raise PreventUpdate
        variant = source.split(":", 1)[1]
        return session.attribution(example, state, variant), ATTRIBUTION_SOURCES[source].replace(", computed now", "")  # type: ignore[arg-type]
    entry = next((e for e in session.run.scores if e.path == source), None)
    result = session.run.load_scores(source)  # refuses names outside the run's listing
    return result, entry.label if entry else source


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
    described = f"{report.n_heads} heads ({_names(heads) or 'none'}), {report.ablation} ablation"
    return html.Div(
        [
            html.Div(described, id="nll-heads", **{"data-heads": _names(heads)}),
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


def _details(example: StudioExample, state: ProfileState, session: StudioSession) -> list:
    prompt, shown = session.prompt(example, state)
    return [
        html.Div(
            [
                html.Span("user ", style=LABEL),
                example.user_id,
                html.Span(" · ", style={"color": "#999"}),
                f"prompt {len(prompt)} tokens ({state.describe()}), reference {len(example.target_ids)} tokens",
            ]
        ),
        html.Details(
            [
                html.Summary(f"profile ({len(example.profile_items)} items retrieved)"),
                html.Ul([html.Li(item) for item in example.profile_items]),
            ]
        ),
        html.Details(
            [
                html.Summary("prompt as the model sees it"),
                html.Pre(shown, style={"whiteSpace": "pre-wrap", "maxHeight": "240px", "overflow": "auto"}),
            ]
        ),
        html.Div([html.Span("reference ", style=LABEL), html.Span(example.reference, id="reference-text")]),
    ]


# --- callbacks ---------------------------------------------------------------------------------

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

EXAMPLE_STATE = [
    Input("example-mode", "value"),
    Input("split", "value"),
    Input("example", "value"),
    Input("typed", "data"),
    Input("profile-mode", "value"),
    Input("swap-user", "value"),
]


def _register(app: Dash, session: StudioSession, jobs: JobBoard) -> None:
    @app.callback(Output("error-box", "style"), Input("dismiss", "n_clicks"), prevent_initial_call=True)
    def dismiss(_):
        return {"display": "none"}

    @app.callback(
        Output("task-picker", "style"),
        Output("typed-picker", "style"),
        Output("strength-box", "style"),
        Input("example-mode", "value"),
        Input("kind", "value"),
    )
    def visibility(mode, kind):
        hidden = {"display": "none"}
        return (hidden if mode == "typed" else {}), ({} if mode == "typed" else hidden), ({} if kind == "weighted" else hidden)

    @app.callback(Output("example", "options"), Output("example", "value"), Input("split", "value"))
    def list_examples(split):
        examples = session.examples(split)
        return [{"label": e.label, "value": e.key} for e in examples], examples[0].key

    @app.callback(
        Output("typed", "data"),
        Output("typed-message", "children"),
        Output("example-mode", "value"),
        Input("typed-use", "n_clicks"),
        State("typed-prompt", "value"),
        State("typed-reference", "value"),
        State("typed-profile", "value"),
        State("typed-chat", "value"),
        prevent_initial_call=True,
    )
    def use_typed(_, prompt, reference, profile, chat):
        typed = {"prompt": prompt or "", "reference": reference or "", "profile": profile or "", "chat": "chat" in (chat or [])}
        try:
            session.typed_example(typed["prompt"], typed["reference"], typed["profile"], chat=typed["chat"])
        except InputError as error:
            return dash.no_update, f"refused: {error}", dash.no_update
        return typed, "", "typed"

    @app.callback(
        Output("example-details", "children"),
        Output("swap-user", "options"),
        Output("swap-user", "value"),
        Output("swap-user", "disabled"),
        *EXAMPLE_STATE[:4],
        Input("profile-mode", "value"),
        State("swap-user", "value"),
    )
    def describe(mode, split, key, typed, profile_mode, swap_user):
        example, state = _current(session, mode, split, key, typed, "own" if profile_mode == "swap" else profile_mode, None)
        partners = example.swap_partners()
        if swap_user not in partners:
            swap_user = example.default_partner()
        if profile_mode == "swap" and swap_user:
            state = ProfileState("swap", swap_user)
        options = [{"label": f"user {p}", "value": p} for p in partners]
        return _details(example, state, session), options, swap_user, profile_mode != "swap"

    app.clientside_callback(
        TOGGLE_CLICKED_HEAD,
        Output("heads", "data", allow_duplicate=True),
        Output("map", "clickData"),
        Input("map", "clickData"),
        State("heads", "data"),
        prevent_initial_call=True,
    )

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
        *[State(i.component_id, i.component_property) for i in EXAMPLE_STATE],
        prevent_initial_call=True,
    )
    def change_heads(_clear, _load, _random, data, set_source, k, seed, map_source, *example_state):
        heads = _head_set(data)
        trigger = ctx.triggered_id
        geometry = session.lens.geometry
        if trigger == "clear":
            return [], "cleared"
        if trigger == "random-set":
            size = len(heads) or _positive(k, "K")
            seed = _non_negative(seed, "seed")
            drawn = HeadWeights.random_heads(geometry, size, seed=seed).heads()
            return _as_list(dict.fromkeys(drawn, 1.0)), f"random set of {size} heads, seed {seed} (the control)"
        # load-set
        if set_source == TOP_OF_MAP:
            example, state = (None, None)
            if map_source in ATTRIBUTION_SOURCES:
                example, state = _current(session, *example_state)
            result, label = _map_result(session, map_source, example, state)
            weights = HeadWeights.from_scores(result, top_k=_positive(k, "K"))
            source_label = f"top-{_positive(k, 'K')} of {label}"
        else:
            weights = session.run.load_heads(set_source)  # refuses names outside the run's listing
            weights.check(geometry)
            source_label = f"{set_source} ({len(weights.heads())} heads, weights as in the file)"
        loaded = {head: float(weights.weights[head]) for head in weights.heads()}
        return _as_list(loaded), f"loaded {source_label}"

    @app.callback(Output("heads-list", "children"), Input("heads", "data"))
    def list_heads(data):
        heads = _head_set(data)
        if not heads:
            return "none selected"
        return ", ".join(
            f"L{layer}H{head}" + (f" (w {weight:.2f})" if weight != 1.0 else "")
            for (layer, head), weight in sorted(heads.items())
        )

    @app.callback(Output("map-base", "data"), Input("map-source", "value"), *EXAMPLE_STATE)
    def draw_map(source, *example_state):
        example = state = None
        if source in ATTRIBUTION_SOURCES:
            example, state = _current(session, *example_state)
        result, label = _map_result(session, source, example, state)
        session.lens.geometry.check_grid(result.mean(), f"the map {label!r}")
        return views.head_map(result.mean().numpy(), title=label)

    app.clientside_callback(RING_SELECTED_HEADS, Output("map", "figure"), Input("map-base", "data"), Input("heads", "data"))

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
        example, state = _current(session, *example_state)
        heads = _head_set(data)
        report = session.nll(example, state, heads, _ablation(kind, strength))
        rows = export.comparison_rows(example.key, example.user_id, state.describe(), heads, report) if heads else []
        return _nll_table(report, heads), _per_token(report), rows

    app.clientside_callback(APPEND_COMPARISONS, Output("history", "data"), Input("history-new", "data"), State("history", "data"))

    @app.callback(
        Output("job", "data"),
        Output("poll", "disabled"),
        Output("gen-settings", "children"),
        Output("gen-dps-title", "children"),
        *[Output(f"gen-{name}", "children") for name in DECODERS],
        Input("generate", "n_clicks"),
        *[State(i.component_id, i.component_property) for i in EXAMPLE_STATE],
        State("heads", "data"),
        State("kind", "value"),
        State("strength", "value"),
        State("gamma", "value"),
        State("new-tokens", "value"),
        prevent_initial_call=True,
    )
    def start_generation(_, *args):
        *example_state, data, kind, strength, gamma, new_tokens = args
        example, state = _current(session, *example_state)
        heads, ablation = _head_set(data), _ablation(kind, strength)
        new_tokens = _positive(new_tokens, "new tokens")
        gamma = 1.0 if gamma is None else float(gamma)
        wanted = list(DECODERS) if session.weights(heads, ablation) is not None else ["greedy"]
        decoders = {name: session.decoder(name, example, heads, ablation, gamma) for name in wanted}

        def work(job: Job) -> None:
            for name, decoder in decoders.items():
                job.results[name] = session.generate(example, state, decoder, max_new_tokens=new_tokens, on_step=job.step).text

        job = jobs.start(new_tokens * len(decoders), work)
        settings = (
            f"{example.key}, {state.describe()}, {len(heads)} heads ({_names(heads) or 'none'}), "
            f"{ablation.describe()} ablation, DPS γ = {gamma:g}, {new_tokens} new tokens"
        )
        empty = "(select heads to compare)"
        return (
            job.id,
            False,
            settings,
            f"DPS (γ = {gamma:g})",
            "…",
            *(("…" if name in decoders else empty) for name in DECODERS[1:]),
        )

    @app.callback(
        Output("progress", "value"),
        Output("progress", "max"),
        Output("progress-text", "children"),
        *[Output(f"gen-{name}", "children", allow_duplicate=True) for name in DECODERS],
        Output("poll", "disabled", allow_duplicate=True),
        Input("poll", "n_intervals"),
        State("job", "data"),
        prevent_initial_call=True,
    )
    def poll(_, job_id):
        if not job_id:
            raise PreventUpdate
        job = jobs.get(job_id).snapshot()
        finished = job["status"] != "running"
        done = job["total_steps"] if job["status"] == "done" else job["done_steps"]
        text = {"running": f"{done} / {job['total_steps']} tokens", "done": "done", "cancelled": "cancelled"}.get(
            job["status"], f"failed: {job['error']}"
        )
        texts = [job["results"].get(name, dash.no_update) for name in DECODERS]
        return str(done), str(job["total_steps"]), text, *texts, finished

    @app.callback(
        Output("progress-text", "children", allow_duplicate=True),
        Input("cancel", "n_clicks"),
        State("job", "data"),
        prevent_initial_call=True,
    )
    def cancel(_, job_id):
        if not job_id:
            raise PreventUpdate
        jobs.cancel(job_id)
        return "cancelling…"

    @app.callback(
        Output("download-heads", "data"),
        Input("export-heads", "n_clicks"),
        State("heads", "data"),
        State("kind", "value"),
        State("strength", "value"),
        prevent_initial_call=True,
    )
    def export_heads(_, data, kind, strength):
        text = export.heads_json(session, _head_set(data), _ablation(kind, strength))
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
        *[State(i.component_id, i.component_property) for i in EXAMPLE_STATE],
        State("heads", "data"),
        State("kind", "value"),
        State("strength", "value"),
        prevent_initial_call=True,
    )
    def export_png(_, map_figure, *args):
        *example_state, data, kind, strength = args
        example, state = _current(session, *example_state)
        heads = _head_set(data)
        report = session.nll(example, state, heads, _ablation(kind, strength))
        title = f"{example.key}, {state.describe()}: {report.n_heads} heads ({report.ablation})"
        figures = {"head-map": map_figure, "nll": views.nll_figure(report, title=title)}
        if heads:
            figures["per-token"] = views.per_token_figure(report, title=f"per-token Δ NLL, {title}")
        return dcc.send_bytes(export.figures_zip(figures), "studio-views.zip")


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _non_negative(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise InputError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)
