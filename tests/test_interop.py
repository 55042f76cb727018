"""TransformerLens interop: `Lens.run_with_cache` gives TransformerLens's `ActivationCache` under
its own hook names, and a user's own `(hook_name, fn)` hooks act identically on every run path
(the bridge's forward, the restart from a layer, cached steps through the bridge and on the fast
path) in `Lens.run`, `AblationStudy`, `score_heads` and `generate`, each against the unwrapped
Hugging Face twin with the same edit written by hand."""

from __future__ import annotations

import pytest
import torch
from reference_twin import ablated, tiny_twin, twin_token_nll
from transformer_lens import ActivationCache

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.decoding import generate
from workbench.engine.masks import HeadMask
from workbench.experiments.study import AblationStudy
from workbench.scores import score_heads

STEER = torch.linspace(-0.5, 0.5, 32)  # added to the residual stream after block 1 (d_model 32)
HALF_HEAD = (2, 1)  # the head whose output the second hook halves


def steering_hooks(tiny):
    """Two user hooks: a vector added to block 1's output, and head 1 of block 2 halved at `z`."""

    def steer(resid, hook):
        return resid + STEER.to(resid)

    def halve(z, hook):
        z = z.clone()
        z[:, :, HALF_HEAD[1]] *= 0.5
        return z

    return [(tiny.hook_name("resid_post", 1), steer), (tiny.hook_name("z", HALF_HEAD[0]), halve)]


def edited_twin(twin):
    """The same two edits on the twin, by hand: a forward hook on layer 1's output and a pre-hook
    on layer 2's output projection."""
    d_head = twin.config.hidden_size // twin.config.num_attention_heads
    handles = [
        twin.model.layers[1].register_forward_hook(
            lambda module, args, output: (output[0] + STEER,) + tuple(output[1:]) if isinstance(output, tuple) else output + STEER
        ),
    ]

    def halve(module, args):
        z = args[0].clone()
        z[..., HALF_HEAD[1] * d_head : (HALF_HEAD[1] + 1) * d_head] *= 0.5
        return (z, *args[1:])

    handles.append(twin.model.layers[HALF_HEAD[0]].self_attn.o_proj.register_forward_pre_hook(halve))
    return handles


@pytest.fixture
def twin():
    model = tiny_twin()
    handles = edited_twin(model)
    yield model
    for handle in handles:
        handle.remove()


@pytest.fixture(scope="module")
def prompt(tiny):
    return tiny.encode("The quiet harbour at dawn", add_bos=True)


def test_run_with_cache_is_transformer_lens_s_activation_cache_after_the_mask(tiny, prompt):
    mask = HeadMask.ablate(tiny.geometry, [(1, 2)])
    logits, cache = tiny.run_with_cache(prompt, mask=mask, names_filter=[tiny.hook_name("z", 1), tiny.hook_name("resid_post", 2)])
    assert isinstance(cache, ActivationCache)
    assert {"blocks.1.attn.hook_z", "blocks.2.hook_resid_post"} <= set(cache.keys())  # (with their canonical aliases)
    _, captured = tiny.capture(prompt, mask=mask)
    torch.testing.assert_close(cache["blocks.1.attn.hook_z"], captured[:, :, 1], atol=0, rtol=0)
    assert cache["blocks.1.attn.hook_z"][0, :, 2].abs().max() == 0  # recorded after the mask
    torch.testing.assert_close(logits, tiny.forward(prompt, mask=mask), atol=0, rtol=0)


def test_user_hooks_in_a_forward_and_a_restart_equal_the_hand_edited_twin(tiny, twin, prompt):
    hooks = steering_hooks(tiny)
    with torch.no_grad():
        expected = twin(torch.tensor([prompt])).logits
    assert (expected - tiny.forward(prompt)).abs().max() > 1e-3  # the hooks matter
    torch.testing.assert_close(tiny.run(prompt, hooks=hooks).logits, expected, atol=1e-5, rtol=0)
    context = tiny.tail_context(prompt, hooks=hooks)
    torch.testing.assert_close(tiny.run_tail(context, 2, hooks=hooks), expected, atol=1e-5, rtol=0)


def test_ablation_study_and_exact_pcs_with_user_hooks_equal_the_twin(tiny, twin, prompt):
    target = tiny.encode(" rises slowly")
    hooks = steering_hooks(tiny)
    study = AblationStudy(tiny, prompt, target, hooks=hooks)
    heads = [(0, 3), (2, 2)]
    nll = study.token_nll({"pair": heads})
    torch.testing.assert_close(nll[0], twin_token_nll(twin, prompt, target), atol=1e-5, rtol=0)
    torch.testing.assert_close(nll[1], twin_token_nll(twin, prompt, target, ablated(heads)), atol=1e-5, rtol=0)
    example = tokenize_pair(tiny, "e0", "u0", "The quiet harbour at dawn", " rises slowly")
    scores = score_heads(tiny, [example], method="exact", hooks=hooks, progress=False).per_example[0]
    clean = twin_token_nll(twin, example.prompt_ids, example.target_ids).mean()
    for layer, head in [(0, 0), (1, 3), (2, 1)]:
        alone = twin_token_nll(twin, example.prompt_ids, example.target_ids, ablated([(layer, head)])).mean()
        assert float(scores[layer, head]) == pytest.approx(float(alone - clean), abs=1e-5)


@pytest.mark.parametrize("fast_path", [True, False])
def test_generation_with_user_hooks_equals_the_twin_s_greedy(tiny, twin, prompt, fast_path):
    hooks = steering_hooks(tiny)
    assert tiny.fast_path_refusal(None, hooks) is None  # both hook points are served on the fast path
    ids, best = list(prompt), []
    with torch.no_grad():
        for _ in range(10):
            logits = twin(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
            best.append(float(logits.max()))
    generated = generate(tiny, [prompt], max_new_tokens=10, stop_at_eos=False, hooks=hooks, fast_path=fast_path, diagnostics=True)
    assert generated[0].token_ids == ids[len(prompt) :]
    scores = [step["top_scores"][0]["value"] for step in generated[0].steps]
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(best), atol=1e-4, rtol=0)
    assert generated[0].token_ids != generate(tiny, [prompt], max_new_tokens=10, stop_at_eos=False)[0].token_ids


def test_hooks_with_a_checkpoint_are_refused(tiny, prompt, tmp_path):
    from workbench.errors import InputError

    example = tokenize_pair(tiny, "e0", "u0", "The quiet harbour at dawn", " rises slowly")
    with pytest.raises(InputError, match="hooks cannot be checkpointed"):
        score_heads(tiny, [example], hooks=steering_hooks(tiny), checkpoint=tmp_path, progress=False)


def test_the_fast_path_and_the_bridge_decode_alike(tiny):
    """Greedy and DPS on the fast path against the same loop through the bridge (`fast_path=False`):
    the same tokens, and step scores equal to float rounding."""
    from workbench.decoding import DPS
    from workbench.heads import HeadWeights

    prompts = [tiny.encode(text, add_bos=True) for text in ("Write about the harbour.", "Hi.")]
    weights = torch.zeros(tiny.n_layers, tiny.n_heads)
    weights[1, 0], weights[2, 3] = 0.8, 0.4
    for decoder in (None, DPS(HeadWeights(weights), gamma=1.0)):
        fast, bridge = (
            generate(tiny, prompts, decoder=decoder, max_new_tokens=12, stop_at_eos=False, diagnostics=True, fast_path=path)
            for path in (True, False)
        )
        assert [g.token_ids for g in fast] == [g.token_ids for g in bridge]
        for one, other in zip(fast, bridge):
            for step_fast, step_bridge in zip(one.steps, other.steps):
                for name in ("top_scores", "top_full"):
                    assert [t["token_id"] for t in step_fast[name]] == [t["token_id"] for t in step_bridge[name]]
                    fast_values = torch.tensor([t["value"] for t in step_fast[name]])
                    torch.testing.assert_close(
                        fast_values, torch.tensor([t["value"] for t in step_bridge[name]]), atol=1e-4, rtol=0
                    )
