"""An independent reference for every ΔNLL measurement: one full forward of an unwrapped Hugging
Face twin of the tiny model (same weights, no TransformerLens), with the head intervention written
by hand on the output projection, and the target NLL from a float64 full-vocabulary log-softmax.

`scale` maps `(layer, head)` to the factor s of `z' = z_ref + s·(z − z_ref)` at the output
projection's input (head-output site), or of the head's `d_model / n_heads` slice of its output
(resid-slice site); heads not named keep s = 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

import torch

from workbench.engine.models import tiny_hf_model


def tiny_twin(**shape) -> torch.nn.Module:
    """A second, unwrapped copy of `tiny_model(**shape)`'s weights."""
    model, _ = tiny_hf_model(**shape)
    return model


@contextmanager
def intervention(
    twin: torch.nn.Module,
    scale: Mapping[tuple[int, int], float],
    *,
    z_ref: torch.Tensor | None = None,
    site: str = "head-output",
) -> Iterator[None]:
    config = twin.config
    n_heads = config.num_attention_heads
    by_layer: dict[int, dict[int, float]] = {}
    for (layer, head), factor in scale.items():
        by_layer.setdefault(layer, {})[head] = float(factor)

    def edit(features: torch.Tensor, layer: int, width: int, reference: torch.Tensor | None) -> torch.Tensor:
        features = features.clone()
        for head, factor in by_layer[layer].items():
            part = features[..., head * width : (head + 1) * width]
            base = 0.0 if reference is None else reference[layer, head].to(features.dtype)
            features[..., head * width : (head + 1) * width] = base + factor * (part - base)
        return features

    d_head, slice_width = getattr(config, "head_dim", None) or config.hidden_size // n_heads, config.hidden_size // n_heads
    with ExitStack() as stack:
        for layer in by_layer:
            o_proj = twin.model.layers[layer].self_attn.o_proj
            if site == "head-output":
                hook = o_proj.register_forward_pre_hook(
                    lambda module, args, layer=layer: (edit(args[0], layer, d_head, z_ref),) + args[1:]
                )
            else:
                hook = o_proj.register_forward_hook(
                    lambda module, args, output, layer=layer: edit(output, layer, slice_width, None)
                )
            stack.callback(hook.remove)
        yield


def twin_token_nll(
    twin: torch.nn.Module,
    prompt_ids: Sequence[int],
    target_ids: Sequence[int],
    scale: Mapping[tuple[int, int], float] = {},
    *,
    z_ref: torch.Tensor | None = None,
    site: str = "head-output",
) -> torch.Tensor:
    """Per-token NLL (float64) of `target_ids` after `prompt_ids`, batch 1, one full forward."""
    ids = torch.tensor([list(prompt_ids) + list(target_ids)])
    with torch.no_grad(), intervention(twin, scale, z_ref=z_ref, site=site):
        logits = twin(ids).logits[0].double()
    log_probs = logits.log_softmax(-1)
    start = len(prompt_ids) - 1
    return torch.stack([-log_probs[start + t, token] for t, token in enumerate(target_ids)])


def ablated(heads: Sequence[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """The scale mapping of ablating `heads` together."""
    return {tuple(head): 0.0 for head in heads}


def twin_greedy(
    twin: torch.nn.Module,
    prompt_ids: Sequence[int],
    stop_ids: set[int],
    max_new_tokens: int,
    scale: Mapping[tuple[int, int], float] = {},
    *,
    z_ref: torch.Tensor | None = None,
) -> list[int]:
    """Greedy continuation by full forwards without a cache (the stop token, when reached, kept)."""
    ids = list(prompt_ids)
    generated: list[int] = []
    with torch.no_grad(), intervention(twin, scale, z_ref=z_ref):
        for _ in range(max_new_tokens):
            token = int(twin(torch.tensor([ids])).logits[0, -1].argmax())
            generated.append(token)
            ids.append(token)
            if token in stop_ids:
                break
    return generated
