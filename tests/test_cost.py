"""The plan printed before long jobs (issue 22.1): each stage's model passes against counts made by
hand from what the stage runs, and finished stages counting nothing. The times are a calibration
on the machine; only the counts are checked here."""

from __future__ import annotations

import pytest

from workbench.engine.models import tiny_model
from workbench.experiments.cost import (
    Calibration,
    Passes,
    StagePlan,
    audit_passes,
    cluster_discovery_passes,
    decoding_passes,
    discovery_passes,
    pcs_passes,
    plan_lines,
    validation_passes,
)
from workbench.experiments.discovery import DiscoverSettings
from workbench.pipeline.plan import RunData, run_config
from workbench.pipeline.run import plan_run, stage_plans

pytestmark = pytest.mark.unit


def test_pcs_passes_by_hand() -> None:
    # 2 layers of 3 heads: a layer-0 head reruns both layers (1 forward), a layer-1 head the upper half
    assert pcs_passes("exact", 2, 3).forwards == 1 + 3 * 1 + 3 * 0.5
    assert pcs_passes("exact", 2, 3, variant="profile-contrast").forwards == 2 * (1 + 3 + 1.5)
    assert pcs_passes("attribution", 2, 3).forwards == 1 + 2  # forward, backward as two forwards
    # hybrid, 2 exact candidates at the mean head's share (4.5 forwards / 6 heads), plus its clean forward
    assert pcs_passes("hybrid", 2, 3, top_m=2).forwards == 3 + 1 + 2 * 4.5 / 6
    # 30 layers of 9 heads (the default model): 9 * (30 + 1) / 2 forwards for the heads
    assert pcs_passes("exact", 30, 9).forwards == pytest.approx(1 + 139.5)


def test_discovery_passes_take_the_scans_default_candidates() -> None:
    settings = DiscoverSettings(method="hybrid", top_k=2)  # top_m = 3 x 2, at most the 6 heads
    assert discovery_passes(settings, 2, 3).forwards == 3 + 1 + 6 * 4.5 / 6
    assert cluster_discovery_passes(settings, 2, 3).forwards == 6 * 4.5 / 6
    assert cluster_discovery_passes(DiscoverSettings(method="exact", top_k=2), 2, 3) == Passes()


def test_validation_and_decoding_passes_by_hand() -> None:
    assert validation_passes(23).forwards == 2 * 24  # clean + 23 sets, with and without the profile
    assert decoding_passes("greedy", 10) == Passes(forwards=1, steps=10)
    assert decoding_passes("dps", 10) == Passes(forwards=2, steps=20)


def test_audit_passes_by_hand() -> None:
    # 2 layers of 3 heads, 3 kinds: each kind's exact scan (clean + 3 + 1.5), the cross-ablation
    # (2 conditions x 3 ablated-as kinds x (clean + 3 selected-by sets)), one forward for direct effects
    assert audit_passes(3, 2, 3).forwards == 3 * 5.5 + 2 * 3 * 4 + 1
    assert audit_passes(1, 2, 3, self_repair=False).forwards == 5.5 + 2 * 1 * 2


def test_plan_lines_add_the_stages_and_skip_finished_ones() -> None:
    calibration = Calibration(tokens=100, forward=2.0, step=0.5)
    stages = [StagePlan("a", 3, Passes(forwards=10)), StagePlan("b", 2, Passes(forwards=1, steps=4)),
              StagePlan("c", 5, Passes(forwards=100), done=True)]  # fmt: skip
    lines = plan_lines(stages, calibration, hint="--limit N")
    assert lines[1] == "  a: 3 examples x 10 forwards each: about 60 s"
    assert lines[2] == "  b: 2 examples x 1 forwards + 4 steps each: about 8 s"  # 2 x (2 + 4 x 0.5)
    assert lines[3] == "  c: 5 examples x 100 forwards each: done, reused"
    assert lines[4] == "  estimated total: about 68 s; cheaper: --limit N"


def test_the_run_plan_counts_each_stage_by_hand_and_finished_ones_as_nothing(tmp_path) -> None:
    lens = tiny_model(n_ctx=2048)  # 3 layers of 4 heads
    config = run_config("default", n_train=3, n_dev=2, top_k=2, n_random=2, sweep_k=(1, 2), method="exact",
                        max_new_tokens=3, gammas=(3.0,))  # fmt: skip
    data = RunData.load(config)
    plan = plan_run(lens, config, data, tmp_path)
    rows = {row.name.split(" (")[0]: row for row in stage_plans(plan, config, data, lens)}
    exact = 1 + 4 * (3 + 2 + 1) / 3  # clean + each layer's 4 heads from their layer up
    assert rows["profile effect"].passes == Passes(forwards=2 * 3)
    assert rows["discovery, standard"].passes == Passes(forwards=3 * exact)
    assert rows["discovery, profile-contrast"].passes == Passes(forwards=3 * 2 * exact)  # with and without the profile
    assert rows["per-cluster discovery"].passes == Passes()  # exact scores are reused per cluster
    # sets: 2 head sets x (top-2 and the sweep's k=1) + 2 random + retrieval + induction = 8
    assert rows["validation"].passes == Passes(forwards=2 * 2 * (1 + 8))
    # greedy x3 (with, without, swapped profile) one row; cad, dps x2, dps gamma 3, random heads, routed x2: two rows
    rows_per_step = 3 * 1 + 7 * 2
    assert rows["decoding"].passes == Passes(forwards=2 * rows_per_step, steps=2 * rows_per_step * 3)
    # the audit: 2 dev examples, 3 kinds each scanning every head, the 3 x 3 cross-ablation in both conditions, direct effects
    assert rows["ablation audit"].passes == Passes(forwards=2 * (3 * exact + 2 * 3 * 4 + 1))
    assert rows["ablation audit"].examples == 2
    stage = plan.profile_effect
    stage.run(lambda: (stage.folder / "profile_effect.parquet").write_text("done"), lambda: None)
    rows = {row.name.split(" (")[0]: row for row in stage_plans(plan, config, data, lens)}
    assert rows["profile effect"].done and rows["profile effect"].passes == Passes()
