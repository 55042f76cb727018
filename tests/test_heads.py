from __future__ import annotations

import json
import math

import pytest
import torch

from workbench.engine.masks import HeadGeometry
from workbench.errors import InputError
from workbench.heads import HeadWeights, ranked_heads
from workbench.scores import PCSResult

GEOMETRY = HeadGeometry(n_layers=3, n_heads=4, n_kv_heads=2, d_head=8, d_model=32, n_ctx=64, d_vocab=10)
SCORES = torch.tensor([[0.5, -0.2, 0.1, 0.5], [0.0, 0.8, 0.3, -1.0], [0.2, 0.1, 0.05, 0.4]], dtype=torch.float64)


def reference_weights(scores, keep, min_score=0.0, norm="max", power=1.0):
    """The authors' compute_head_weights, re-derived by hand with a fully specified order."""
    flat = sorted(
        ((float(scores[layer, h]), layer, h) for layer in range(scores.shape[0]) for h in range(scores.shape[1])),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    w = torch.zeros(scores.shape, dtype=torch.float64)
    for value, layer, h in flat[:keep]:
        if value >= min_score:
            w[layer, h] = max(value, 0.0)
    denominator = {"max": w.max(), "sum": w.sum(), "none": 1.0}[norm]
    w = w / (denominator if denominator > 0 else 1.0)
    return (w**power).float()


def test_ranking_breaks_ties_by_layer_then_head():
    assert ranked_heads(SCORES)[:3] == [(1, 1), (0, 0), (0, 3)]
    assert ranked_heads(torch.zeros(2, 2)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(InputError, match="NaN"):
        ranked_heads(torch.tensor([[float("nan")]]))


@pytest.mark.parametrize(
    ("options", "keep"),
    [
        (dict(top_k=3), 3),
        (dict(top_k=5, norm="sum"), 5),
        (dict(top_k=12, min_score=0.15, power=2.0), 12),
        (dict(top_percent=0.25), 3),
        (dict(top_percent=0.01), 1),
    ],
)
def test_from_scores_matches_reference_rule(options, keep):
    weights = HeadWeights.from_scores(SCORES, **options, model="m")
    rule = {k: v for k, v in options.items() if k in ("min_score", "norm", "power")}
    torch.testing.assert_close(weights.weights, reference_weights(SCORES, keep, **rule))
    assert weights.extra["top_k"] == keep and weights.model == "m"


def test_from_scores_takes_pcs_result_mean_and_metadata():
    per_example = torch.stack([SCORES, SCORES + 0.1])
    result = PCSResult(
        per_example,
        torch.ones(3, 4, dtype=torch.bool),
        ["a", "b"],
        ["u", "v"],
        {
            "model": "m",
            "task": "LaMP-1",
            "method": "exact",
            "ablation": "zero",
            "n_examples": 2,
            "seed": 3,
            "variant": "standard",
        },
    )
    weights = HeadWeights.from_scores(result, top_k=2, task="override")
    torch.testing.assert_close(weights.weights, reference_weights(SCORES + 0.05, 2))
    assert (weights.model, weights.task, weights.n_examples, weights.seed) == ("m", "override", 2, 3)
    assert weights.extra["variant"] == "standard"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(top_k=13), "top_k must lie in 1..12"),
        (dict(top_k=0), "top_k must lie in 1..12"),
        (dict(top_k=2, top_percent=0.1), "exactly one"),
        (dict(), "exactly one"),
        (dict(top_percent=1.5), "top_percent"),
        (dict(top_k=2, norm="l2"), "unknown normalisation"),
        (dict(top_k=2, power=-1.0), "power"),
        (dict(top_k=2, norm="none"), "weights must lie in"),
    ],
)
def test_bad_selection_options(options, message):
    with pytest.raises(InputError, match=message):
        HeadWeights.from_scores(SCORES * 3, **options)


def test_json_round_trip(tmp_path):
    weights = HeadWeights.from_scores(SCORES, top_k=4, model="m", task="t", method="exact", ablation="zero", n_examples=9, seed=1)
    weights.save(tmp_path / "heads.json")
    loaded = HeadWeights.load(tmp_path / "heads.json")
    assert torch.equal(loaded.weights, weights.weights) and loaded.extra == weights.extra
    assert (loaded.model, loaded.task, loaded.method, loaded.ablation, loaded.n_examples, loaded.seed) == (
        "m",
        "t",
        "exact",
        "zero",
        9,
        1,
    )


def write(tmp_path, name, record):
    path = tmp_path / name
    path.write_text(json.dumps(record))
    return path


def test_reference_head_weights_json(tmp_path):
    grid = [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0], [0.0] * 4]
    path = write(
        tmp_path,
        "head_weights.json",
        {
            "model": "Llama",
            "task": "LaMP_1",
            "cluster_id": 3,
            "num_layers": 3,
            "num_heads": 4,
            "top_percent": 0.04,
            "pcs_norm": "max",
            "pcs_min": 0.0,
            "pcs_power": 1.0,
            "head_weights": grid,
        },
    )
    weights = HeadWeights.from_reference(path, geometry=GEOMETRY)
    assert weights.weights.tolist() == grid and weights.model == "Llama" and weights.extra["cluster_id"] == 3
    with pytest.raises(InputError, match="head_weights is 3 x 4 but the model has 2 layers"):
        HeadWeights.from_reference(path, geometry=HeadGeometry(2, 4, 2, 8, 32, 64, 10))


def test_reference_top_heads_json(tmp_path):
    path = write(
        tmp_path,
        "M_LaMP_1_top_heads.json",
        {"model": "M", "task": "LaMP_1", "top_percent": 0.04, "num_heads_selected": 2, "preference_heads": [[2, 3], [0, 1]]},
    )
    weights = HeadWeights.from_reference(path, geometry=GEOMETRY)
    assert weights.shape == (3, 4) and weights.heads() == [(0, 1), (2, 3)]
    inferred = HeadWeights.from_reference(path)
    assert inferred.shape == (3, 4)
    bad = write(tmp_path, "bad_top_heads.json", {"preference_heads": [[5, 0]]})
    with pytest.raises(InputError, match=r"head \(5, 0\) out of range"):
        HeadWeights.from_reference(bad, geometry=GEOMETRY)


def test_reference_ranked_json(tmp_path):
    ranked = [
        {"layer": layer, "head": h, "avg_pcs": float(SCORES[layer, h]), "rank": r + 1}
        for r, (layer, h) in enumerate(ranked_heads(SCORES))
    ]
    path = write(
        tmp_path, "M_LaMP_1_ranked.json", {"model": "M", "task": "LaMP_1", "num_samples": 50, "ranked_heads": ranked[:-2]}
    )
    weights = HeadWeights.from_reference(path, geometry=GEOMETRY, top_k=4)
    torch.testing.assert_close(weights.weights, reference_weights(SCORES, 4))
    assert weights.n_examples == 50
    default = HeadWeights.from_reference(path, geometry=GEOMETRY)
    assert default.extra["top_k"] == max(1, math.floor(0.04 * 12))
    broken = write(tmp_path, "x_ranked.json", {"ranked_heads": [{"layer": 0, "head": 0, "avg_pcs": "high"}]})
    with pytest.raises(InputError, match="avg_pcs 'high'"):
        HeadWeights.from_reference(broken, geometry=GEOMETRY)


def test_unknown_reference_file(tmp_path):
    with pytest.raises(InputError, match="not a reference head file"):
        HeadWeights.from_reference(write(tmp_path, "x.json", {"foo": 1}))
    (tmp_path / "y.json").write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        HeadWeights.from_reference(tmp_path / "y.json")


def test_load_any_reads_both_formats(tmp_path):
    ours = HeadWeights.from_scores(SCORES, top_k=2)
    ours.save(tmp_path / "heads.json")
    assert torch.equal(HeadWeights.load_any(tmp_path / "heads.json", geometry=GEOMETRY).weights, ours.weights)
    theirs = write(tmp_path, "t_top_heads.json", {"preference_heads": [[1, 1]]})
    assert HeadWeights.load_any(theirs, geometry=GEOMETRY).heads() == [(1, 1)]
    with pytest.raises(InputError, match="this model has 2 x 4"):
        HeadWeights.load_any(tmp_path / "heads.json", geometry=HeadGeometry(2, 4, 2, 8, 32, 64, 10))
