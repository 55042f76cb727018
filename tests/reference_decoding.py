"""Independent reference decoding for the tests: hand-written greedy loops of full forwards (no KV
cache) on a plain Hugging Face twin of a tiny lens's model, with every intervention done by
patching weights of a copy of the twin. No lens, no bridge, no hooks that change activations,
no workbench head masks, no workbench decoder code.

- a head's output scaled by s (DPS's weighted suppression, zero ablation): the o_proj columns
  that read head h, times s; toward a reference z_ref (mean suppression): plus an o_proj bias of
  (1 − s)·W_h·z_ref;
- a head's query scaled by s: the q_proj rows that write head h, times s;
- contrast rules, entropy and the DoLa layer logits written out from their definitions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch

from workbench.engine.models import tiny_hf_model

STEPS = 8
Score = Callable[[list[int]], torch.Tensor]


def twin(**shape):
    """The plain Hugging Face model with the weights of `tiny_model(**shape)`."""
    return tiny_hf_model(**shape)[0]


def head_dim(model) -> int:
    config = model.config
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def patched(model, *, output_scale=None, z_ref=None, query_scale=None):
    """A copy of `model` whose heads are suppressed by editing weights: `output_scale[l, h]`
    multiplies head h's output (toward `z_ref[l, h]` when given), `query_scale[l, h]` its query."""
    model = copy.deepcopy(model)
    d = head_dim(model)
    with torch.no_grad():
        for layer, block in enumerate(model.model.layers):
            attention = block.self_attn
            for head in range(model.config.num_attention_heads):
                columns = slice(head * d, (head + 1) * d)
                if output_scale is not None:
                    s = float(output_scale[layer, head])
                    if z_ref is not None:
                        if attention.o_proj.bias is None:
                            attention.o_proj.bias = torch.nn.Parameter(torch.zeros(attention.o_proj.out_features))
                        attention.o_proj.bias += (1 - s) * attention.o_proj.weight[:, columns] @ z_ref[layer, head]
                    attention.o_proj.weight[:, columns] *= s
                if query_scale is not None:
                    attention.q_proj.weight[columns, :] *= float(query_scale[layer, head])
    return model


def head_output_means(model, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean input of every o_proj (the heads' outputs) over all positions: `[layer, head, d_head]`.
    (A pre-hook that only reads.)"""
    n_heads, d = model.config.num_attention_heads, head_dim(model)
    totals = torch.zeros(model.config.num_hidden_layers, n_heads, d, dtype=torch.float64)
    count = 0
    handles = []
    for layer, block in enumerate(model.model.layers):

        def read(module, inputs, layer=layer):
            totals[layer] += inputs[0][0].double().view(-1, n_heads, d).sum(dim=0)

        handles.append(block.self_attn.o_proj.register_forward_pre_hook(read))
    try:
        with torch.no_grad():
            for sequence in sequences:
                model(torch.tensor([list(sequence)]))
                count += len(sequence)
    finally:
        for handle in handles:
            handle.remove()
    return (totals / count).float()


def next_logits(model, sequence: Sequence[int]) -> torch.Tensor:
    """Last-position logits of one full forward."""
    with torch.no_grad():
        return model(torch.tensor([list(sequence)])).logits[0, -1].float()


def layer_logits(model, sequence: Sequence[int], block: int) -> torch.Tensor:
    """Next-token logits read from the residual stream after `block`: RMSNorm and unembedding by hand."""
    with torch.no_grad():
        hidden = model(torch.tensor([list(sequence)]), output_hidden_states=True).hidden_states[block + 1][0, -1]
    norm = model.model.norm
    normed = hidden * torch.rsqrt(hidden.pow(2).mean() + norm.variance_epsilon) * norm.weight
    return (normed @ model.lm_head.weight.T).float()


def entropy(logits: torch.Tensor) -> float:
    p = logits.softmax(-1)
    return float(-(p * p.log()).nansum())


def contrast(full, weak, gamma, combine="logits", plausibility=None) -> torch.Tensor:
    """(1 + γ)·full − γ·weak on logits or log-probabilities, with the plausibility cut-off."""
    if combine == "logprobs":
        used, weak = full.log_softmax(-1), weak.log_softmax(-1)
    else:
        used = full
    scores = (1 + gamma) * used - gamma * weak
    if plausibility is not None:
        probabilities = full.softmax(-1)
        scores[probabilities < plausibility * probabilities.max()] = -math.inf
    return scores


def decode(prompt: Sequence[int], score: Score, stop_ids: set[int], steps: int = STEPS) -> list[int]:
    """Greedy on `score(sequence)`, recomputing everything each step; stops like the loop."""
    sequence, generated = list(prompt), []
    for _ in range(steps):
        token = int(score(sequence).argmax())
        generated.append(token)
        sequence.append(token)
        if token in stop_ids:
            break
    return generated


def decode_pair(prompt: Sequence[int], other: Sequence[int], score, stop_ids: set[int], steps: int = STEPS) -> list[int]:
    """Greedy over two sequences that grow together (CAD: the prompt and its contrast prompt):
    `score(sequence, other_sequence)`."""
    sequence, extra = list(prompt), []
    for _ in range(steps):
        token = int(score(sequence, list(other) + extra).argmax())
        sequence.append(token)
        extra.append(token)
        if token in stop_ids:
            break
    return extra


def shared_prefill_decode(full_model, weak_model, prompt, gamma, combine, stop_ids, steps: int = STEPS) -> list[int]:
    """The authors' shared prefill on weight-patched twins: the weak pass continues a cache of the
    prompt (but its last token) made by the *full* model; both then feed one token per step."""
    ids = torch.tensor([list(prompt)])
    with torch.no_grad():
        cache = full_model(ids[:, :-1], use_cache=True).past_key_values
        full_cache, weak_cache = copy.deepcopy(cache), copy.deepcopy(cache)
        token, generated = ids[:, -1:], []
        for _ in range(steps):
            full = full_model(token, past_key_values=full_cache, use_cache=True)
            weak = weak_model(token, past_key_values=weak_cache, use_cache=True)
            full_cache, weak_cache = full.past_key_values, weak.past_key_values
            z = full.logits[0, -1].float()
            g = entropy(z) if gamma == "entropy" else gamma
            chosen = int(contrast(z, weak.logits[0, -1].float(), g, combine).argmax())
            generated.append(chosen)
            if chosen in stop_ids:
                break
            token = torch.tensor([[chosen]])
    return generated
