"""The ablation audit: every kind against a hand-written intervention on the unwrapped twin, the
direct effect against the final norm and unembedding written out, the statistics against scipy,
constructed cases where kinds must (and must not) agree, and the refusals."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch
from reference_twin import ablated, tiny_twin, twin_token_nll
from scipy.stats import spearmanr
from typer.testing import CliRunner

from workbench.cli import app
from workbench.data.prompt_jsonl import tokenize_pair
from workbench.engine.masks import HeadMask
from workbench.engine.models import tiny_model
from workbench.errors import InputError
from workbench.experiments.audit import (
    AuditResult,
    AuditSettings,
    KindAblations,
    audit_ablations,
    check_audit,
    condition_sequences,
    donors,
    shared_top_k,
    spearman,
    top_heads,
)
from workbench.figures.audit import agreement_figure, kind_maps
from workbench.figures.style import static_version
from workbench.scores.direct import direct_effects
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence

TEXTS = ["cats", "rain on the hills", "a long walk home"]
HEADS = [(0, 1), (1, 2), (2, 3)]  # one head per layer: restarts from every layer


def pairs(lens):
    return [tokenize_pair(lens, f"e{i}", f"u{i}", f"Profile: {t}. Write.", f"{t}!", prompt_no_profile="Write.")
            for i, t in enumerate(TEXTS)]  # fmt: skip


@pytest.fixture(scope="module")
def examples(tiny):
    return pairs(tiny)


@pytest.fixture(scope="module")
def twin():
    return tiny_twin()


def o_proj_inputs(twin, ids):
    """Every layer's output-projection input (the heads' z side by side) in a clean twin run: [layer, pos, n_heads * d]."""
    store = {}
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a, i=i: store.__setitem__(i, a[0][0].clone()))
             for i, layer in enumerate(twin.model.layers)]  # fmt: skip
    with torch.no_grad():
        twin(torch.tensor([list(ids)]))
    for hook in hooks:
        hook.remove()
    return torch.stack([store[i] for i in range(len(store))])


@contextmanager
def head_replaced(twin, layer, head, replace):
    """Head `head`'s slice of layer `layer`'s output-projection input set to `replace(slice, v)`,
    where `v` is the layer's value projection output of the same forward."""
    d = twin.config.head_dim
    attention = twin.model.layers[layer].self_attn
    values = {}
    v_hook = attention.v_proj.register_forward_hook(lambda m, a, out: values.__setitem__("v", out))

    def edit(module, args):
        features = args[0].clone()
        features[..., head * d : (head + 1) * d] = replace(features[..., head * d : (head + 1) * d], values["v"])
        return (features, *args[1:])

    o_hook = attention.o_proj.register_forward_pre_hook(edit)
    try:
        yield
    finally:
        v_hook.remove()
        o_hook.remove()


def twin_delta(twin, sequence, context):
    prompt, target = sequence.ids[: sequence.prompt_len], sequence.ids[sequence.prompt_len :]
    clean = twin_token_nll(twin, prompt, target).mean()
    with context:
        masked = twin_token_nll(twin, prompt, target).mean()
    return float(masked - clean)


def reference_delta(kind, twin, sequences, index, donor, head, alpha):
    """The Δ NLL of ablating `head` of sequence `index` as `kind`, written by hand on the twin."""
    layer, h = head
    sequence, d = sequences[index], twin.config.head_dim
    prompt, target = sequence.ids[: sequence.prompt_len], sequence.ids[sequence.prompt_len :]
    clean = twin_token_nll(twin, prompt, target).mean()
    if kind in ("zero", "scaled", "resid-slice"):
        scale = ablated([head]) if kind != "scaled" else {head: 1 - alpha}
        site = "resid-slice" if kind == "resid-slice" else "head-output"
        return float(twin_token_nll(twin, prompt, target, scale, site=site).mean() - clean)
    if kind == "mean":
        pooled = torch.cat([o_proj_inputs(twin, s.ids)[layer] for s in sequences])  # every position of every sequence
        z_ref = torch.zeros(twin.config.num_hidden_layers, twin.config.num_attention_heads, d)
        z_ref[layer, h] = pooled[:, h * d : (h + 1) * d].double().mean(dim=0).float()
        return float(twin_token_nll(twin, prompt, target, ablated([head]), z_ref=z_ref).mean() - clean)
    if kind == "resample":
        given = o_proj_inputs(twin, sequences[donor].ids)[layer][:, h * d : (h + 1) * d]
        length = len(sequence.ids)
        rows = [given[p] if p < len(given) else given.mean(dim=0) for p in range(length)]
        substitute = torch.stack(rows)
        return twin_delta(twin, sequence, head_replaced(twin, layer, h, lambda part, v: substitute[None].to(part)))
    if kind == "query-zero":  # uniform causal attention: the running mean of the head's value vectors
        group = h // (twin.config.num_attention_heads // twin.config.num_key_value_heads)

        def running_mean(part, v):
            own = v[..., group * d : (group + 1) * d]
            return own.cumsum(dim=1) / torch.arange(1, own.shape[1] + 1, dtype=own.dtype)[None, :, None]

        return twin_delta(twin, sequence, head_replaced(twin, layer, h, running_mean))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["zero", "mean", "resample", "resid-slice", "query-zero", "scaled"])
def test_each_kind_equals_a_hand_written_intervention_on_the_twin(tiny, twin, examples, kind):
    settings = AuditSettings(kinds=("zero", kind) if kind != "zero" else ("zero", "mean"), alpha=0.3)
    sequences = condition_sequences(examples)["with-profile"]
    ablations = KindAblations(tiny, settings, sequences)
    for index in range(len(sequences)):
        grid = exact_deltas(tiny, sequences[index], ablations.of(kind, index), HEADS, max_rows=2)
        donor = ablations.donor[index] if ablations.donor else None
        if kind == "resample":
            assert donor != index
        for head in HEADS:
            expected = reference_delta(kind, twin, sequences, index, donor, head, settings.alpha)
            assert grid[head].item() == pytest.approx(expected, abs=2e-5), (index, head)
            assert abs(expected) > 1e-4  # the ablation changes something


def test_resample_donor_shorter_than_the_recipient_fills_with_its_mean(tiny, twin):
    """The longest example takes its donor's mean z where the donor has ended."""
    sequences = condition_sequences(pairs(tiny))["with-profile"]
    ablations = KindAblations(tiny, AuditSettings(kinds=("zero", "resample")), sequences)
    index = max(range(len(sequences)), key=lambda i: len(sequences[i].ids))
    donor = ablations.donor[index]
    assert len(sequences[donor].ids) < len(sequences[index].ids)
    grid = exact_deltas(tiny, sequences[index], ablations.of("resample", index), [(1, 2)])
    assert grid[1, 2].item() == pytest.approx(reference_delta("resample", twin, sequences, index, donor, (1, 2), 0.5), abs=2e-5)


def test_direct_effect_equals_the_final_norm_and_unembedding_written_out(tiny, twin, examples):
    sequence = condition_sequences(examples)["with-profile"][1]
    got = direct_effects(tiny, sequence)
    store = {}
    hook = twin.model.norm.register_forward_pre_hook(lambda m, a: store.__setitem__("x", a[0][0].double()))
    with torch.no_grad():
        logits = twin(torch.tensor([list(sequence.ids)])).logits[0].double()
    hook.remove()
    positions, targets = sequence.positions, sequence.targets
    final = store["x"][positions]
    rms = (final.pow(2).mean(-1, keepdim=True) + twin.config.rms_norm_eps).sqrt()  # frozen at the clean run
    weight, unembedding = twin.model.norm.weight.double(), twin.lm_head.weight.double()

    def nll(row_logits):
        return -row_logits.log_softmax(-1)[torch.arange(len(targets)), targets].mean()

    clean = nll(logits[positions])
    d = twin.config.head_dim
    for layer in range(twin.config.num_hidden_layers):
        z = o_proj_inputs(twin, sequence.ids)[layer][positions].double()
        w_o = twin.model.layers[layer].self_attn.o_proj.weight.double()
        for head in range(twin.config.num_attention_heads):
            write = z[:, head * d : (head + 1) * d] @ w_o[:, head * d : (head + 1) * d].T
            expected = nll(((final - write) / rms * weight) @ unembedding.T) - clean
            assert got[layer, head].item() == pytest.approx(expected.item(), abs=2e-5)


def test_statistics_equal_scipy_and_counting_by_hand():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 12)), rng.normal(size=(5, 12))
    b[:, :4] = a[:, :4]  # some ties across
    a[0, 1] = a[0, 2]  # a tie within a row
    for row in range(5):
        assert spearman(a[row], b[row]) == pytest.approx(spearmanr(a[row], b[row]).statistic, abs=1e-12)
        top_a = set(np.argsort(-a[row], kind="stable")[:3])
        top_b = set(np.argsort(-b[row], kind="stable")[:3])
        assert shared_top_k(a[row], b[row], 3) == len(top_a & top_b)
    grid = np.array([[0.1, 0.5], [0.5, -1.0]])
    assert top_heads(grid, 2) == [(0, 1), (1, 0)]


@pytest.fixture(scope="module")
def audit(tiny, examples):
    return audit_ablations(tiny, examples, AuditSettings(top_k=3, resamples=200, alpha=0.5), progress=False)


def test_cross_ablation_uses_heads_chosen_on_the_other_examples_and_matches_the_twin(tiny, twin, examples, audit):
    scores, rows = audit.scores, audit.cross_rows
    sequences = condition_sequences(examples)
    for index, example in enumerate(examples):
        others = scores[scores["example_id"] != example.example_id]
        for kind in audit.record["settings"]["kinds"]:
            means = others[others["kind"] == kind].groupby(["layer", "head"])["delta"].mean()
            ordered = sorted(means.items(), key=lambda item: (-item[1], item[0]))[:3]
            expected = " ".join(f"L{layer}H{head}" for (layer, head), _ in ordered)
            picked = rows[(rows["example_id"] == example.example_id) & (rows["selected_by"] == kind)]["heads"]
            assert set(picked) == {expected}
        # zero-ablating the zero kind's heads together, without the profile, by hand
        row = rows[(rows["example_id"] == example.example_id) & (rows["selected_by"] == "zero") & (rows["ablated_as"] == "zero")
                   & (rows["condition"] == "without-profile")]  # fmt: skip
        heads = [(int(h[1]), int(h[3])) for h in row["heads"].item().split()]
        sequence = sequences["without-profile"][index]
        prompt, target = sequence.ids[: sequence.prompt_len], sequence.ids[sequence.prompt_len :]
        by_hand = twin_token_nll(twin, prompt, target, ablated(heads)).mean() - twin_token_nll(twin, prompt, target).mean()
        assert row["delta"].item() == pytest.approx(float(by_hand), abs=2e-5)
    assert len(audit.cross) == 6 * 6 * 2 and (audit.cross["n"] == len(examples)).all()


def test_a_saved_audit_loads_back_and_draws(audit, tmp_path):
    audit.save(tmp_path)
    loaded = AuditResult.load(tmp_path)
    pd.testing.assert_frame_equal(loaded.agreement, audit.agreement)
    assert loaded.record == audit.record
    figure = agreement_figure(loaded.agreement)
    cells = figure.data[0].text
    assert len(cells) == 6 and all(len(row) == 6 for row in cells)
    zero_mean = audit.agreement[(audit.agreement["kind_a"] == "zero") & (audit.agreement["kind_b"] == "mean")].iloc[0]
    assert cells[0][1].startswith(f"{zero_mean.spearman:.2f}<br>")
    maps = kind_maps(loaded.grids(), n=3)
    assert len([trace for trace in maps.data if trace.type == "heatmap"]) == 6
    assert "hover" not in str(static_version(maps).layout.title.subtitle.text)


def test_scaled_with_alpha_one_agrees_with_zero(tiny, examples):
    result = audit_ablations(tiny, examples[:2], AuditSettings(kinds=("zero", "scaled"), alpha=1.0, top_k=3, resamples=50,
                                                               self_repair=False), progress=False)  # fmt: skip
    grids = result.grids()
    np.testing.assert_allclose(grids["scaled"], grids["zero"], atol=1e-9)
    row = result.agreement.iloc[0]
    assert row.spearman == pytest.approx(1.0) and row.shared_top_k == 3


def test_a_head_that_writes_nothing_matters_under_every_head_kind_but_resid_slice():
    """Constructed: head (1, 2)'s columns of W_O are zero, so removing the head in any way changes
    nothing, while the authors' residual slice 2 (written by the other heads) still matters."""
    lens = tiny_model()
    d = lens.d_head
    with torch.no_grad():
        lens.bridge.original_model.model.layers[1].self_attn.o_proj.weight[:, 2 * d : 3 * d] = 0
    result = audit_ablations(lens, pairs(lens), AuditSettings(top_k=2, resamples=50), progress=False)
    for kind, grid in result.grids().items():
        if kind == "resid-slice":
            assert abs(grid[1, 2]) > 1e-3
        else:
            assert grid[1, 2] == pytest.approx(0.0, abs=1e-6), kind
    deltas = result.self_repair_rows
    assert deltas[(deltas["layer"] == 1) & (deltas["head"] == 2)]["direct"].abs().max() < 1e-6


def test_resample_donors_are_seeded_and_never_the_example_itself(tiny, examples):
    for n in (2, 3, 7):
        for seed in range(5):
            chosen = donors(n, seed)
            assert chosen == donors(n, seed) and all(d != i for i, d in enumerate(chosen)) and sorted(chosen) == list(range(n))
    assert len({tuple(donors(7, seed)) for seed in range(5)}) > 1
    sequences = condition_sequences(examples)["with-profile"]
    settings = AuditSettings(kinds=("zero", "resample"), seed=4)
    first, again = KindAblations(tiny, settings, sequences), KindAblations(tiny, settings, sequences)
    assert torch.equal(first.of("resample", 0).z_ref, again.of("resample", 0).z_ref)


def test_an_audit_that_cannot_apply_is_refused_in_one_line(tiny, examples, tmp_path):
    with pytest.raises(InputError, match="resample ablation takes a head's output from another example"):
        check_audit(AuditSettings(), 1)
    with pytest.raises(InputError, match="at least 2"):
        donors(1, 0)
    with pytest.raises(InputError, match="top_k"):
        check_audit(AuditSettings(top_k=12), 3, 3, 4)
    with pytest.raises(InputError, match="below the 4 heads scored"):
        check_audit(AuditSettings(top_k=4, layers=(2,)), 3, 3, 4)
    with pytest.raises(InputError, match="layer 3 of layers is out of range"):
        check_audit(AuditSettings(top_k=2, layers=(1, 3)), 3, 3, 4)
    with pytest.raises(InputError, match="at least two"):
        AuditSettings(kinds=("zero",))
    sequence = TargetSequence(examples[0].prompt_ids, examples[0].target_ids)
    short = torch.zeros(tiny.n_layers, 3, tiny.n_heads, tiny.d_head)
    with pytest.raises(InputError, match="covers 3 positions"):
        tiny.run(list(sequence.ids), mask=HeadMask.ablate(tiny.geometry, [(0, 0)], z_ref=short))
    runner = CliRunner()
    for args, message in ((["--limit", "1", "--kinds", "zero,resample"], "--limit: the audit needs at least 2 examples"),
                          (["--kinds", "zero,shuffle"], "--kinds: unknown ablation kind 'shuffle'"),
                          (["--alpha", "1.5"], "--alpha"), (["--layers", "3-1"], "--layers: the range '3-1' runs backwards"),
                          (["--layers", "a"], "--layers: 'a' is not a layer")):  # fmt: skip
        result = runner.invoke(app, ["audit", "--out", str(tmp_path / "out"), "--model", "no-such-model", *args])
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_an_interrupted_audit_resumes_from_its_checkpoint(tiny, examples, tmp_path, monkeypatch):
    import workbench.experiments.audit as audit_module

    settings = AuditSettings(kinds=("zero", "resample", "scaled"), alpha=0.5, top_k=2, resamples=50)
    fresh = audit_ablations(tiny, examples, settings, checkpoint=tmp_path, progress=False)

    def refuse(*args, **options):
        raise AssertionError("a checkpointed score was computed again")

    monkeypatch.setattr(audit_module, "exact_deltas", refuse)
    monkeypatch.setattr(audit_module, "direct_effects", refuse)
    resumed = audit_ablations(tiny, examples, settings, checkpoint=tmp_path, progress=False)
    pd.testing.assert_frame_equal(resumed.scores, fresh.scores)
    pd.testing.assert_frame_equal(resumed.self_repair, fresh.self_repair)
    with pytest.raises(AssertionError, match="computed again"):  # another α is another key
        audit_ablations(tiny, examples, AuditSettings(kinds=("zero", "scaled"), alpha=0.25, top_k=2), checkpoint=tmp_path,
                        progress=False)  # fmt: skip


def test_an_audit_of_some_layers_scores_their_heads_as_the_full_audit_does(tiny, examples, audit):
    part = audit_ablations(tiny, examples, AuditSettings(top_k=3, resamples=200, layers=(1, 2)), progress=False)
    assert set(part.scores["layer"]) == {1, 2}
    full = audit.scores[audit.scores["layer"] >= 1].reset_index(drop=True)
    np.testing.assert_allclose(part.scores["delta"].to_numpy(), full["delta"].to_numpy(), atol=1e-9)
    for kind, heads in part.record["top_k_heads"].items():
        assert all(layer >= 1 for layer, _ in heads), kind
        grid = part.grids()[kind]
        assert top_heads(grid, 3) == [tuple(head) for head in heads]
    assert part.agreement["spearman"].notna().all() and set(part.self_repair["layer"]) == {1, 2}
