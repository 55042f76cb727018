"""What a newcomer trips over on the command line: every command's help is complete, usage and
type errors are one line with exit status 2, bad `--out` / `--device` / data are refused before any
work, and Ctrl-C ends with one line saying what was kept (exit status 130), resumable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import workbench.commands.evaluate as evaluate_command
import workbench.commands.validate as validate_command
import workbench.data.scoring_examples as scoring_examples
import workbench.experiments.evaluation as evaluation_module
from workbench.cli import app
from workbench.heads import HeadWeights

FIXTURES = Path(__file__).parent / "fixtures"
WORKBENCH = Path(sys.executable).with_name("workbench")


def invoke(*args, **kwargs):
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, [str(a) for a in args], **kwargs)


def commands(group=None, path=()):
    """`(path, click command)` of every command and subcommand."""
    group = group or typer.main.get_command(app)
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))


ALL = list(commands())
LEAVES = [(path, command) for path, command in ALL if not hasattr(command, "commands")]


def one_error_line(result, exit_code: int = 2) -> str:
    """The single stderr line of a failed command (and nothing else)."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output and "╭" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_and_option_has_help(path, command) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert (command.help or "").strip(), f"workbench {' '.join(path)} has no description"
    for param in command.params:
        if param.name != "help":
            assert (getattr(param, "help", None) or "").strip(), f"workbench {' '.join(path)}: {param.name} has no help text"
    assert "<bool>" not in result.stdout  # flags are flags, not options taking a boolean


def test_top_level_help_lists_every_command_on_one_line() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:")[1].strip().splitlines()
    top_level = [path[0] for path, _ in ALL if len(path) == 1]
    assert [line.split()[0] for line in listed] == [name for name in top_level if name != "figures"] + ["figures"]
    for line in listed:
        description = line.split(maxsplit=1)[1]
        assert description.endswith(".") and not description.endswith("..."), line  # whole, not cut


def first_integer_option(command):
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        descriptor = getattr(param, "type_descriptor", None)  # typer >= 0.20 describes types itself
        if (descriptor.annotation is int) if descriptor is not None else param.type.name == "integer":
            return param
    return None


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_usage_and_type_errors_are_one_line(path, command) -> None:
    line = one_error_line(invoke(*path, "--no-such-option"))
    assert line.startswith("error: no such option: --no-such-option")
    integer = first_integer_option(command)
    without_integers = path[0] in ("info", "decoders", "merge") or (path[0] == "figures" and path[-1] != "validation")
    assert (integer is None) == without_integers
    if integer is not None:
        name = integer.opts[0]
        assert one_error_line(invoke(*path, name, "x")) == f"error: {name}: 'x' is not a valid integer"


def test_a_missing_option_and_an_unknown_command_are_one_line() -> None:
    assert one_error_line(invoke("validate", "--out", "x")) == "error: missing option '--heads'"
    assert one_error_line(invoke("nosuch")) == "error: no such command 'nosuch'"


@pytest.mark.parametrize(
    "arguments",
    [
        ["validate", "--heads", "h.json", "--model", "none/such"],
        ["figures", "heatmap", "--pcs", "p.parquet"],
        ["figures", "overlap", "a.json", "b.json"],
        ["figures", "validation", "--summary", "s.csv"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_out_naming_a_file_is_refused_before_any_work(tmp_path, arguments) -> None:
    """The input files do not exist and the model cannot load: the --out check comes first."""
    existing = tmp_path / "results.json"
    existing.write_text("{}")
    line = one_error_line(invoke(*arguments, "--out", existing))
    assert line == f"error: --out: {existing} is an existing file, not a folder"
    line = one_error_line(invoke(*arguments, "--out", existing / "inside"))
    assert line == f"error: --out: {existing} is a file, so {existing / 'inside'} cannot be a folder"
    assert existing.read_text() == "{}"


def test_out_under_an_unwritable_folder_is_refused(tmp_path, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    line = one_error_line(invoke("validate", "--heads", "h.json", "--out", locked / "new" / "run"))
    assert line == f"error: --out: cannot write in {locked}"


@pytest.mark.parametrize("device", ["tpu", "cuda:7", "gpu0"])
def test_unknown_or_unavailable_devices_are_one_line(device) -> None:
    line = one_error_line(invoke("info", "--device", device, "--model", "none/such"))
    assert line.startswith("error: --device: ") and device in line


def test_unknown_dtype_is_one_line() -> None:
    assert "unknown dtype 'int8'" in one_error_line(invoke("info", "--dtype", "int8"))


def test_lamp_folder_without_gold_outputs_is_named_before_the_model_loads(tmp_path) -> None:
    folder = tmp_path / "LaMP-4"
    shutil.copytree(FIXTURES / "lamp" / "LaMP-4", folder)
    (folder / "dev" / "dev_outputs.json").unlink()
    line = one_error_line(
        invoke("evaluate", "--data", folder, "--task", "LaMP-4", "--model", "none/such", "--out", tmp_path / "o")
    )
    assert line == f"error: {folder / 'dev'}: no dev_outputs.json (the gold outputs); evaluation and head discovery need it"


def tiny_heads(lens, path: Path) -> Path:
    HeadWeights.random_heads(lens.geometry, 2, seed=0).save(path)
    return path


def test_ctrl_c_says_what_was_kept_and_the_rerun_resumes(tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(evaluate_command, "load_lens", lambda *args: tiny)
    real_generate, calls = evaluation_module.generate, []

    def interrupted_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(*args, **kwargs)

    out = tmp_path / "run"
    arguments = [
        "evaluate",
        "--task",
        "LaMP-7",
        "--limit",
        3,
        "--batch-size",
        1,
        "--max-new-tokens",
        3,
        "--profile-k",
        1,
        "--out",
        out,
    ]
    monkeypatch.setattr(evaluation_module, "generate", interrupted_on_second_batch)
    result = invoke(*arguments)
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert (
        result.stderr.splitlines()[-1] == f"interrupted; finished examples are saved in {out}; re-run the same command to resume"
    )
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(evaluation_module, "generate", real_generate)
    assert invoke(*arguments).exit_code == 0
    ids = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 3


def test_ctrl_c_in_a_command_that_does_not_resume_says_so(tiny, tmp_path, monkeypatch) -> None:
    from workbench.scores import PCSResult

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PCSResult, "load", interrupt)
    result = invoke("figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--out", tmp_path / "f")
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted; no half-written file was left; re-run the command to start again"


def test_ctrl_c_in_validate_says_it_resumes(tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(validate_command, "load_lens", lambda *args: tiny)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring_examples, "load_scoring_examples", interrupt)
    result = invoke("validate", "--task", "LaMP-7", "--heads", tiny_heads(tiny, tmp_path / "h.json"), "--out", tmp_path / "v")
    assert result.exit_code == 130
    assert "re-run the same command to resume" in result.stderr


def lamp3_folder(folder: Path, copies: int) -> Path:
    """The LaMP-3 fixture (review scores: no METEOR, whose WordNet takes seconds to load) repeated."""
    questions = json.loads((FIXTURES / "lamp" / "LaMP-3" / "dev" / "dev_questions.json").read_text())
    golds = json.loads((FIXTURES / "lamp" / "LaMP-3" / "dev" / "dev_outputs.json").read_text())
    folder.mkdir()
    many = [{**q, "id": f"{q['id']}-{i}"} for i in range(copies) for q in questions]
    outputs = [{**g, "id": f"{g['id']}-{i}"} for i in range(copies) for g in golds["golds"]]
    (folder / "dev_questions.json").write_text(json.dumps(many))
    (folder / "dev_outputs.json").write_text(json.dumps({"task": golds["task"], "golds": outputs}))
    return folder


def test_a_real_sigint_ends_with_one_line_and_status_130(tmp_path) -> None:
    """The whole path through the installed `workbench` script and Python's signal handling."""
    from workbench.engine.models import tiny_hf_model

    model, tokenizer = tiny_hf_model(n_ctx=4096)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    data, out = lamp3_folder(tmp_path / "data", 60), tmp_path / "run"  # room for a slow, busy machine to send the signal
    command = [str(WORKBENCH), "evaluate", "--model", str(tmp_path / "model"), "--data", str(data), "--task", "LaMP-3",
               "--batch-size", "1", "--max-new-tokens", "2", "--profile-k", "1", "--out", str(out)]  # fmt: skip
    # The child gets the default SIGINT disposition whatever an earlier test left in this process
    # (a library that ignores SIGINT would make the child ignore it too).
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    predictions = out / "predictions.jsonl"
    while process.poll() is None and not (predictions.is_file() and predictions.read_text().count("\n")):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == f"interrupted; finished examples are saved in {out}; re-run the same command to resume"
    kept = predictions.read_text().splitlines()
    assert 1 <= len(kept) < 30 and not (out / "metrics.json").exists()


# --- one style for errors and help (issue 22.6) ------------------------------------------------


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any command loads a model."""
    import workbench.engine.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


@pytest.fixture
def three_heads(tmp_path) -> Path:
    weights = torch.zeros(30, 9)
    weights[3, 1], weights[5, 2], weights[7, 0] = 1.0, 0.5, 0.3
    HeadWeights(weights, model="default").save(tmp_path / "heads.json")
    return tmp_path / "heads.json"


BAD_OPTIONS = [
    (["validate", "--top-k", "4"], "error: --top-k must lie in 1..3 (the heads with non-zero weight in {heads}), got 4"),
    (["validate", "--top-k", "0"], "error: --top-k: '0' is not greater than or equal to 1"),
    (["validate", "--n-random", "0"], "error: --n-random: '0' is not greater than or equal to 1"),
    (["discover", "--method", "foo"], "error: --method must be 'exact', 'attribution' or 'hybrid', got 'foo'"),
    (["discover", "--limit", "0"], "error: --limit: '0' is not greater than or equal to 1"),
    (["evaluate", "--limit", "0"], "error: --limit must be an integer >= 1, got 0"),
    (["evaluate", "--method", "dps", "--gamma", "-1"], "error: --gamma must be a number >= 0 or 'entropy', got '-1'"),
    (["cluster", "--k", "2", "--temperature", "0"], "error: --temperature must be a finite number > 0, got 0.0"),
    (["run", "--n-train", "0"], "error: --n-train must be at least 1, got 0"),
    (["run", "--preset", "nosuch"], "error: --preset: unknown preset 'nosuch'; the presets are default, full"),
    (["run", "--method", "guess"], "error: --method: unknown PCS method 'guess'; choose one of exact, attribution, hybrid"),
    (["steer"], "error: give --prompt TEXT or --example ID (with --data/--task/--split)"),
    (["steer", "--prompt", "hi", "--example", "x"], "error: give --prompt or --example, not both"),
]


@pytest.mark.parametrize(("arguments", "expected"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_a_bad_option_is_one_line_naming_the_flag_before_the_model_loads(arguments, expected, three_heads, tmp_path,
                                                                         no_model) -> None:  # fmt: skip
    command, rest = arguments[0], arguments[1:]
    heads = ["--heads", three_heads] if command in ("validate", "steer") else []
    out = ["--out", tmp_path / "out"] if command not in ("run", "steer") else []
    if command == "evaluate" and "dps" in rest:
        heads = ["--heads", three_heads]
    assert one_error_line(invoke(command, *heads, *rest, *out)) == expected.format(heads=three_heads)


def test_a_lamp_folder_names_its_task_and_a_missing_split_points_to_the_one_there(tmp_path, no_model) -> None:
    from workbench.data.sources import resolve_task

    folder = tmp_path / "LaMP-3-download"
    shutil.copytree(FIXTURES / "lamp" / "LaMP-3", folder)
    assert resolve_task(folder, None) == "LaMP-3"  # its dev_outputs.json says "task": "LaMP_3"
    line = one_error_line(invoke("discover", "--data", folder, "--out", tmp_path / "d"))  # no --task, split train
    assert line == f"error: {folder}: no train_questions.json here or in {folder / 'train'}; it has the dev split (--split dev)"
    (folder / "dev" / "dev_outputs.json").unlink()
    line = one_error_line(invoke("validate", "--heads", "h.json", "--data", folder, "--out", tmp_path / "v"))
    assert (
        line
        == f'error: --task is needed: {folder} does not name its task (a LaMP folder\'s outputs file does, e.g. "task": "LaMP_4")'
    )


def test_a_cut_short_json_file_says_where_in_one_whole_line(tmp_path, no_model) -> None:
    folder = tmp_path / "LaMP-3"
    shutil.copytree(FIXTURES / "lamp" / "LaMP-3", folder)
    outputs = folder / "dev" / "dev_outputs.json"
    kept = '{"task": "LaMP_3",\n "golds": [{"id": "120", "output": '
    outputs.write_text(kept + '"1')  # cut inside a string
    line = one_error_line(invoke("evaluate", "--data", folder, "--task", "LaMP-3", "--out", tmp_path / "e"))
    column = len(kept.splitlines()[1]) + 1  # the string's opening quote
    assert (
        line
        == f"error: {outputs}: malformed JSON: unterminated string starting at line 2, column {column} (is the file cut short?)"
    )


def test_every_default_is_shown_one_way() -> None:
    """A closing "Default: X." sentence; never typer's `[default: X]` or a "(default X)" in the text."""
    for path, command in LEAVES:
        options = invoke(*path, "--help").stdout.split("Options:", 1)[1]
        assert "[default:" not in options and "(default" not in options, path
        for param in command.params:
            if getattr(param, "param_type_name", "") != "option" or param.required or param.default is None:
                continue
            if param.is_flag and not param.secondary_opts:
                continue
            shown = (param.opts[0] if param.default else param.secondary_opts[0]) if param.is_flag else param.default
            assert param.help.endswith(f"Default: {shown}."), (path, param.name, param.help)
