"""The generations card: greedy, greedy with the head set ablated and DPS continuations of the
example's prompt, run as a cancellable background job that the page polls for progress."""

from __future__ import annotations

import dash
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from workbench.studio.cards.common import (
    CARD,
    LABEL,
    ROW,
    StudioState,
    ablation,
    current,
    example_states,
    gamma_slider,
    head_set,
    names,
    positive,
)
from workbench.studio.jobs import Job
from workbench.studio.session import DECODERS, MAX_NEW_TOKENS

POLL_MS = 300
DECODER_TITLES = {"greedy": "greedy (full model)", "ablated": "greedy, head set ablated", "dps": "DPS"}


def layout(state: StudioState) -> html.Div:
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
            dcc.Store(id="job", data=None),
            dcc.Interval(id="poll", interval=POLL_MS, disabled=True),
            html.Span("generations", style=LABEL),
            html.Div(
                style={**ROW, "alignItems": "center"},
                children=[
                    html.Span("DPS γ"),
                    gamma_slider("gamma", width=260),
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


def register(app: Dash, state: StudioState) -> None:
    session, jobs = state.session, state.jobs

    @app.callback(
        Output("job", "data"),
        Output("poll", "disabled"),
        Output("gen-settings", "children"),
        Output("gen-dps-title", "children"),
        *[Output(f"gen-{name}", "children") for name in DECODERS],
        Input("generate", "n_clicks"),
        *example_states(),
        State("heads", "data"),
        State("kind", "value"),
        State("strength", "value"),
        State("gamma", "value"),
        State("new-tokens", "value"),
        prevent_initial_call=True,
    )
    def start_generation(_, *args):
        *example_state, data, kind, strength, gamma, new_tokens = args
        example, profile = current(session, *example_state)
        heads, chosen = head_set(data), ablation(kind, strength)
        new_tokens = positive(new_tokens, "new tokens")
        gamma = 1.0 if gamma is None else float(gamma)
        wanted = list(DECODERS) if session.weights(heads, chosen) is not None else ["greedy"]
        decoders = {name: session.decoder(name, example, heads, chosen, gamma) for name in wanted}

        def work(job: Job) -> None:
            for name, decoder in decoders.items():
                job.results[name] = session.generate(example, profile, decoder, max_new_tokens=new_tokens, on_step=job.step).text

        job = jobs.start(new_tokens * len(decoders), work)
        settings = (
            f"{example.key}, {profile.describe()}, {len(heads)} heads ({names(heads) or 'none'}), "
            f"{chosen.describe()} ablation, DPS γ = {gamma:g}, {new_tokens} new tokens"
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
