"""The DPS authors' discovery and decoding loops, written directly on a plain Hugging Face causal LM
(`model.model.layers[l].self_attn`): no lens, no TransformerLens bridge, no workbench head masks.

It is an independent reference for the workbench's reproductions of their procedure (the
`resid-slice` PCS and DPS with `site="query-scale"`, `prefill="shared"`, `combine="logprobs"`,
`gamma="entropy"`), and the "authors" row of `benchmarks/bench_decoding.py`. It follows their
procedure step by step (docs/authors_procedure.md), in our own code:

- discovery: one example per forward; the loss is the mean NLL of the target tokens given the
  prompt; "ablating" head h of layer l is a forward hook on that layer's `o_proj` that zeroes
  slice h of its *output* (residual coordinates after the heads are mixed), at every position;
  PCS = ablated loss − clean loss.
- decoding: a forward hook on every layer's `q_proj` scales each head's query by its scale
  s = 1 − w (only inside the masked pass); one unmasked prefill of the prompt without its last
  token, deep-copied into two caches; then per step two separate one-token forwards (full and
  query-scaled), α = the entropy (nats) of the full next-token distribution, scores
  `(1 + α)·log p_full − α·log p_scaled`, greedy argmax, stop on a stop token.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

Head = tuple[int, int]
ScaleGrid = Float[Tensor, "layer head"]
CausalLM = Any  # a Hugging Face causal LM, reached by attribute (model.model.layers, config): duck-typed


def _layers(model: CausalLM) -> Sequence[Any]:
    return model.model.layers


def target_nll(model: CausalLM, prompt_ids: Sequence[int], target_ids: Sequence[int]) -> float:
    """Mean NLL (nats) of the target tokens after the prompt, from one forward of prompt ‖ target."""
    ids = torch.tensor([list(prompt_ids) + list(target_ids)], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : ids.shape[1] - 1].float()
    targets = torch.tensor(list(target_ids), device=logits.device)
    return float(torch.nn.functional.cross_entropy(logits, targets))


@contextmanager
def zeroed_output_slice(model: CausalLM, layer: int, head: int) -> Iterator[None]:
    """Zero slice `head` (width hidden / n_heads) of layer `layer`'s o_proj output, everywhere."""
    o_proj = _layers(model)[layer].self_attn.o_proj
    width = o_proj.out_features // model.config.num_attention_heads

    def hook(module: torch.nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        output = output.clone()
        output[..., head * width : (head + 1) * width] = 0
        return output

    handle = o_proj.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def authors_pcs(
    model: CausalLM, examples: Sequence[tuple[Sequence[int], Sequence[int]]], heads: Sequence[Head] | None = None
) -> Float[Tensor, "example layer head"]:
    """Per-example PCS of `heads` (default all; others stay NaN): ablated minus clean target NLL,
    one example and one head per forward."""
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)] if heads is None else list(heads)
    scores = torch.full((len(examples), n_layers, n_heads), float("nan"), dtype=torch.float64)
    for index, (prompt_ids, target_ids) in enumerate(examples):
        clean = target_nll(model, prompt_ids, target_ids)
        for layer, head in heads:
            with zeroed_output_slice(model, layer, head):
                scores[index, layer, head] = target_nll(model, prompt_ids, target_ids) - clean
    return scores


@contextmanager
def scaled_queries(model: CausalLM, scale: ScaleGrid) -> Iterator[None]:
    """Multiply head h's query in layer l by `scale[l, h]` (a forward hook on each q_proj)."""
    n_heads = model.config.num_attention_heads
    handles = []
    for layer, block in enumerate(_layers(model)):
        factors = scale[layer].to(device=model.device)

        def hook(module: torch.nn.Module, inputs: tuple, output: Tensor, factors: Tensor = factors) -> Tensor:
            batch, positions, width = output.shape
            per_head = output.view(batch, positions, n_heads, width // n_heads) * factors.to(output.dtype)[:, None]
            return per_head.view(batch, positions, width)

        handles.append(block.self_attn.q_proj.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def authors_dps(
    model: CausalLM,
    prompt_ids: Sequence[int],
    scale: ScaleGrid,
    *,
    max_new_tokens: int,
    stop_ids: set[int],
) -> list[int]:
    """Their DPS loop for one prompt: the generated token ids (the stop token included)."""
    ids = torch.tensor([list(prompt_ids)], device=model.device)
    generated: list[int] = []
    with torch.no_grad():
        cache = model(ids[:, :-1], use_cache=True).past_key_values if ids.shape[1] > 1 else None
        cache_full, cache_scaled = copy.deepcopy(cache), copy.deepcopy(cache)
        token = ids[:, -1:]
        for _ in range(max_new_tokens):
            full = model(token, past_key_values=cache_full, use_cache=True)
            with scaled_queries(model, scale):
                scaled = model(token, past_key_values=cache_scaled, use_cache=True)
            cache_full, cache_scaled = full.past_key_values, scaled.past_key_values
            logp_full = full.logits[0, -1].float().log_softmax(-1)
            logp_scaled = scaled.logits[0, -1].float().log_softmax(-1)
            alpha = -(logp_full.exp() * logp_full).sum()
            chosen = int(((1 + alpha) * logp_full - alpha * logp_scaled).argmax())
            generated.append(chosen)
            if chosen in stop_ids:
                break
            token = torch.tensor([[chosen]], device=model.device)
    return generated
