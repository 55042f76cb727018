"""`workbench studio`: interactive head-ablation studies in the browser (a local Dash app).

Serves on the loopback interface unless `--host` says otherwise (then it warns: whoever can
reach the port can run the model and read the run folder's score and head files).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens
from workbench.errors import InputError

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@friendly_errors
def studio(
    run: Annotated[
        Path | None,
        typer.Option("--run", help="A run folder (discover or demo output): its PCS maps, head sets and task data."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="The examples to show (a LaMP folder, ...; as discover's --data): replaces the run's record."
        ),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="The task of --data. Default: the run's.")] = None,
    model: ModelOption = None,
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 8050,
    host: Annotated[
        str, typer.Option("--host", help="Interface to serve on; anything but loopback is reachable by others.")
    ] = LOOPBACK,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
) -> None:
    """Start the head-ablation studio: pick an example, click heads on the layer × head map, see what breaks."""
    try:
        from workbench.studio.app import create_app
    except ImportError as error:
        raise InputError(f"the studio needs Dash ({error.name} is missing): pip install 'workbench[studio]'") from None
    from workbench.data.tasks import task_spec
    from workbench.studio.examples import is_prompt_file, task_examples
    from workbench.studio.runfolder import RunFolder
    from workbench.studio.session import StudioSession

    if not 1 <= port <= 65535:
        raise InputError(f"--port must lie in 1..65535, got {port}")
    folder = RunFolder(run)  # fails on a bad --run, --data or --task before the model loads
    source = folder.task_source(data, None if task is None else task_spec(task).name)
    if not is_prompt_file(source):
        task_examples(source, source.split)
    lens = load_lens(model, device, dtype)
    app = create_app(StudioSession(lens, folder, source))
    if not is_loopback(host):
        print(
            f"warning: serving on {host}: anyone who can reach port {port} can use the model and read this run's files",
            file=sys.stderr,
        )
    print(f"workbench studio on http://{host}:{port}/ (Ctrl+C stops it)")
    app.run(host=host, port=port, debug=False)


def register(app: typer.Typer) -> None:
    app.command("studio", short_help="Interactive head-ablation studies in the browser.")(studio)
