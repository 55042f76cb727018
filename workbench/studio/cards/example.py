"""The example card: an example of the run's data (split, example) or a typed-in one, its details
(user, profile items, the prompt as the model sees it, the reference) and the profile state."""

from __future__ import annotations

import dash
from dash import Dash, Input, Output, State, dcc, html

from workbench.errors import InputError
from workbench.studio.cards.common import CARD, EXAMPLE_STATE, LABEL, StudioState, current
from workbench.studio.examples import MAX_TEXT_CHARS, ProfileState, StudioExample
from workbench.studio.session import StudioSession


def layout(state: StudioState) -> html.Div:
    source, run = state.session.source, state.session.run
    splits = sorted({source.split, "train", "dev"})
    split_options = [
        {"label": f"{s} (the run's heads were found here)" if s == source.split and run.scores else s, "value": s} for s in splits
    ]
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
                    dcc.Dropdown(id="split", options=split_options, value=source.split, clearable=False),
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
                    dcc.Checklist(  # plain few-shot text by default: in the chat template the model ignores the profile
                        id="typed-chat",
                        options=[{"label": " wrap in the chat template (instruct models)", "value": "chat"}],
                        value=[],
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


def register(app: Dash, state: StudioState) -> None:
    session = state.session

    @app.callback(Output("task-picker", "style"), Output("typed-picker", "style"), Input("example-mode", "value"))
    def visibility(mode):
        hidden = {"display": "none"}
        return (hidden if mode == "typed" else {}), ({} if mode == "typed" else hidden)

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
        example, profile = current(session, mode, split, key, typed, "own" if profile_mode == "swap" else profile_mode, None)
        partners = example.swap_partners()
        if swap_user not in partners:
            swap_user = example.default_partner()
        if profile_mode == "swap" and swap_user:
            profile = ProfileState("swap", swap_user)
        options = [{"label": f"user {p}", "value": p} for p in partners]
        return _details(example, profile, session), options, swap_user, profile_mode != "swap"


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
