"""Stages with fingerprints: a finished stage is reused only under the same fingerprint; another
option, model weights, data or input stage is refused in one line; an unfinished stage resumes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench.data.sources import load_examples
from workbench.errors import InputError
from workbench.pipeline.stage import FINGERPRINT, Stage, data_digest, weights_digest


def counting_stage(folder, calls, **options):
    stage = Stage("count", folder, options.pop("options", {"top_k": 2}), outputs=("result.txt",), **options)

    def compute():
        calls.append(stage.options)
        (folder / "result.txt").write_text(str(dict(stage.options)))
        return "computed"

    return stage, compute, lambda: "loaded"


def test_a_finished_stage_is_reused_and_another_option_refused(tmp_path):
    calls = []
    stage, compute, load = counting_stage(tmp_path, calls)
    assert stage.run(compute, load) == "computed" and stage.run(compute, load) == "loaded" and len(calls) == 1
    other, compute, load = counting_stage(tmp_path, calls, options={"top_k": 4})
    with pytest.raises(InputError, match=r"was made with other arguments \(top_k 2 -> 4\); use another --out, or delete"):
        other.run(compute, load)
    assert len(calls) == 1 and (tmp_path / "result.txt").read_text() == "{'top_k': 2}"


def test_an_interrupted_stage_is_computed_again(tmp_path):
    stage = Stage("s", tmp_path, {"a": 1}, outputs=("x",))

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stage.run(interrupted, lambda: "loaded")
    assert not stage.check()  # unfinished: computed again, not reused
    assert stage.run(lambda: (tmp_path / "x").write_text("done") and "computed", lambda: "loaded") == "computed"
    assert stage.check()


def test_resumable_options_recompute_instead_of_refusing(tmp_path):
    calls = []
    stage, compute, load = counting_stage(tmp_path, calls, options={"top_k": 2, "limit": 1}, resumable=("limit",))
    stage.run(compute, load)
    more, compute, load = counting_stage(tmp_path, calls, options={"top_k": 2, "limit": 2}, resumable=("limit",))
    assert more.run(compute, load) == "computed" and len(calls) == 2
    strict, compute, load = counting_stage(tmp_path, calls, options={"top_k": 2, "limit": 3})
    with pytest.raises(InputError, match=r"limit 2 -> 3"):
        strict.run(compute, load)


def test_outputs_without_a_fingerprint_are_refused(tmp_path):
    (tmp_path / "result.txt").write_text("an older run")
    stage, compute, load = counting_stage(tmp_path, [])
    with pytest.raises(InputError, match=r"holds result.txt without a fingerprint"):
        stage.run(compute, load)


def test_a_changed_input_stage_model_or_data_is_named(tmp_path):
    upstream = Stage("discover", tmp_path / "a", {"top_k": 2}, outputs=())
    calls = []
    stage, compute, load = counting_stage(tmp_path / "b", calls, inputs={"heads": upstream}, model={"name": "m", "weights": "1"},
                                          data="d1")  # fmt: skip
    (tmp_path / "b").mkdir()
    stage.run(compute, load)
    for change, message in (
        ({"inputs": {"heads": dataclasses.replace(upstream, options={"top_k": 3})}}, "input stage heads changed"),
        ({"model": {"name": "m", "weights": "2"}}, "other model weights"),
        ({"data": "d2"}, "other data"),
    ):
        with pytest.raises(InputError, match=message):
            dataclasses.replace(stage, **change).check()
    assert (tmp_path / "b" / FINGERPRINT).is_file()


def test_weights_digest_sees_a_single_changed_weight(tiny):
    before = weights_digest(tiny)
    parameter = next(tiny.bridge.parameters())
    original = parameter.view(-1)[0].clone()
    with torch.no_grad():
        parameter.view(-1)[0] += 1e-3
        try:
            assert weights_digest(tiny) != before
        finally:
            parameter.view(-1)[0] = original  # the shared tiny model is restored exactly
    assert weights_digest(tiny) == before


def test_data_digest_sees_one_changed_output():
    examples = load_examples(None, "LaMP-7", "dev")[:3]
    changed = [*examples[:2], dataclasses.replace(examples[2], output=examples[2].output + ".")]
    assert data_digest(examples) == data_digest(list(examples)) != data_digest(changed)


def test_bad_input_found_by_the_stage_leaves_no_folder(tmp_path):
    stage = Stage("s", tmp_path / "new", {"a": 1}, outputs=("x",))

    def refuses():
        raise InputError("prompt too long")

    with pytest.raises(InputError, match="prompt too long"):
        stage.run(refuses, lambda: None)
    assert not (tmp_path / "new").exists()
