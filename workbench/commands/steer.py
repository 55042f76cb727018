"""`workbench steer`: one prompt continued several ways, side by side, each column labelled by
what it is: greedy (with the profile, when the prompt is a user's example), the model with its
heads suppressed, DPS, and, for an example, greedy on the same prompt without the profile, so
that what the profile and what the heads change can be read off one table.

The prompt is `--prompt TEXT` (plain text, or a chat-template user turn with `--format chat`)
or `--example ID` from `--data/--task/--split`, built with the same prompt options as
`evaluate`; either way each continuation stops where `evaluate` stops an answer (the task's stop
string in the plain and history formats, the end-of-turn token in chat). The DPS options are the decoder options of `evaluate`, under the same names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from workbench.commands._decoder_options import with_decoder_options
from workbench.commands._shared import DeviceMapOption, DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens
from workbench.commands.discover import DataOption, MaxPromptTokensOption, ProfileKOption, RetrieverOption, SeedOption
from workbench.errors import InputError


@friendly_errors
@with_decoder_options(["dps"])
def steer(
    heads: Annotated[Path, typer.Option("--heads", help="heads.json from `workbench discover` (or a reference head file).")],
    prompt: Annotated[str | None, typer.Option("--prompt", help="The prompt text (see --format).")] = None,
    example: Annotated[
        str | None, typer.Option("--example", help="Take the prompt of this example id of --data/--task/--split instead.")
    ] = None,
    data: DataOption = None,
    task: Annotated[
        str,
        typer.Option("--task", help="Task of --example; for --prompt too, it says where an answer ends (as in evaluate)."),
    ] = "LaMP-4",
    split: Annotated[str, typer.Option("--split", help="Split of --example.")] = "dev",
    prompt_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="plain (text as given / few-shot prompt), chat (chat template) or history (the authors' detection prompt).",
        ),
    ] = "plain",
    profile_k: ProfileKOption = None,
    retriever: RetrieverOption = None,
    max_prompt_tokens: MaxPromptTokensOption = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message (--prompt with --format chat).")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens to generate per continuation.")] = 64,
    seed: SeedOption = 0,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
    decoder_options: dict[str, Any] | None = None,
) -> None:
    """Print greedy, heads-suppressed and DPS continuations of one prompt (and greedy without the
    profile for an --example)."""
    from rich.console import Console
    from rich.table import Table

    from workbench.data.prompts import PromptConfig, answer_stop_strings, build_prompt, encode
    from workbench.data.sources import load_examples
    from workbench.data.tasks import task_spec
    from workbench.decoding import DPS, Greedy, Suppressed, generate
    from workbench.heads import HeadWeights

    if prompt is None and example is None:
        raise InputError("give --prompt TEXT or --example ID (with --data/--task/--split)")
    if prompt is not None and example is not None:
        raise InputError("give --prompt or --example, not both")
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if prompt is not None and not prompt.strip():
        raise InputError("--prompt is empty")
    if system is not None and (prompt is None or prompt_format != "chat"):
        raise InputError("--system applies to --prompt with --format chat")
    spec = task_spec(task)  # a bad --task fails before the model loads
    if not heads.is_file():
        raise InputError(f"{heads}: file not found")
    dps = DPS(**(decoder_options or {}))  # bad options fail before the model loads
    config = PromptConfig(  # PromptConfig checks the choices
        format=prompt_format,  # type: ignore[arg-type]
        profile_k=5 if profile_k is None else profile_k,
        retriever=retriever or "bm25",  # type: ignore[arg-type]
        seed=seed,
        max_prompt_tokens=max_prompt_tokens,
    )  # fmt: skip  (so does a bad prompt option)
    chosen = None
    if example is not None:
        found = [e for e in load_examples(data, task, split) if e.example_id == example]
        if not found:
            raise InputError(f"no example {example!r} in the {split} split of {data or 'the demo set'} ({task})")
        chosen = found[0]
    lens = load_lens(model, device, dtype, device_map)
    weights = HeadWeights.load_any(heads, geometry=lens.geometry)
    dps = DPS(weights, contrast=dps.contrast, generic=dps.generic, prefill=dps.prefill)
    if chosen is None:
        ids = lens.encode_chat(prompt, system) if config.format == "chat" else encode(lens, prompt, config.format)  # type: ignore[arg-type]
        no_profile = None
    else:
        ids = build_prompt(lens, chosen, config, answer_room=max_new_tokens)
        no_profile = build_prompt(lens, chosen, config, with_profile=False, answer_room=max_new_tokens)
    stops = answer_stop_strings(config.format, spec)  # every continuation ends where `evaluate` ends an answer
    columns = {
        "greedy, with profile" if chosen else "greedy": (Greedy(), ids),
        "heads suppressed": (Suppressed(weights, generic=dps.generic), ids),
        dps_label(dps): (dps, ids),
    }
    if no_profile is not None:
        columns["greedy, no profile"] = (Greedy(), no_profile)
    title = f"{lens.name}: {len(weights.heads())} heads from {heads.name}"
    table = Table(title=title + (f", example {chosen.example_id} (user {chosen.user_id})" if chosen else ""), show_lines=True)
    texts = []
    for name, (decoder, prompt_ids) in columns.items():
        table.add_column(name, overflow="fold", ratio=1)
        generation = generate(lens, [prompt_ids], decoder=decoder, max_new_tokens=max_new_tokens, stop_strings=stops)[0]
        texts.append(generation.text.strip())
    table.add_row(*texts)
    Console().print(table)
    if chosen is not None and chosen.output:
        print(f"reference ({chosen.user_id}): {chosen.output.strip()}")


def dps_label(dps: Any) -> str:
    """'DPS γ=1.0', plus the options that differ from DPS's defaults."""
    from workbench.decoding import DPS

    defaults = DPS().options()
    changed = [f"{name}={value}" for name, value in dps.options().items() if name != "gamma" and value != defaults[name]]
    return f"DPS γ={dps.contrast.gamma}" + (f" ({', '.join(changed)})" if changed else "")


def register(app: typer.Typer) -> None:
    app.command("steer")(steer)
