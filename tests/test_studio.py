"""The head-ablation studio: the session's numbers against independent computations, the run-folder
reader, the lock and jobs, the command, and the page itself in headless Chromium (Playwright) on a
tiny model; one slow end-to-end test on the default model.

Screenshots of every browser step go to $WORKBENCH_STUDIO_ARTEFACTS (default: a folder in the
temporary directory, printed by the tests).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from workbench.cli import app
from workbench.data.prompts import PromptConfig, tokenized_examples
from workbench.data.sources import load_examples
from workbench.decoding import Greedy, Suppressed, generate
from workbench.engine.models import load_model, tiny_hf_model
from workbench.errors import InputError
from workbench.experiments.study import AblationStudy
from workbench.heads import HeadWeights
from workbench.scores import score_heads
from workbench.studio.cards.results import APPEND_COMPARISONS, MAX_HISTORY_ROWS
from workbench.studio.examples import OFF, ProfileState
from workbench.studio.jobs import FairLock, JobBoard
from workbench.studio.pagedriver import CHROMIUM, CHROMIUM_ARGS, click_head
from workbench.studio.runfolder import RunFolder
from workbench.studio.session import AblationKind, StudioSession
from workbench.studio.views import SELECTION_UID

TASK = "LaMP-7"  # short tweets: the character-level tiny model's prompts stay well inside its context
N_CTX = 1024
ARTEFACTS = Path(os.environ.get("WORKBENCH_STUDIO_ARTEFACTS") or Path(tempfile.gettempdir()) / "workbench-studio-artefacts")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny random Llama saved as a model folder (what `--model FOLDER` takes)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    hf_model, tokenizer = tiny_hf_model(n_ctx=N_CTX)
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lens(tiny_folder):
    return load_model(str(tiny_folder), device="cpu")


@pytest.fixture(scope="module")
def twin(tiny_folder):
    """An independent copy of the tiny model's weights, outside any lens or bridge."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_folder, attn_implementation="eager").eval()


def write_run(lens, folder: Path, task: str = TASK, n_examples: int = 2, variants=("standard", "profile-contrast")) -> Path:
    """A run folder as `workbench discover` writes it: attribution PCS on a few train examples,
    standard at the top and profile-contrast in a sub-folder, each with its top heads."""
    examples = tokenized_examples(lens, load_examples(None, task, "train")[:n_examples], PromptConfig())
    places = {"standard": folder, "profile-contrast": folder / "contrast"}
    for variant, target in ((variant, places[variant]) for variant in variants):
        result = score_heads(lens, examples, method="attribution", variant=variant, task=task, progress=False)
        result.metadata["split"] = "train"
        result.save(target / "pcs.parquet")
        HeadWeights.from_scores(result, top_k=3, extra={"split": "train", "data": "demo"}).save(target / "heads.json")
    return folder


@pytest.fixture(scope="module")
def run_folder(lens, tmp_path_factory) -> Path:
    return write_run(lens, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def train(lens):
    """The run's train split through the library's own prompt pipeline (the independent side)."""
    return tokenized_examples(lens, load_examples(None, TASK, "train"), PromptConfig())


def serve(session: StudioSession):
    """The studio app on a free loopback port, in a thread; returns (base url, server)."""
    from werkzeug.serving import make_server

    from workbench.studio.app import create_app

    server = make_server("127.0.0.1", 0, create_app(session).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


@pytest.fixture(scope="module")
def studio(lens, run_folder):
    session = StudioSession(lens, RunFolder(run_folder))
    url, server = serve(session)
    yield url, session
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    print(f"studio screenshots: {ARTEFACTS}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1500}, accept_downloads=True)
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#nll-table table")
    return page


@pytest.fixture
def page(browser, studio):
    page = open_page(browser, studio[0])
    yield page
    page.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


# --- page helpers ------------------------------------------------------------------------------


def wait_for_heads(page, names: str) -> None:
    page.wait_for_selector(f'#nll-heads[data-heads="{names}"]')


def shown(page, row: int, column: str) -> float:
    """The full-precision value behind a cell of the NLL table (its title)."""
    return float(page.get_attribute(f"#nll-table .nll-row-{row} .nll-{column}", "title"))


def selected_on_map(page) -> set[tuple[int, int]]:
    points = page.eval_on_selector(
        "#map .js-plotly-plot",
        "(plot, uid) => { const ring = plot.data.find(t => t.uid === uid); return ring.x.map((x, i) => [ring.y[i], x]); }",
        SELECTION_UID,
    )
    return {tuple(point) for point in points}


def study_of(lens, prompt_ids, target_ids, heads):
    table = AblationStudy(lens, prompt_ids, target_ids).compare({"set": heads}).set_index("set")
    return table.loc["clean", "nll"], table.loc["set", "nll"]


def set_slider(page, slider: str, key: str) -> None:
    handle = page.locator(f"#{slider} [role=slider]").first
    handle.focus()
    handle.press(key)


# --- the session against independent computations ----------------------------------------------


def hand_nll(twin, prompt_ids, target_ids, patch) -> float:
    """Mean reference NLL from the plain HF model with `patch(layer, z)` applied to each layer's
    o_proj input (the concatenated head outputs)."""
    hooks = [
        layer.self_attn.o_proj.register_forward_pre_hook(lambda module, args, index=index: (patch(index, args[0]),))
        for index, layer in enumerate(twin.model.layers)
    ]
    try:
        with torch.no_grad():
            logits = twin(torch.tensor([list(prompt_ids) + list(target_ids)])).logits[0]
    finally:
        for hook in hooks:
            hook.remove()
    start = len(prompt_ids) - 1
    log_probs = logits[start : start + len(target_ids)].float().log_softmax(-1)
    return float(-log_probs[torch.arange(len(target_ids)), torch.tensor(target_ids)].double().mean())


def head_columns(twin, head: int) -> slice:
    d_head = twin.config.head_dim
    return slice(head * d_head, (head + 1) * d_head)


def scaled(twin, weights):
    """A patch that scales each head's output by 1 - w."""

    def patch(layer, z):
        z = z.clone()
        for (head_layer, h), w in weights.items():
            if head_layer == layer:
                z[..., head_columns(twin, h)] *= 1 - w
        return z

    return patch


def mean_replaced(twin, prompts, target_ids, heads):
    """A patch that puts each head's mean output over `prompts` ‖ target (o_proj inputs averaged
    over all positions, captured from the twin) in place of its output."""
    captured = {index: [] for index in range(twin.config.num_hidden_layers)}

    def record(layer, z):
        captured[layer].append(z[0])
        return z

    for prompt in prompts:
        hand_nll(twin, prompt, target_ids, record)
    means = {layer: torch.cat(parts).mean(dim=0) for layer, parts in captured.items()}

    def patch(layer, z):
        z = z.clone()
        for head_layer, h in heads:
            if head_layer == layer:
                z[..., head_columns(twin, h)] = means[layer][head_columns(twin, h)]
        return z

    return patch


def test_session_nll_equals_hand_patched_model(lens, twin, train):
    """Zero, weighted and mean ablation, with and without profile, against the plain HF model with
    the heads' o_proj inputs replaced by hand."""
    session = StudioSession(lens, RunFolder(None))
    session.source = session.source.__class__(task=TASK, split="train")
    example = session.example("train", train[0].example_id)
    reference = train[0]
    assert example.prompt_ids(ProfileState("own")) == reference.prompt_ids
    assert example.prompt_ids(OFF) == reference.no_profile_prompt_ids
    heads = {(0, 1): 1.0, (2, 3): 0.5}
    prompts = {"own": reference.prompt_ids, "off": reference.no_profile_prompt_ids}

    expected = {
        "zero": scaled(twin, dict.fromkeys(heads, 1.0)),
        "weighted": scaled(twin, {head: 0.6 * w for head, w in heads.items()}),
        "mean": mean_replaced(twin, prompts.values(), reference.target_ids, heads),
    }
    for kind, patch in expected.items():
        report = session.nll(example, ProfileState("own"), heads, AblationKind(kind, 0.6))
        own, off = report.conditions
        for condition, state in ((own, "own"), (off, "off")):
            clean = hand_nll(twin, prompts[state], reference.target_ids, lambda layer, z: z)
            assert condition.clean == pytest.approx(clean, abs=1e-5)
            assert condition.ablated == pytest.approx(hand_nll(twin, prompts[state], reference.target_ids, patch), abs=1e-4), kind
            assert abs(condition.delta) > 1e-3
        assert report.profile_specific == pytest.approx(own.delta - off.delta, abs=1e-12)
        assert own.ablated_tokens.mean() == pytest.approx(own.ablated, abs=1e-12)
    off_only = session.nll(example, OFF, heads, AblationKind())
    assert len(off_only.conditions) == 1 and off_only.profile_specific is None
    assert off_only.conditions[0].ablated == pytest.approx(
        session.nll(example, ProfileState("own"), heads, AblationKind()).conditions[1].ablated
    )


def test_clicks_restart_at_the_clicked_layer_and_stay_exact(lens, twin, train):
    """A run of clicks (adding heads above and below, removing the lowest, changing the kind):
    every step equals the hand-patched model, and adding a head above the set's lowest layer
    reruns only the blocks from the clicked layer up."""
    session = StudioSession(lens, RunFolder(None))
    session.source = session.source.__class__(task=TASK, split="train")
    reference = train[2]
    example = session.example("train", reference.example_id)
    calls = []
    hooks = [  # restarts run their blocks on the fast path; a block runs when its attention does
        block.self_attn.register_forward_pre_hook(lambda module, args, index=index: calls.append(index))
        for index, block in enumerate(lens.fast_path.blocks)
    ]
    steps = [
        ({(0, 1)}, "zero", None),
        ({(0, 1), (2, 3)}, "zero", [2]),  # a click on layer 2 reruns block 2 only
        ({(0, 1), (2, 3), (1, 0)}, "zero", [1, 2]),
        ({(2, 3), (1, 0)}, "zero", [1, 2]),  # the lowest head removed: from the new lowest layer
        ({(2, 3), (1, 0)}, "weighted", [1, 2]),
        ({(2, 3), (1, 0), (2, 1)}, "weighted", [2]),
        ({(2, 3), (1, 0), (2, 1)}, "zero", [1, 2]),
        ({(2, 3), (1, 0), (2, 1)}, "mean", None),  # same heads, another reference (its first use computes it)
        ({(2, 3), (1, 0)}, "mean", [2]),
    ]
    try:
        session.nll(example, ProfileState("own"), {}, AblationKind())  # the clean forwards
        for heads, kind, blocks in steps:
            calls.clear()
            report = session.nll(example, ProfileState("own"), dict.fromkeys(heads, 1.0), AblationKind(kind, 0.7))
            weight = 0.7 if kind == "weighted" else 1.0
            prompts = (reference.prompt_ids, reference.no_profile_prompt_ids)
            if kind == "mean":
                patch = mean_replaced(twin, prompts, reference.target_ids, heads)
            else:
                patch = scaled(twin, dict.fromkeys(heads, weight))
            for condition, prompt in zip(report.conditions, prompts):
                expected = hand_nll(twin, prompt, reference.target_ids, patch)
                assert condition.ablated == pytest.approx(expected, abs=1e-4), (heads, kind)
            if blocks is not None:
                assert calls == blocks * 2, (heads, kind)  # both conditions
    finally:
        for hook in hooks:
            hook.remove()


def test_weighted_at_full_strength_equals_zero_for_clicked_heads(lens, train):
    session = StudioSession(lens, RunFolder(None))
    session.source = session.source.__class__(task=TASK, split="train")
    example = session.example("train", train[1].example_id)
    heads = {(1, 0): 1.0, (2, 2): 1.0}
    zero = session.nll(example, ProfileState("own"), heads, AblationKind("zero")).conditions[0]
    weighted = session.nll(example, ProfileState("own"), heads, AblationKind("weighted", 1.0)).conditions[0]
    assert weighted.ablated == pytest.approx(zero.ablated, abs=1e-6)
    assert session.nll(example, ProfileState("own"), heads, AblationKind("weighted", 0.0)).conditions[0].delta == 0
    with pytest.raises(InputError, match="strength"):
        AblationKind("weighted", 1.5)
    with pytest.raises(InputError, match="out of range"):
        session.nll(example, ProfileState("own"), {(3, 0): 1.0}, AblationKind())


def test_typed_example_follows_ablation_study_from_text(lens):
    session = StudioSession(lens, RunFolder(None))
    example = session.typed_example("Write a short note.", "my own note", "I write in lower case.", chat=True)
    study = AblationStudy.from_text(lens, "I write in lower case.\n\nWrite a short note.", "my own note")
    heads = [(0, 2), (1, 1)]
    report = session.nll(example, ProfileState("own"), dict.fromkeys(heads, 1.0), AblationKind())
    table = study.compare({"set": heads}).set_index("set")
    assert report.conditions[0].clean == pytest.approx(table.loc["clean", "nll"], abs=1e-5)
    assert report.conditions[0].ablated == pytest.approx(table.loc["set", "nll"], abs=1e-5)
    with pytest.raises(InputError, match="exceeds the model context of 1024"):
        session.typed_example("x" * (N_CTX + 10), "y")
    with pytest.raises(InputError, match="swap"):
        example.prompt_ids(ProfileState("swap", "u01"))


# --- lock and jobs -----------------------------------------------------------------------------


def test_fair_lock_lets_a_waiting_thread_in_between_steps():
    lock, order = FairLock(), []
    lock.acquire()
    waiter = threading.Thread(target=lambda: (lock.acquire(), order.append("click"), lock.release()))
    waiter.start()
    while lock.waiting == 0:
        time.sleep(0.001)
    order.append("step 1")
    lock.yield_turn()  # the waiting click runs now, before step 2
    order.append("step 2")
    lock.release()
    waiter.join(timeout=5)
    assert order == ["step 1", "click", "step 2"]


def test_a_cancelled_generation_stops_and_frees_the_model(lens, train):
    session = StudioSession(lens, RunFolder(None))
    session.source = session.source.__class__(task=TASK, split="train")
    example = session.example("train", train[0].example_id)
    board = JobBoard()
    steps = []

    def work(job):
        def step():
            steps.append(job.done_steps)
            if len(steps) == 3:
                board.cancel(job.id)
            job.step()

        job.results["greedy"] = session.generate(example, ProfileState("own"), Greedy(), max_new_tokens=50, on_step=step).text

    job = board.start(50, work)
    deadline = time.monotonic() + 30
    while board.get(job.id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert board.get(job.id).status == "cancelled" and "greedy" not in job.results
    assert steps == [0, 1, 2] and job.done_steps == 2  # the third step saw the request and stopped
    assert session.lock.waiting == 0
    assert session.nll(example, OFF, {}, AblationKind()).conditions[0].delta == 0  # the lock was released


# --- the run-folder reader ---------------------------------------------------------------------


def test_run_folder_finds_nested_files_and_reads_their_metadata(run_folder, tmp_path):
    run = RunFolder(run_folder)
    assert [e.path for e in run.scores] == ["pcs.parquet", "contrast/pcs.parquet"]
    assert [e.metadata["variant"] for e in run.scores] == ["standard", "profile-contrast"]
    assert run.scores[1].label == "profile-contrast PCS (attribution, LaMP-7, train, 2 examples)"
    assert [e.n_heads for e in run.head_sets] == [3, 3]
    source = run.task_source()
    assert (source.task, source.data, source.split, source.prompt_format) == (TASK, None, "train", "plain")
    # A later stage layout: a fingerprint.json naming the data and the format wins.
    staged = tmp_path / "staged"
    (staged / "discover").mkdir(parents=True)
    (staged / "discover" / "fingerprint.json").write_text(
        json.dumps({"options": {"task": "LaMP-4", "format": "chat", "split": "dev"}})
    )
    source = RunFolder(staged).task_source()
    assert (source.task, source.data, source.split, source.prompt_format) == ("LaMP-4", None, "dev", "chat")
    # `workbench run` on data with one split records the user-cut halves by label: the split is read
    cut = tmp_path / "cut"
    (cut / "discover-standard").mkdir(parents=True)
    (cut / "run-config.json").write_text(json.dumps({"task": "LaMP-7", "data": None, "train_split": "train"}))
    (cut / "discover-standard" / "fingerprint.json").write_text(
        json.dumps({"options": {"split": "train (train users)", "data": "demo", "format": "plain"}, "data": "0340abcd"})
    )
    source = RunFolder(cut).task_source()
    assert (source.task, source.data, source.split) == ("LaMP-7", None, "train")
    assert source.notes == ("the run cut the 'train' split by user; every user of it is listed here",)
    empty = RunFolder(None).task_source()
    assert (empty.task, empty.split, empty.notes) == ("LaMP-4", "dev", ())


def test_run_folder_opens_nothing_outside_itself(run_folder, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"format": "workbench.head_weights/1", "weights": [[1.0]]}))
    link_run = tmp_path / "linked"
    link_run.mkdir()
    (link_run / "heads.json").symlink_to(secret)
    run = RunFolder(run_folder)
    for name in ("../secret.json", str(secret), "/etc/passwd", "contrast/../../secret.json", "", "checkpoint/x.json"):
        with pytest.raises(InputError):
            run.resolve(name)
    with pytest.raises(InputError, match="outside the run folder"):
        RunFolder(link_run).load_heads("heads.json")
    assert run.load_heads("contrast/heads.json").shape == (3, 4)


# --- the command -------------------------------------------------------------------------------


def test_command_serves_on_loopback_and_warns_for_other_hosts(tiny_folder, run_folder, monkeypatch, capsys):
    from dash import Dash

    from workbench.commands.studio import studio

    calls = []
    monkeypatch.setattr(Dash, "run", lambda self, **options: calls.append(options))
    studio(run=run_folder, model=str(tiny_folder), port=8123)
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8123
    assert "warning" not in capsys.readouterr().err
    studio(run=run_folder, model=str(tiny_folder), port=8123, host="0.0.0.0")
    assert calls[-1]["host"] == "0.0.0.0"
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err


# --- the page ----------------------------------------------------------------------------------


def test_clicked_heads_show_the_library_numbers(page, lens, train):
    example = train[0]
    shot(page, "01-start")
    click_head(page, 0, 1)
    wait_for_heads(page, "L0H1")
    click_head(page, 2, 3)
    wait_for_heads(page, "L0H1 L2H3")
    assert selected_on_map(page) == {(0, 1), (2, 3)}
    shot(page, "02-two-heads")
    heads = [(0, 1), (2, 3)]
    clean, ablated = study_of(lens, example.prompt_ids, example.target_ids, heads)
    clean_off, ablated_off = study_of(lens, example.no_profile_prompt_ids, example.target_ids, heads)
    assert shown(page, 0, "clean") == pytest.approx(clean, abs=1e-5)
    assert shown(page, 0, "ablated") == pytest.approx(ablated, abs=1e-5)
    assert shown(page, 1, "ablated") == pytest.approx(ablated_off, abs=1e-5)
    specific = float(page.get_attribute("#profile-specific", "title"))
    assert specific == pytest.approx((ablated - clean) - (ablated_off - clean_off), abs=1e-5)
    assert page.locator("#per-token .token").count() == len(example.target_ids)

    page.get_by_label("off").check()
    page.wait_for_selector("#nll-table .nll-row-0 >> text=no profile")
    page.wait_for_selector("#profile-specific >> text=the profile is off")
    assert page.locator("#nll-table .nll-row-1").count() == 0
    assert shown(page, 0, "ablated") == pytest.approx(ablated_off, abs=1e-5)
    shot(page, "03-profile-off")

    page.get_by_label("swapped for user").check()
    page.wait_for_selector("#nll-table .nll-row-0 >> text=profile of user")
    clean_swap, ablated_swap = study_of(lens, example.swapped_prompt_ids, example.target_ids, heads)
    assert shown(page, 0, "ablated") == pytest.approx(ablated_swap, abs=1e-5)
    specific = float(page.get_attribute("#profile-specific", "title"))
    assert specific == pytest.approx((ablated_swap - clean_swap) - (ablated_off - clean_off), abs=1e-5)
    shot(page, "04-profile-swapped")

    click_head(page, 2, 3)  # a second click removes the head
    wait_for_heads(page, "L0H1")
    assert selected_on_map(page) == {(0, 1)}


def test_loaded_and_random_sets(page, lens, run_folder):
    page.locator("#load-set").click()
    expected = HeadWeights.load(run_folder / "heads.json").heads()
    names = " ".join(f"L{layer}H{head}" for layer, head in sorted(expected))
    wait_for_heads(page, names)
    assert selected_on_map(page) == set(expected)  # rings follow a set the server loaded, not only clicks
    page.locator("#seed").fill("7")
    page.locator("#random-set").click()
    drawn = HeadWeights.random_heads(lens.geometry, 3, seed=7)
    wait_for_heads(page, " ".join(f"L{layer}H{head}" for layer, head in sorted(drawn.heads())))
    assert "seed 7" in page.inner_text("#set-info")
    shot(page, "05-random-set")


def test_dps_with_gamma_zero_equals_greedy(page, lens, train):
    example = train[0]
    click_head(page, 0, 0)
    wait_for_heads(page, "L0H0")
    click_head(page, 1, 2)
    wait_for_heads(page, "L0H0 L1H2")
    set_slider(page, "gamma", "Home")
    page.wait_for_function("document.querySelector('#gamma [role=slider]').getAttribute('aria-valuenow') === '0'")
    page.locator("#new-tokens").fill("12")
    page.locator("#generate").click()
    page.wait_for_selector("#progress-text >> text=done")
    shot(page, "06-generations")
    assert "γ = 0" in page.inner_text("#gen-settings")
    stops = ("\n",)  # a plain LaMP-7 answer ends at the line break, as in `evaluate`
    greedy = generate(lens, [list(example.prompt_ids)], Greedy(), max_new_tokens=12, stop_strings=stops)[0].text
    grid = torch.zeros(3, 4)
    grid[0, 0] = grid[1, 2] = 1.0
    suppressed = Suppressed(HeadWeights(grid), suppression="zero")
    ablated = generate(lens, [list(example.prompt_ids)], suppressed, max_new_tokens=12, stop_strings=stops)[0].text
    assert page.inner_text("#gen-greedy") == greedy.strip() or page.inner_text("#gen-greedy") == greedy
    assert page.inner_text("#gen-dps") == page.inner_text("#gen-greedy")
    assert page.inner_text("#gen-ablated").strip() == ablated.strip()
    assert ablated != greedy  # the ablation changes what is written, so the DPS check can fail


def test_typed_prompt_longer_than_the_context_is_refused(page, lens):
    page.get_by_label("typed in").check()
    page.locator("#typed-prompt").fill("a" * (N_CTX + 50))
    page.locator("#typed-reference").fill("b")
    page.locator("#typed-use").click()
    page.wait_for_selector("#typed-message >> text=exceeds the model context of 1024")
    shot(page, "07-typed-too-long")
    page.locator("#typed-prompt").fill("Write a title.")
    page.locator("#typed-reference").fill("my own title")
    page.locator("#typed-use").click()
    page.wait_for_selector("#example-details >> text=my own title")
    page.wait_for_selector("#nll-table .nll-row-0")
    assert page.inner_text("#typed-message") == ""
    plain = lens.encode("Write a title.", add_bos=lens.plain_text_bos)  # plain text unless the chat template is ticked
    assert f"prompt {len(plain)} tokens (own profile)" in page.inner_text("#example-details")
    shot(page, "08-typed")


def test_exports_and_error_banner(page, lens, run_folder):
    page.locator("#export-csv").click()  # nothing compared yet: the page says so and keeps working
    page.wait_for_selector("#error-box >> text=no comparisons yet")
    shot(page, "09-error-banner")
    page.locator("#dismiss").click()
    page.wait_for_selector("#error-box", state="hidden")  # the map moves up once the banner is gone
    click_head(page, 1, 1)
    wait_for_heads(page, "L1H1")
    click_head(page, 2, 0)
    wait_for_heads(page, "L1H1 L2H0")
    with page.expect_download() as download:
        page.locator("#export-heads").click()
    weights = HeadWeights.load(download.value.path())
    assert weights.heads() == [(1, 1), (2, 0)] and weights.shape == (3, 4)
    for _ in range(2):  # the same set loaded twice: the second answer repeats the first, and is not kept again
        with page.expect_response(lambda response: "nll-table" in (response.request.post_data or "")):
            page.locator("#load-set").click()
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    table = pd.read_csv(download.value.path())
    assert list(table.columns[:3]) == ["example", "user", "profile"] and len(table) == 3 * 2  # two conditions each
    loaded = " ".join(f"L{layer}H{head}" for layer, head in sorted(HeadWeights.load(run_folder / "heads.json").heads()))
    assert list(table["heads"][::2]) == ["L1H1", "L1H1 L2H0", loaded]
    with page.expect_download(timeout=120_000) as download:
        page.locator("#export-png").click()
    with zipfile.ZipFile(download.value.path()) as archive:
        assert sorted(archive.namelist()) == ["head-map.png", "nll.png", "per-token.png"]
        for name in archive.namelist():
            (ARTEFACTS / f"10-export-{name}").write_bytes(archive.read(name))
            assert archive.read(name)[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparisons_keep_the_newest_rows(page):
    """The browser's append (run in the page itself): new rows go last, the oldest leave at the cap."""
    append = "([source, rows, history]) => (0, eval)('(' + source + ')')(rows, history)"
    full = [{"n": index} for index in range(MAX_HISTORY_ROWS)]
    kept = page.evaluate(append, [APPEND_COMPARISONS, [{"n": -1}, {"n": -2}], full])
    assert len(kept) == MAX_HISTORY_ROWS and kept[:2] == [{"n": 2}, {"n": 3}] and kept[-2:] == [{"n": -1}, {"n": -2}]


# --- the server under concurrent and hostile requests ------------------------------------------


def dash_request(url: str, output: str, inputs: dict, changed: str):
    """POST one callback request the way the page does; returns (status, decoded JSON or None)."""
    dependencies = json.loads(urllib.request.urlopen(f"{url}/_dash-dependencies").read())
    spec = next(
        d for d in dependencies if output in d["output"] and any(f"{i['id']}.{i['property']}" == changed for i in d["inputs"])
    )

    def values(items):
        return [{**item, "value": inputs.get(f"{item['id']}.{item['property']}")} for item in items]

    outputs = [
        {"id": part.split(".")[0], "property": part.split(".")[1].split("@")[0]}
        for part in spec["output"].strip(".").split("...")
    ]
    body = {
        "output": spec["output"],
        "outputs": outputs if len(outputs) > 1 else outputs[0],
        "inputs": values(spec["inputs"]),
        "state": values(spec["state"]),
        "changedPropIds": [changed],
    }
    request = urllib.request.Request(
        f"{url}/_dash-update-component", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, None


def nll_inputs(example_id: str, heads) -> dict:
    return {
        "example-mode.value": "task",
        "split.value": "train",
        "example.value": example_id,
        "profile-mode.value": "own",
        "heads.data": [[layer, head, 1.0] for layer, head in heads],
        "kind.value": "zero",
        "strength.value": 1.0,
    }


def test_twenty_concurrent_requests_are_all_answered(studio, lens, train, browser):
    url, _ = studio
    example = train[1]
    sets = [[(i % 3, i % 4), ((i + 1) % 3, (i + 2) % 4)] for i in range(20)]
    answers: dict[int, tuple] = {}

    def ask(index):
        answers[index] = dash_request(url, "nll-table.children", nll_inputs(example.example_id, sets[index]), "heads.data")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(answers) == list(range(20))
    for index, (status, body) in answers.items():
        assert status == 200
        rows = body["response"]["history-new"]["data"]
        _, ablated = study_of(lens, example.prompt_ids, example.target_ids, sets[index])
        assert rows[0]["ablated_nll"] == pytest.approx(ablated, abs=1e-5)  # each answer is for its own set
    page = open_page(browser, url)  # and the app still works
    click_head(page, 1, 3)
    wait_for_heads(page, "L1H3")
    page.close()


def test_the_browser_cannot_open_files_outside_the_run_folder(studio):
    url, _ = studio
    for name in ("../../../../etc/passwd", "/etc/passwd", "contrast/../../heads.json"):
        inputs = {"set-source.value": name, "load-set.n_clicks": 1, "heads.data": [], "top-k.value": 3, "seed.value": 0}
        status, body = dash_request(url, "heads.data", inputs, "load-set.n_clicks")
        assert status == 200 and not body.get("response")
        message = body["sideUpdate"]["error-text"]["children"]
        assert "only files inside the run folder" in message or "not a score or head file" in message
        status, body = dash_request(url, "map-base.data", {"map-source.value": name}, "map-source.value")
        assert status == 200 and not body.get("response") and "error-text" in body["sideUpdate"]
    for path in (
        "/assets/../../../../etc/passwd",
        "/_dash-component-suites/../../../../etc/passwd",
        "/..%2f..%2f..%2fetc/passwd",
    ):
        try:
            text = urllib.request.urlopen(f"{url}{path}").read().decode(errors="replace")
        except urllib.error.HTTPError:
            continue
        assert "root:" not in text
    # A bug in a callback (a malformed store) shows in the banner, and the server keeps serving.
    status, body = dash_request(
        url, "nll-table.children", {**nll_inputs("x", []), "example-mode.value": "typed", "typed.data": 5}, "typed.data"
    )
    assert status == 200 and "internal error" in body["sideUpdate"]["error-text"]["children"]
    assert urllib.request.urlopen(url).status == 200


# --- the run's own data --------------------------------------------------------------------------
# A discover run on a LaMP-4 folder written here in the official schema (`{split}_questions.json`
# with `id`, `input`, `profile` and `user_id`; `{split}_outputs.json` with `task` and `golds`), with
# ids and users the demo set does not have: the studio shows that folder's examples, never the demo
# set's under the run's label; `--data` replaces the record; data that has moved is refused with one
# line; `show` prints the prompt the decoder gets; generations stop where `evaluate` stops.

USERS = ("writer-a", "writer-b", "writer-c")
TOPICS = ("bridge", "harbour", "library", "orchard", "stadium", "tram line")


def write_lamp4(folder: Path, first_id: int) -> dict[str, list[str]]:
    """A LaMP-4 folder (train and dev) in the official schema; returns the example ids per split."""
    ids: dict[str, list[str]] = {}
    number = first_id
    for split in ("train", "dev"):
        questions, golds = [], []
        for index, user in enumerate(USERS):
            topic = TOPICS[(index + len(ids)) % len(TOPICS)]
            example_id = str(number)
            number += 1
            profile = [
                {
                    "id": f"{example_id}-{k}",
                    "text": f"{user} wrote about the {t} for the weekly paper.",
                    "title": f"{t} news by {user}",
                }
                for k, t in enumerate(TOPICS[index : index + 2])
            ]
            questions.append(
                {
                    "id": example_id,
                    "user_id": user,
                    "input": f"Generate a headline for the following article: The {topic} reopened on {split} day {index}.",
                    "profile": profile,
                }
            )
            golds.append({"id": example_id, "output": f"{topic.title()} reopens"})
        (folder / split).mkdir(parents=True)
        (folder / split / f"{split}_questions.json").write_text(json.dumps(questions))
        (folder / split / f"{split}_outputs.json").write_text(json.dumps({"task": "LaMP_4", "golds": golds}))
        ids[split] = [q["id"] for q in questions]
    return ids


def cli(*args) -> object:
    return CliRunner(env={"COLUMNS": "240"}).invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def own_run(tiny_folder, tmp_path_factory):
    """`workbench discover` on a LaMP-4 folder given by a relative path, from another folder."""
    place = tmp_path_factory.mktemp("own-data")
    ids = write_lamp4(place / "lamp4", first_id=9100)
    here = Path.cwd()
    try:
        import os

        os.chdir(place)
        result = cli("discover", "--data", "lamp4", "--task", "LaMP-4", "--split", "train", "--method", "attribution",
                     "--top-k", 2, "--profile-k", 2, "--out", "run", "--model", tiny_folder)  # fmt: skip
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    return place, ids


def test_a_discover_run_shows_its_own_examples(own_run, lens, tmp_path, monkeypatch):
    place, ids = own_run
    monkeypatch.chdir(tmp_path)  # the studio starts elsewhere: the recorded path must be absolute
    source = RunFolder(place / "run").task_source()
    assert (source.task, source.split, source.notes) == ("LaMP-4", "train", ())
    assert Path(source.data) == (place / "lamp4").resolve()
    session = StudioSession(lens, RunFolder(place / "run"))
    examples = session.examples("train")
    assert [e.key for e in examples] == ids["train"]
    assert {e.user_id for e in examples} == set(USERS)
    demo_ids = {e.example_id for e in load_examples(None, "LaMP-4", "train")}
    assert not demo_ids & {e.key for e in examples}
    assert [e.key for e in session.examples("dev")] == ids["dev"]
    # the prompt the page shows carries the user's own profile and the article
    _, shown = session.prompt(examples[0], ProfileState("own"))
    assert f"news by {USERS[0]}" in shown and "The bridge reopened on train day 0." in shown
    assert f"news by {USERS[0]}" not in session.prompt(examples[0], OFF)[1]


def test_data_option_replaces_the_record_and_moved_data_is_refused(own_run, tmp_path, tiny_folder, monkeypatch):
    place, _ = own_run
    other_ids = write_lamp4(tmp_path / "other", first_id=9500)
    run = RunFolder(place / "run")
    source = run.task_source(tmp_path / "other")
    assert Path(source.data) == (tmp_path / "other").resolve() and source.task == "LaMP-4"
    assert [e.example_id for e in load_examples(source.data, source.task, source.split)] == other_ids["train"]
    with pytest.raises(InputError, match="--data .*missing: no such file or folder"):
        run.task_source(tmp_path / "missing")

    moved = tmp_path / "moved"
    shutil.copytree(place / "run", moved / "run")  # a copy of the run, its data moved away
    shutil.move(str(place / "lamp4"), str(tmp_path / "elsewhere"))
    try:
        with pytest.raises(InputError) as error:
            RunFolder(moved / "run").task_source()
        message = str(error.value)
        assert "\n" not in message and str((place / "lamp4").resolve()) in message and "--data" in message

        import workbench.commands.studio as studio_command

        monkeypatch.setattr(studio_command, "load_lens", lambda *args: pytest.fail("the model loads before the data check"))
        refused = cli("studio", "--run", moved / "run", "--model", tiny_folder)
        assert refused.exit_code == 2 and "is not here" in refused.output and "--data" in refused.output
        assert len(refused.output.strip().splitlines()) == 1
        # the command with --data: the layout names that folder, the model loads after the check
        from dash import Dash

        from workbench.engine.models import load_model

        served = []
        monkeypatch.setattr(studio_command, "load_lens", lambda *args: load_model(str(tiny_folder), device="cpu"))
        monkeypatch.setattr(Dash, "run", lambda self, **options: served.append(self))
        done = cli("studio", "--run", moved / "run", "--data", tmp_path / "elsewhere", "--model", tiny_folder)
        assert done.exit_code == 0, done.output
        assert f"data: {(tmp_path / 'elsewhere').resolve()}" in str(served[0].layout)
    finally:
        shutil.move(str(tmp_path / "elsewhere"), str(place / "lamp4"))


def test_a_demo_run_finds_the_demo_set_without_a_note():
    """The bundled tiny demo run (every stage's fingerprint records the data's content hash)."""
    source = RunFolder(Path(__file__).parent / "fixtures" / "demo-run-tiny").task_source()
    assert source.data is None and source.task == "LaMP-4"
    assert not [note for note in source.notes if "data" in note]


def test_show_prints_the_prompt_the_decoder_gets(own_run, tiny_folder, tmp_path, monkeypatch):
    place, ids = own_run
    data = place / "lamp4"
    example = load_examples(data, "LaMP-4", "train")[1]
    options = ("--data", data, "--task", "LaMP-4", "--split", "train", "--model", tiny_folder, "--profile-k", 2)
    shown = cli("show", "--example", example.example_id, *options)
    assert shown.exit_code == 0, shown.output
    header, rest = shown.output.split("\n", 1)
    prompt = rest.split("--- the prompt as the model sees it (special tokens shown) ---\n", 1)[1].split("\n--- reference ---\n")[
        0
    ]
    # structure: the user's two profile items as past shots, then the article, ending at the output label
    for item in example.profile:
        assert f"Article: {item['text']}\nHeadline: {item['title']}" in prompt
    article = example.input.split("article: ", 1)[1]
    assert article == "The harbour reopened on train day 1."
    assert prompt.index("news by writer-b") < prompt.index(f"Article: {article}\nHeadline:")
    assert prompt.endswith("Headline:") and example.output in rest

    import workbench.experiments.evaluation as evaluation

    received = []
    real = evaluation.generate

    def spy(model, prompts, **options):
        received.extend(prompts)
        return real(model, prompts, **options)

    monkeypatch.setattr(evaluation, "generate", spy)
    evaluated = cli("evaluate", "--out", tmp_path / "eval", *options, "--limit", 2, "--max-new-tokens", 2)
    assert evaluated.exit_code == 0, evaluated.output
    decoder_input = received[1]
    assert f"· {len(decoder_input)} prompt tokens (" in header
    # what the decoder got, decoded independently of `show`
    from workbench.engine.models import load_model

    assert load_model(str(tiny_folder), device="cpu").decode(decoder_input, skip_special_tokens=False) == prompt

    listed = cli("show", "--list", *options)
    assert listed.exit_code == 0, listed.output
    rows = [line.split("\t") for line in listed.output.strip().splitlines()[1:]]
    assert [row[0] for row in rows] == ids["train"]
    assert rows[1] == [example.example_id, f"user {example.user_id}", f"{len(decoder_input)} tokens"]
    missing = cli("show", "--example", "nope", *options)
    assert missing.exit_code == 2 and "no example 'nope'" in missing.output and "--list" in missing.output


def test_studio_generations_stop_where_evaluate_stops(lens):
    """A typed plain prompt in the studio (plain is the default now): the greedy continuation ends
    before the first line break of the unstopped one."""
    session = StudioSession(lens, RunFolder(None))
    for prompt in ("Hello", "HHH", "LLL", "MMM", "NNN"):  # a random model: one of these breaks the line (found by trying)
        example = session.typed_example(prompt, "x")
        ids = list(example.prompt_ids(ProfileState("own")))
        assert ids == lens.encode(prompt, add_bos=lens.plain_text_bos)  # as plain prompts are encoded: no chat template
        unstopped = generate(lens, [ids], Greedy(), max_new_tokens=40)[0].text
        if "\n" in unstopped.strip("\n"):
            break
    else:
        pytest.fail("no prompt tried gives a line break in 40 tokens")
    stopped = session.generate(example, ProfileState("own"), Greedy(), max_new_tokens=40)
    assert stopped.stop_reason == "stop_string" and stopped.text == unstopped.split("\n", 1)[0]


def test_the_page_lists_the_datas_users(own_run, lens, browser):
    place, ids = own_run
    session = StudioSession(lens, RunFolder(place / "run"))
    url, server = serve(session)
    try:
        page = open_page(browser, url)
        assert f"data: {(place / 'lamp4').resolve()}" in page.inner_text("#run-info")
        page.wait_for_selector("#example-details >> text=writer-a")
        shot(page, "20-own-data")
        page.locator("#example").click()
        options = page.locator(".dash-dropdown-option")  # the open list (drawn outside the dropdown's own element)
        options.first.wait_for()
        labels = options.all_inner_texts()
        shot(page, "21-own-data-examples")
        assert [label.split(" · ")[0] for label in labels] == ids["train"]
        assert all(label.split(" · ")[1].removeprefix("user ") in USERS for label in labels)
        page.close()
    finally:
        server.shutdown()


# --- the default model, end to end ------------------------------------------------------------


@pytest.mark.slow
def test_default_model_end_to_end(default_lens, browser, tmp_path):
    run = write_run(default_lens, tmp_path / "run", task="LaMP-4", n_examples=1, variants=("standard",))
    session = StudioSession(default_lens, RunFolder(run))
    url, server = serve(session)
    try:
        page = open_page(browser, url)
        click_head(page, 12, 3)
        wait_for_heads(page, "L12H3")
        click_head(page, 20, 5)
        wait_for_heads(page, "L12H3 L20H5")
        shot(page, "11-default-model")
        example = tokenized_examples(default_lens, load_examples(None, "LaMP-4", "train"), PromptConfig())[0]
        clean, ablated = study_of(default_lens, example.prompt_ids, example.target_ids, [(12, 3), (20, 5)])
        assert shown(page, 0, "clean") == pytest.approx(clean, abs=1e-4)
        assert shown(page, 0, "ablated") == pytest.approx(ablated, abs=1e-4)
        page.close()
    finally:
        server.shutdown()
