"""Head masks: constructors, validation and the layers they touch."""

from __future__ import annotations

import pytest
import torch

from workbench.engine.masks import HeadGeometry, HeadMask

GEOMETRY = HeadGeometry(n_layers=3, n_heads=4, n_kv_heads=2, d_head=8, d_model=32, n_ctx=64, d_vocab=100)


def test_ablate_zeroes_exactly_the_listed_heads():
    mask = HeadMask.ablate(GEOMETRY, [(0, 1), (2, 3)])
    expected = torch.ones(1, 3, 4)
    expected[0, 0, 1] = expected[0, 2, 3] = 0
    assert torch.equal(mask.scale, expected)
    assert mask.active_layers() == [0, 2]


def test_one_head_per_row_puts_one_zero_in_each_row():
    heads = [(1, 0), (1, 3), (2, 2)]
    mask = HeadMask.one_head_per_row(GEOMETRY, heads)
    assert mask.rows == 3
    for row, (layer, head) in enumerate(heads):
        assert (mask.scale[row] == 0).nonzero().tolist() == [[layer, head]]


def test_weighted_is_one_minus_weight():
    weights = torch.zeros(3, 4)
    weights[1, 2] = 0.25
    assert HeadMask.weighted(weights).scale[0, 1, 2] == pytest.approx(0.75)
    assert HeadMask.identity(GEOMETRY).active_layers() == []


def test_stack_concatenates_rows_and_refuses_mixed_sites():
    stacked = HeadMask.stack([HeadMask.identity(GEOMETRY), HeadMask.ablate(GEOMETRY, [(0, 0)])])
    assert stacked.rows == 2 and stacked.active_layers() == [0]
    with pytest.raises(ValueError, match="same site"):
        HeadMask.stack([HeadMask.identity(GEOMETRY), HeadMask.ablate(GEOMETRY, [(0, 0)], site="query-scale")])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: HeadMask.ablate(GEOMETRY, [(3, 0)]), r"head \(3, 0\) out of range: the model has 3 layers x 4 heads"),
        (lambda: HeadMask.ablate(GEOMETRY, [(0, -1)]), r"head \(0, -1\) out of range"),
        (lambda: HeadMask(torch.ones(3, 4)), r"must be \[rows, layer, head\]"),
        (lambda: HeadMask(torch.full((1, 3, 4), float("nan"))), "NaN"),
        (lambda: HeadMask(-torch.ones(1, 3, 4)), "must be >= 0"),
        (lambda: HeadMask(torch.ones(1, 3, 4), site="values"), "unknown intervention site 'values'"),
        (lambda: HeadMask(torch.ones(1, 3, 4), z_ref=torch.zeros(3, 5, 8)), "z_ref must be"),
        (
            lambda: HeadMask(torch.ones(1, 3, 4), z_ref=torch.zeros(3, 4, 8), site="query-scale"),
            "only applies at the head output",
        ),
        (lambda: HeadMask.weighted(torch.full((3, 4), 2.0)), r"must lie in \[0, 1\]"),
        (lambda: HeadMask.one_head_per_row(GEOMETRY, []), "at least one head"),
    ],
)
def test_bad_masks_are_rejected_with_a_clear_message(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_check_rejects_a_mask_for_another_model():
    with pytest.raises(ValueError, match="3 layers x 4 heads but the model has 2 x 4"):
        HeadMask.identity(GEOMETRY).check(HeadGeometry(2, 4, 2, 8, 32, 64, 100))
