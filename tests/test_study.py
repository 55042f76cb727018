"""Interactive ablation studies against direct lens computations."""

from __future__ import annotations

import pytest

from workbench.masks import HeadMask
from workbench.scores.nll import mean_nll
from workbench.study import AblationStudy


@pytest.fixture(scope="module")
def study(tiny) -> AblationStudy:
    return AblationStudy.from_text(tiny, "Write a title.", "my own title")


def reference_nll(lens, study: AblationStudy, heads) -> float:
    """The mean reference NLL from one batch-1 forward with the heads ablated."""
    mask = HeadMask.ablate(lens.geometry, heads) if heads else None
    logits = lens.forward(list(study.sequence.ids), mask=mask)[:, study.sequence.positions]
    return float(mean_nll(logits, study.sequence.targets)[0])


def test_compare_equals_one_forward_per_set(tiny, study):
    sets = {"a": [(0, 1), (1, 0)], "b": [(0, 0), (0, 2), (1, 3)]}
    table = study.compare(sets)
    assert list(table["set"]) == ["clean", "a", "b"] and list(table["n_heads"]) == [0, 2, 3]
    clean = reference_nll(tiny, study, [])
    for name, heads in sets.items():
        row = table[table["set"] == name].iloc[0]
        assert row["nll"] == pytest.approx(reference_nll(tiny, study, heads), abs=1e-5)
        assert row["delta_nll"] == pytest.approx(row["nll"] - clean, abs=1e-5)
        assert abs(row["delta_nll"]) > 1e-4


def test_per_token_rows_average_to_the_compared_mean(study):
    sets = {"a": [(0, 1), (2, 3)]}
    per_token = study.per_token(sets)
    assert len(per_token) == len(study.example.target_ids)
    assert "".join(per_token["token"]) == "my own title"
    mean_delta = study.compare(sets)["delta_nll"].iloc[1]
    assert per_token["delta_a"].mean() == pytest.approx(mean_delta, abs=1e-6)


def test_mean_ablation_uses_the_reference_activation(tiny):
    z_ref = tiny.mean_head_outputs([tiny.encode("reference text for the means")])
    study = AblationStudy.from_text(tiny, "Write a title.", "my own title", z_ref=z_ref)
    logits = tiny.forward(list(study.sequence.ids), mask=HeadMask.ablate(tiny.geometry, [(1, 1)], z_ref=z_ref))
    expected = float(mean_nll(logits[:, study.sequence.positions], study.sequence.targets)[0])
    assert study.compare({"x": [(1, 1)]})["nll"].iloc[1] == pytest.approx(expected, abs=1e-5)
    assert study.compare({})["nll"].iloc[0] == pytest.approx(reference_nll(tiny, study, []), abs=1e-5)


def test_continuations_with_no_effective_heads_equal_clean(tiny, study):
    table = study.continuations({"x": [(2, 0)]}, max_new_tokens=6)
    assert list(table["set"]) == ["clean", "x"]
    assert all(isinstance(text, str) for text in table["continuation"])
    with pytest.raises(ValueError, match="out of range"):
        study.compare({"bad": [(9, 0)]})
