"""The DPS decoding trace against hand computations on the tiny model's plain Hugging Face twin
(`reference_decoding`): full and masked logits from two plain forwards per step (the heads
suppressed by editing o_proj weights), DPS's combination and γ written out by hand, and every
head's effect from exact one-head-at-a-time masking of the twin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from reference_decoding import contrast, entropy, head_output_means, next_logits, patched, twin

from workbench.data.prompts import answer_stop_strings
from workbench.data.tasks import task_spec
from workbench.decoding import DPS, Greedy, generate, trace_dps
from workbench.errors import InputError
from workbench.heads import HeadWeights

STEPS = 6


@pytest.fixture(scope="module")
def hf():
    return twin()


@pytest.fixture(scope="module")
def weights(tiny):
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[0, 1], grid[1, 2], grid[2, 0] = 1.0, 0.6, 0.3
    return HeadWeights(grid)


def in_space(logits: torch.Tensor, combine: str) -> torch.Tensor:
    return logits.log_softmax(-1) if combine == "logprobs" else logits


@pytest.mark.parametrize(
    "options",
    [
        dict(gamma=1.5),
        dict(gamma="entropy", combine="logprobs"),
        dict(gamma="entropy", entropy_scale="ln-vocab", gamma_cap=0.7),
        dict(gamma=0.8, suppression="mean"),
        dict(gamma=1.0, site="query-scale"),
    ],
)
def test_trace_equals_hand_computed_passes_and_one_head_masking(tiny, hf, weights, options, tmp_path):
    prompt = tiny.encode_chat("hello there")
    trace = trace_dps(tiny, prompt, DPS(weights, **options), max_new_tokens=STEPS)
    assert len(trace.token_ids) == STEPS and trace.stop_reason == "max_new_tokens"
    combine = options.get("combine", "logits")
    w = weights.weights
    mean = options.get("suppression") == "mean"
    scale = (w == 0).float() if mean else 1 - w
    z_ref = head_output_means(hf, [prompt]) if mean else None  # the loop's mean: over the prompt
    query = options.get("site") == "query-scale"
    suppress = (lambda s: patched(hf, query_scale=s)) if query else (lambda s: patched(hf, output_scale=s, z_ref=z_ref))
    weak = suppress(scale)
    singles = {}
    for layer, head in weights.heads():
        alone = torch.ones_like(w)
        alone[layer, head] = scale[layer, head]
        singles[(layer, head)] = suppress(alone)
    assert list(trace.heads) == weights.heads()
    worst_sum = 0.0
    for step, token in enumerate(trace.token_ids):
        sequence = list(prompt) + list(trace.token_ids[:step])
        full, masked = next_logits(hf, sequence), next_logits(weak, sequence)
        gamma = options["gamma"]
        if gamma == "entropy":
            gamma = entropy(full) / (np.log(full.numel()) if options.get("entropy_scale") == "ln-vocab" else 1)
            gamma = min(gamma, options.get("gamma_cap", np.inf))
        dps = contrast(full, masked, gamma, combine)
        assert int(dps.argmax()) == token  # the traced tokens are DPS's
        assert trace.gamma[step] == pytest.approx(gamma, abs=1e-4)
        for name, values in {"full": full, "masked": masked, "dps": dps}.items():
            expected = values.log_softmax(-1).topk(trace.top_ids[name].shape[1])
            assert trace.top_ids[name][step].tolist() == expected.indices.tolist(), name
            np.testing.assert_allclose(trace.top_logprobs[name][step], expected.values.numpy(), atol=1e-4)
            assert trace.logprobs[name][step] == pytest.approx(float(values.log_softmax(-1)[token]), abs=1e-4)
        s_full, s_masked = float(in_space(full, combine)[token]), float(in_space(masked, combine)[token])
        assert trace.total[step] == pytest.approx(s_full - s_masked, abs=1e-4)
        effects = [s_full - float(in_space(next_logits(model, sequence), combine)[token]) for model in singles.values()]
        np.testing.assert_allclose(trace.effects[step], effects, atol=1e-4)
        np.testing.assert_allclose(trace.shares[step], np.array(effects) / (s_full - s_masked), atol=1e-3)
        assert trace.interaction[step] == pytest.approx((s_full - s_masked) - sum(effects), abs=1e-4)
        worst_sum = max(worst_sum, abs(1 - sum(effects) / (s_full - s_masked)))
    print(f"{options}: shares sum to 1 within {worst_sum:.3f} at worst over {STEPS} steps")
    assert trace.agrees.all()

    grid = trace.share_grid(2)
    assert grid[0, 1] == trace.shares[2, 0] and np.isnan(grid[0, 0])
    trace.to_csv(tmp_path / "trace.csv")
    frame = pd.read_csv(tmp_path / "trace.csv", keep_default_na=False)
    assert len(frame) == STEPS * len(weights.heads())
    assert frame.loc[(frame["step"] == 3) & (frame["layer"] == 1) & (frame["head"] == 2), "effect"].item() == pytest.approx(
        trace.effects[3, 1]
    )
    top = trace.top_frame()
    assert set(top["pass"]) == {"full", "masked", "dps"} and len(top) == 3 * STEPS * trace.top_ids["full"].shape[1]


def test_trace_stops_where_the_loop_stops_with_the_answer_stop_strings(tiny, weights):
    prompt = tiny.encode_chat("hi")
    decoder = DPS(weights, gamma=1.0)
    unstopped = trace_dps(tiny, prompt, decoder, max_new_tokens=10)
    stop = unstopped.text[3:5]  # text the decoder will write: the stop string must cut it there
    stopped = trace_dps(tiny, prompt, decoder, max_new_tokens=10, stop_strings=[stop])
    expected = generate(tiny, [prompt], decoder, max_new_tokens=10, stop_strings=[stop])[0]
    assert stopped.stop_reason == expected.stop_reason == "stop_string"
    assert stopped.text == expected.text and list(stopped.token_ids) == expected.token_ids
    assert len(stopped.token_ids) < len(unstopped.token_ids)
    assert stopped.options["stop_strings"] == [stop]
    assert answer_stop_strings("plain", task_spec("LaMP-7")) == ("\n",)  # what evaluate passes for plain prompts


def test_trace_refuses_bad_input_in_one_line(tiny, weights):
    too_long = [5] * (tiny.geometry.n_ctx - 3)
    with pytest.raises(InputError, match="exceed the model context") as error:
        trace_dps(tiny, too_long, DPS(weights), max_new_tokens=8)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="takes a DPS decoder"):
        trace_dps(tiny, [5, 6], Greedy())
    with pytest.raises(InputError, match="prefill='masked'"):
        trace_dps(tiny, [5, 6], DPS(weights, prefill="shared"))
    with pytest.raises(InputError, match="top must be"):
        trace_dps(tiny, [5, 6], DPS(weights), top=0)
    trace = trace_dps(tiny, [5, 6], DPS(weights), max_new_tokens=2)
    with pytest.raises(InputError, match="outside the trace"):
        trace.share_grid(2)
