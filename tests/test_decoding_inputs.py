"""Bad input to the decoders and the loop raises `InputError` with a message naming what is wrong."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.decoding import CAD, DPS, DeCoRe, DoLa, RandomHeads, Sampling, generate
from workbench.errors import InputError
from workbench.heads import HeadWeights


@pytest.fixture(scope="module")
def weights(tiny):
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[1, 1] = 1.0
    return HeadWeights(grid)


@pytest.fixture(scope="module")
def prompt(tiny):
    return tiny.encode_chat("hello")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda w: DPS(w, gamma=-0.5), "dps: gamma must be a number >= 0 or 'entropy', got -0.5"),
        (lambda w: DPS(w, gamma=math.nan), "dps: gamma must be a number >= 0 or 'entropy', got nan"),
        (lambda w: DPS(w, gamma="adaptive"), "dps: gamma must be a number >= 0 or 'entropy', got 'adaptive'"),
        (lambda w: DPS(w, gamma="entropy", gamma_cap=-1), "dps: gamma_cap must be a number >= 0 or None, got -1"),
        (lambda w: DPS(w, combine="probs"), "dps: combine must be 'logits' or 'logprobs', got 'probs'"),
        (lambda w: DPS(w, plausibility=1.5), "dps: plausibility must be a number > 0 and <= 1 or None, got 1.5"),
        (lambda w: DPS(w, suppression="half"), "dps: suppression must be 'weighted', 'zero' or 'mean', got 'half'"),
        (lambda w: DPS(w, site="resid-slice"), "dps: site must be 'head-output' or 'query-scale', got 'resid-slice'"),
        (lambda w: DPS(w, prefill="none"), "dps: prefill must be 'masked' or 'shared', got 'none'"),
        (lambda w: DPS(w, gama=1.0), "dps: unknown option 'gama'"),
        (lambda w: DPS(w, site="query-scale", suppression="mean"), "query-scale"),
        (lambda w: DPS(w, suppression="zero", z_ref=torch.zeros(3, 4, 8)), "zero suppression takes no z_ref"),
        (lambda w: DPS(torch.zeros_like(w.weights)), "select no head"),
        (lambda w: DPS(torch.full_like(w.weights, math.nan)), "NaN"),
        (lambda w: DeCoRe(w, gamma=-1.0), "decore: gamma must be a number >= 0 or 'entropy'"),
        (lambda w: DeCoRe(w, alpha=0.5), "decore: unknown option 'alpha'"),
        (lambda w: CAD(gamma=-0.1), "cad: gamma must be a number >= 0 or 'entropy', got -0.1"),
        (lambda w: CAD(suppression="zero"), "cad: unknown option 'suppression'"),
        (lambda w: DoLa(plausibility=0.0), "dola: plausibility must be a number > 0 and <= 1, got 0.0"),
        (lambda w: DoLa(candidate_layers="middle"), "dola: candidate_layers must be 'low', 'high' or a list"),
        (lambda w: RandomHeads(w, control="swap"), "random-heads: control must be 'random-heads', 'shuffled' or 'random-mask'"),
        (lambda w: Sampling(temperature=0.0), "temperature must be > 0"),
        (lambda w: Sampling(top_p=0.0), "top_p"),
        (lambda w: Sampling(top_k=0), "top_k"),
    ],
)
def test_bad_decoder_settings(weights, build, message):
    with pytest.raises(InputError, match=message):
        build(weights)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lens, p, w: generate(lens, []), "non-empty list"),
        (lambda lens, p, w: generate(lens, [p, []]), r"prompts\[1\]: empty prompt"),
        (lambda lens, p, w: generate(lens, ["hello"]), "got text"),
        (lambda lens, p, w: generate(lens, [[1, 10_000]]), "token id out of range"),
        (lambda lens, p, w: generate(lens, [p], max_new_tokens=0), "max_new_tokens must be a positive integer"),
        (lambda lens, p, w: generate(lens, [p], max_new_tokens=-3), "max_new_tokens must be a positive integer"),
        (lambda lens, p, w: generate(lens, [p], batch_size=0), "batch_size"),
        (lambda lens, p, w: generate(lens, [p], stop_strings=[""]), "stop_strings"),
        (lambda lens, p, w: generate(lens, [p * 40]), r"prompts\[0\]: .* exceed the model context of 256"),
        (lambda lens, p, w: generate(lens, [[5] * 250], max_new_tokens=10), "exceed the model context"),
        (lambda lens, p, w: generate(lens, [p], decoder=CAD()), "cad: needs contrast_prompts"),
        (lambda lens, p, w: generate(lens, [p], decoder=CAD(), contrast_prompts=[p, p]), "2 contrast prompts for 1"),
        (lambda lens, p, w: generate(lens, [p], decoder=DoLa(candidate_layers=[2])), "candidate layer 2 out of range"),
        (lambda lens, p, w: generate(lens, [p], decoder=DPS(torch.ones(30, 9))), "30 layers x 9 heads"),
        (lambda lens, p, w: generate(lens, [p], decoder=DPS(w, z_ref=torch.zeros(3, 4, 5))), "z_ref has shape"),
        (lambda lens, p, w: generate(lens, [p], decoder=DPS(w, prefill="shared"), use_cache=False), "prefill='shared'"),
        (lambda lens, p, w: generate(lens, [p], decoder=DPS()), "dps: needs head weights"),
    ],
)
def test_bad_generation_input(tiny, prompt, weights, call, message):
    with pytest.raises(InputError, match=message):
        call(tiny, prompt, weights)
