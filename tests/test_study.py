"""Interactive ablation studies against an unwrapped twin of the model: one full forward (or a
hand-written greedy loop) per head set, the ablation written by hand on the output projection."""

from __future__ import annotations

import pytest
import torch
from reference_twin import ablated, tiny_twin, twin_greedy, twin_token_nll

from workbench.errors import InputError
from workbench.experiments.study import AblationStudy

SETS = {"a": [(0, 1), (1, 0)], "b": [(0, 0), (0, 2), (1, 3)], "late": [(2, 3)]}


@pytest.fixture(scope="module")
def twin():
    return tiny_twin()


@pytest.fixture(scope="module")
def study(tiny) -> AblationStudy:
    return AblationStudy.from_text(tiny, "Write a title.", "my own title")


def twin_nll(twin, study, heads=(), z_ref=None):
    example = study.example
    return twin_token_nll(twin, example.prompt_ids, example.target_ids, ablated(heads), z_ref=z_ref)


def test_compare_equals_one_twin_forward_per_set(twin, study):
    table = study.compare(SETS)
    assert list(table["set"]) == ["clean", *SETS] and list(table["n_heads"]) == [0, 2, 3, 1]
    clean = twin_nll(twin, study).mean()
    assert table["nll"].iloc[0] == pytest.approx(float(clean), abs=1e-5)
    for name, heads in SETS.items():
        row = table[table["set"] == name].iloc[0]
        expected = twin_nll(twin, study, heads).mean()
        assert abs(float(expected - clean)) > 1e-3  # the set matters, so the comparison can fail
        assert row["nll"] == pytest.approx(float(expected), abs=1e-5)
        assert row["delta_nll"] == pytest.approx(float(expected - clean), abs=1e-5)


def test_per_token_rows_equal_the_twin_per_token(twin, study):
    per_token = study.per_token(SETS)
    assert "".join(per_token["token"]) == "my own title"
    clean = twin_nll(twin, study)
    torch.testing.assert_close(torch.tensor(per_token["clean_nll"].to_numpy()), clean, atol=1e-5, rtol=0)
    for name, heads in SETS.items():
        expected = twin_nll(twin, study, heads) - clean
        torch.testing.assert_close(torch.tensor(per_token[f"delta_{name}"].to_numpy()), expected, atol=1e-5, rtol=0)


def test_mean_ablation_replaces_the_heads_by_the_reference_activation(tiny, twin):
    z_ref = tiny.mean_head_outputs([tiny.encode("reference text for the means")])
    study = AblationStudy.from_text(tiny, "Write a title.", "my own title", z_ref=z_ref)
    table = study.compare({"x": [(1, 1), (0, 2)]})
    assert table["nll"].iloc[0] == pytest.approx(float(twin_nll(twin, study).mean()), abs=1e-5)
    expected = twin_nll(twin, study, [(1, 1), (0, 2)], z_ref=z_ref).mean()
    assert abs(float(expected) - float(twin_nll(twin, study, [(1, 1), (0, 2)]).mean())) > 1e-3  # mean differs from zero
    assert table["nll"].iloc[1] == pytest.approx(float(expected), abs=1e-5)


def test_continuations_equal_greedy_loops_on_the_twin(tiny, twin, study):
    table = study.continuations({"none": [], **SETS}, max_new_tokens=6)
    assert list(table["set"]) == ["clean", "none", *SETS]
    prompt, stops = study.example.prompt_ids, tiny.stop_token_ids
    texts = dict(zip(table["set"], table["continuation"]))
    clean = tiny.decode(twin_greedy(twin, prompt, stops, 6))
    assert texts["clean"] == texts["none"] == clean
    changed = 0
    for name, heads in SETS.items():
        expected = tiny.decode(twin_greedy(twin, prompt, stops, 6, ablated(heads)))
        assert texts[name] == expected
        changed += expected != clean
    assert changed >= 1  # some set changes what is written, so the comparison can fail


def test_heads_out_of_range_are_refused(study):
    with pytest.raises(InputError, match="out of range"):
        study.compare({"bad": [(9, 0)]})
