from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from reference_twin import ablated, tiny_twin, twin_token_nll

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.errors import InputError
from workbench.experiments.validation import head_sets, summarize_validation, validate_heads, validation_deltas
from workbench.heads import HeadWeights


@pytest.fixture(scope="module")
def examples(tiny):
    return [
        tokenize_pair(tiny, f"e{i}", "u", f"Profile: {p}. Write.", f"{p}!", prompt_no_profile="Write.")
        for i, p in enumerate(["cats", "rain"])
    ]


@pytest.fixture(scope="module")
def weights(tiny):
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[1, 2], grid[2, 0], grid[2, 3] = 1.0, 0.5, 0.25
    return HeadWeights(grid)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_deltas_equal_twin_forwards_with_each_set_ablated_together(tiny, examples, weights, ablation):
    sets = head_sets(
        tiny, weights, n_random=3, induction=torch.rand(tiny.n_layers, tiny.n_heads, generator=torch.Generator().manual_seed(0))
    )
    assert {layer for _, _, heads in sets for layer, _ in heads} >= {0, 1, 2}  # sets start at different layers
    deltas = validation_deltas(tiny, examples, sets, ablation=ablation, max_rows=2, progress=False)
    assert len(deltas) == len(examples) * 2 * len(sets)
    z_ref = tiny.mean_head_outputs([e.prompt_ids + e.target_ids for e in examples]) if ablation == "mean" else None
    twin = tiny_twin()
    for example, (condition, field) in itertools.product(
        examples, [("profile", "prompt_ids"), ("no-profile", "no_profile_prompt_ids")]
    ):
        clean = twin_token_nll(twin, getattr(example, field), example.target_ids).mean()
        for name, draw, heads in sets:
            masked = twin_token_nll(twin, getattr(example, field), example.target_ids, ablated(heads), z_ref=z_ref).mean()
            row = deltas[
                (deltas["example_id"] == example.example_id)
                & (deltas["condition"] == condition)
                & (deltas["head_set"] == name)
                & (deltas["draw"] == draw)
            ]
            assert row["nll_clean"].item() == pytest.approx(float(clean), abs=1e-5)
            assert row["delta_nll"].item() == pytest.approx(float(masked - clean), abs=1e-5)
            assert row["n_heads"].item() == len(heads)
    assert deltas["delta_nll"].abs().min() > 1e-4
    assert set(summarize_validation(deltas, n_resamples=50)["n_heads"]) == {3}  # K: the 3 heads with a non-zero weight


def test_head_sets(tiny, weights):
    sets = head_sets(tiny, weights, k=2, n_random=4, match_layers=True, retrieval=torch.arange(12.0).view(3, 4), seed=5)
    assert sets[0] == ("preference", 0, [(1, 2), (2, 0)])
    for name, _draw, heads in sets[1:5]:
        assert name == "random" and sorted(layer for layer, _ in heads) == [1, 2] and len(set(heads)) == 2
    assert sets[-1] == ("retrieval", 0, [(2, 3), (2, 2)])
    unmatched = head_sets(tiny, weights, n_random=2, seed=5)
    assert unmatched[1][2] == HeadWeights.random_heads(tiny.geometry, 3, seed=5).heads()
    with pytest.raises(InputError, match="k must lie in 1..3"):
        head_sets(tiny, weights, k=4)
    with pytest.raises(InputError, match="n_random"):
        head_sets(tiny, weights, n_random=0)


def test_summary_means_intervals_and_permutation_p_values():
    rng = np.random.default_rng(0)
    rows = []
    effects = {("preference", 0): 2.0, **{("random", d): 0.1 * d for d in range(4)}, ("induction", 0): 0.25}
    for example in range(6):
        for (name, draw), effect in effects.items():
            for condition, shift in (("profile", 1.0), ("no-profile", 0.0)):
                value = effect * (1 + shift) + rng.normal(scale=0.01)
                rows.append((f"e{example}", "u", name, draw, condition, 1.0, 1.0 + value, value))
    deltas = pd.DataFrame(
        rows, columns=["example_id", "user_id", "head_set", "draw", "condition", "nll_clean", "nll_masked", "delta_nll"]
    )
    summary = summarize_validation(deltas, n_resamples=200).set_index(["head_set", "condition"])
    pick = lambda name, condition: deltas[(deltas.head_set == name) & (deltas.condition == condition)]
    assert summary.loc[("preference", "profile"), "mean_delta_nll"] == pytest.approx(
        pick("preference", "profile")["delta_nll"].mean()
    )
    specific = pick("preference", "profile")["delta_nll"].to_numpy() - pick("preference", "no-profile")["delta_nll"].to_numpy()
    assert summary.loc[("preference", "profile-specific"), "mean_delta_nll"] == pytest.approx(specific.mean())
    assert summary.loc[("random", "profile"), "mean_delta_nll"] == pytest.approx(pick("random", "profile")["delta_nll"].mean())
    assert summary.loc[("preference", "profile"), "p_value_vs_random"] == pytest.approx(1 / 5)  # beats all 4 draws
    assert summary.loc[("induction", "profile"), "p_value_vs_random"] == pytest.approx(2 / 5)  # only the draw at 0.6 reaches 0.5
    assert np.isnan(summary.loc[("random", "profile"), "p_value_vs_random"])
    row = summary.loc[("preference", "profile")]
    assert row.ci_low <= row.mean_delta_nll <= row.ci_high


def test_validation_needs_no_profile_prompts(tiny, weights):
    bare = tokenize_pair(tiny, "bare", "u", "Write.", "Text")
    with pytest.raises(InputError, match="example 'bare'.*prompt_no_profile"):
        validate_heads(tiny, [bare], weights, n_random=1, progress=False)


def test_an_interrupted_study_resumes_from_its_checkpoint(tiny, examples, weights, tmp_path, monkeypatch):
    import workbench.experiments.validation as validation

    sets = head_sets(tiny, weights, n_random=2)
    fresh = validation_deltas(tiny, examples, sets, progress=False)
    real, calls = validation.sequence_nll, []

    def counted(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:  # the second example's first condition: the first example is stored
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(validation, "sequence_nll", counted)
    with pytest.raises(KeyboardInterrupt):
        validation_deltas(tiny, examples, sets, checkpoint=tmp_path / "checkpoint", progress=False)
    calls.clear()
    resumed = validation_deltas(tiny, examples, sets, checkpoint=tmp_path / "checkpoint", progress=False)
    assert len(calls) == 2  # only the second example's two conditions were computed again
    pd.testing.assert_frame_equal(resumed, fresh)
    with pytest.raises(InputError, match="other arguments"):  # another ablation never reads these entries
        validation_deltas(tiny, examples, sets, ablation="mean", checkpoint=tmp_path / "checkpoint", progress=False)


def test_studies_share_the_forwards_of_a_common_set(tiny, examples, weights):
    """Two studies (two head files) in one table: each equals its own study run alone."""
    other = HeadWeights.random_heads(tiny.geometry, 3, seed=9)
    studies = {"a": head_sets(tiny, weights, n_random=2), "b": head_sets(tiny, other, n_random=2)}
    both = validation_deltas(tiny, examples, studies, progress=False)
    for name, sets in studies.items():
        alone = validation_deltas(tiny, examples, sets, progress=False)
        part = both[both["heads"] == name].drop(columns="heads").reset_index(drop=True)
        pd.testing.assert_frame_equal(part, alone)
    summary = summarize_validation(both, n_resamples=50)
    assert set(summary["heads"]) == {"a", "b"}
    assert summary.groupby("heads").size().tolist() == [len(summarize_validation(both[both.heads == "a"].drop(columns="heads"),
                                                                                 n_resamples=50))] * 2  # fmt: skip
