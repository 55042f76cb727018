"""`workbench show`: an example's prompt exactly as the decoder receives it, or the list of a
split's example ids.

`--example ID` prints the example's header (user, prompt tokens, where the answer stops), the
prompt decoded with its special tokens, and the reference; `--list` prints one line per example:
id, user and prompt tokens. The prompt is `evaluate`'s (`workbench.experiments.evaluation.
decoding_prompts`), built with the same data and prompt options under the same names, so what is
shown is what `evaluate` and `steer --example` decode from.
"""

from __future__ import annotations

from typing import Annotated

import typer

from workbench.commands._shared import DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens
from workbench.commands.discover import (
    DataOption,
    FormatOption,
    MaxPromptTokensOption,
    PresetOption,
    ProfileKOption,
    RetrieverOption,
    SeedOption,
)
from workbench.errors import InputError


@friendly_errors
def show(
    example: Annotated[str | None, typer.Option("--example", help="The id of the example whose prompt to print.")] = None,
    list_ids: Annotated[bool, typer.Option("--list", help="List the split's example ids, users and prompt tokens.")] = False,
    data: DataOption = None,
    task: Annotated[str, typer.Option("--task", help="The data's task.")] = "LaMP-4",
    split: Annotated[str, typer.Option("--split", help="The split.")] = "dev",
    preset: PresetOption = None,
    prompt_format: FormatOption = None,
    profile_k: ProfileKOption = None,
    retriever: RetrieverOption = None,
    max_prompt_tokens: MaxPromptTokensOption = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", help="Answer room kept in the context. Default: the task's.")
    ] = None,
    seed: SeedOption = 0,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
) -> None:
    """Print an example's prompt as the model sees it (--example ID), or list the example ids (--list)."""
    from workbench.data.sources import load_examples
    from workbench.experiments.evaluation import decoding_prompts, eval_config

    if (example is None) == (not list_ids):
        raise InputError("give --example ID or --list, not both")
    prompt_options = {
        "format": prompt_format,
        "profile_k": profile_k,
        "retriever": retriever,
        "max_prompt_tokens": max_prompt_tokens,
    }
    config = eval_config(task=task, split=split, model=model or "default", preset=preset, prompt_options=prompt_options,
                         max_new_tokens=max_new_tokens, seed=seed, data=str(data) if data else "demo")  # fmt: skip
    examples = load_examples(data, task, split, need_gold=False)
    where = f"the {split} split of {data or 'the demo set'} ({config.task})"
    chosen = examples if example is None else [e for e in examples if e.example_id == example]
    if not chosen:
        raise InputError(f"no example {example!r} in {where}; `workbench show --list` lists the ids")
    lens = load_lens(model, device, dtype)
    prompts = decoding_prompts(lens, chosen, config, examples)
    if example is None:
        print(f"{len(chosen)} examples in {where}; prompt tokens as {config.prompt.format} prompts for {lens.name}")
        for item in chosen:
            print(f"{item.example_id}\tuser {item.user_id}\t{len(prompts[item.example_id])} tokens")
        return
    (item,) = chosen
    ids = prompts[item.example_id]
    stops = " or ".join(repr(stop) for stop in config.stop_strings) or "the end-of-turn token"
    print(
        f"example {item.example_id} · user {item.user_id} · {where} · {len(ids)} prompt tokens "
        f"({config.prompt.format}, {config.prompt.profile_k} profile items by {config.prompt.retriever}, "
        f"room for {config.new_tokens} answer tokens) · the answer stops at {stops}"
    )
    print("--- the prompt as the model sees it (special tokens shown) ---")
    print(lens.decode(ids, skip_special_tokens=False))
    print("--- reference ---")
    print((item.output or "(none in this split)").strip())


def register(app: typer.Typer) -> None:
    app.command("show", short_help="An example's prompt as the model sees it; --list: the ids.")(show)
