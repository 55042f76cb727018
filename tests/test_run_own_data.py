"""`workbench run` on a researcher's own data: a LaMP-4 folder with a single split (cut by user,
seeded, recorded in the report), the users' area habit scored by hand, the swapped-profile control
decoded with another user's profile; and a classification task, scored by its own metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workbench.data.prompts import PromptConfig, build_prompt, decoding_prompt, swap_partner
from workbench.data.sources import load_examples
from workbench.engine.models import tiny_model
from workbench.errors import InputError
from workbench.pipeline import plan
from workbench.pipeline.plan import run_config
from workbench.pipeline.run import run_pipeline

pytestmark = pytest.mark.integration

AREAS = ("gopls", "internal/lsp", "go/types", "cmd/vet", "refactor", "present", "godoc", "stringer")
SMALL = {"n_train": 3, "n_dev": 3, "top_k": 2, "n_random": 2, "sweep_k": (1,), "profile_k": 1, "max_new_tokens": 3,
         "method": "attribution", "n_clusters": 1, "figures_png": False}  # fmt: skip


def write_lamp(folder: Path, task: str, split: str, questions: list[dict], golds: list[dict]) -> Path:
    """A LaMP folder in the official schema, flat layout, one split."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_questions.json").write_text(json.dumps(questions))
    (folder / f"{split}_outputs.json").write_text(json.dumps({"task": task.replace("-", "_"), "golds": golds}))
    return folder


def commit_folder(root: Path) -> Path:
    """Eight authors, each writing subjects `area: summary` about their own area: one question each."""
    questions, golds = [], []
    for user, area in enumerate(AREAS):
        profile = [{"id": f"{user}{i}", "title": f"{area}: fix case {i} of the walker",
                    "text": f"The walker of {area} missed case {i}; handle it and add a test."} for i in range(3)]  # fmt: skip
        questions.append({"id": str(100 + user), "profile": profile,
                          "input": f"Generate a headline for the following article: {area} crashed on empty input; guard it."})  # fmt: skip
        golds.append({"id": str(100 + user), "output": f"{area}: guard against empty input"})
    return write_lamp(root / "commits", "LaMP-4", "train", questions, golds)


@pytest.fixture(scope="module")
def lens():
    return tiny_model(n_ctx=2048)


@pytest.fixture(scope="module")
def own_run(lens, tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    config = run_config("default", data=str(commit_folder(root)), **SMALL)
    out = root / "run"
    run_pipeline(lens, config, out, progress=False, say=lambda _: None)
    return config, out


def area_by_hand(text: str) -> set[str] | None:
    head, colon, _ = text.strip().partition(": ")
    return set(head.split(", ")) if colon and " " not in head else None


def test_a_single_split_is_cut_by_user_and_the_report_says_how(own_run):
    config, out = own_run
    data = plan.RunData.load(config)
    train_users, dev_users = {e.user_id for e in data.train}, {e.user_id for e in data.dev}
    assert train_users and dev_users and not train_users & dev_users
    assert len(data.dev_split) == round(config.dev_share * len(AREAS))  # one question per user
    report = (out / "report.md").read_text()
    assert config.data in report
    assert (
        f"cut at random (seed {config.seed}) into {len(AREAS) - len(data.dev_split)} train and {len(data.dev_split)} dev users"
        in report
    )
    recorded = json.loads((out / "run-config.json").read_text())
    assert recorded["data"] == config.data and recorded["train_split"] == "train"
    predicted = {json.loads(line)["id"] for line in (out / "eval" / "greedy" / "predictions.jsonl").read_text().splitlines()}
    assert predicted == {e.example_id for e in data.dev}


def test_another_seed_cuts_other_users(own_run):
    config, _ = own_run
    cuts = {frozenset(e.user_id for e in plan.RunData.load(run_config("default", data=config.data, **{**SMALL, "seed": seed})).dev)
            for seed in range(6)}  # fmt: skip
    assert len(cuts) > 1


def test_the_area_habit_is_detected_and_scored_by_hand(own_run):
    _, out = own_run
    assert "area" in (out / "report.md").read_text()
    for run in ("greedy", "greedy-swapped-profile", "dps-standard"):
        rows = [json.loads(line) for line in (out / "eval" / run / "predictions.jsonl").read_text().splitlines()]
        matches = [float(area_by_hand(r["prediction"]) == area_by_hand(r["gold"])) for r in rows]
        metrics = json.loads((out / "eval" / run / "metrics.json").read_text())["metrics"]
        assert metrics["area_match"]["value"] == pytest.approx(sum(matches) / len(matches))


def test_the_swapped_run_shows_another_users_profile(lens, own_run):
    """The swapped control's prompt holds a partner's profile items and none of the user's own;
    the partner is another user; the same seed draws the same partner."""
    config, _ = own_run
    data = plan.RunData.load(config)
    swapped = PromptConfig(profile_k=1, profile="swapped", seed=config.seed)
    for example in data.dev:
        partner = swap_partner(example, data.dev_split, config.seed)
        assert partner is not None and partner.user_id != example.user_id
        text = lens.tokenizer.decode(decoding_prompt(lens, example, swapped, data.dev_split))
        own_area = example.profile[0]["title"].split(":")[0]
        assert partner.profile[0]["title"].split(":")[0] in text and f"{own_area}: fix" not in text
        assert decoding_prompt(lens, example, swapped, data.dev_split) == build_prompt(
            lens, example, PromptConfig(profile_k=1, seed=config.seed), profile=partner.profile
        )
    with pytest.raises(InputError, match="a swapped profile needs another user"):
        decoding_prompt(lens, data.dev[0], swapped, [data.dev[0]])


def test_a_classification_task_is_scored_by_its_own_metrics(lens, tmp_path):
    """LaMP-2 with its own train and dev splits: accuracy and F1 in every decoding run, no ROUGE,
    and the report names the data's own splits (no cut)."""
    tags = ("comedy", "romance", "sci-fi", "classic", "fantasy", "action")
    folder = tmp_path / "LaMP-2"
    for split, offset in (("train", 0), ("dev", 50)):
        questions, golds = [], []
        for user, tag in enumerate(tags):
            profile = [{"id": f"{offset + user}{i}", "description": f"A {tag} story number {i}.", "tag": tag} for i in range(2)]
            questions.append({"id": str(offset + user), "profile": profile,
                              "input": f"Which tag does this movie relate to among the following tags? tags: [{', '.join(tags)}] "
                                       f"description: Another {tag} story."})  # fmt: skip
            golds.append({"id": str(offset + user), "output": tag})
        write_lamp(folder / split, "LaMP-2", split, questions, golds)
    # the dev split's users are other people (the loader names users by example id)
    assert not {e.user_id for e in load_examples(folder, "LaMP-2", "train")} & {
        e.user_id for e in load_examples(folder, "LaMP-2", "dev")
    }
    config = run_config("default", data=str(folder), task="LaMP-2", **{**SMALL, "n_dev": 2})
    out = tmp_path / "run"
    run_pipeline(lens, config, out, progress=False, say=lambda _: None)
    for metrics_file in (out / "eval").glob("*/metrics.json"):
        assert set(json.loads(metrics_file.read_text())["metrics"]) == {"accuracy", "f1", "exact_accuracy"}, metrics_file
    report = (out / "report.md").read_text()
    assert "rouge" not in report.lower() and "cut at random" not in report
    assert re.search(r"accuracy", report)
