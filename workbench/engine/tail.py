"""The restart from a layer: a clean forward recorded once, then rerun from block l on.

TransformerLens 4.3's `start_at_layer` still executes the blocks below it, so the tail runner
calls the bridge's blocks itself: hooks fire, but blocks below the start cost nothing. A clean run
records each block's input residual and the keyword arguments it received (`TailContext`: a
sliding-window layer's own attention mask, each layer type's own position embeddings). A restart
at layer l feeds block l the recorded residual (or another one), then runs the blocks above.

The unembedding runs only at the positions asked for; every block runs at every position (the
last block's MLP at the few scored positions alone is a small product, whose sums depended on the
thread count before `numerics.serial_product`; tests/test_numerics.py caught it). Pre-norm families
(`FINISHED_BLOCK_FAMILIES`: `h = x + attn(ln1(x))`, `out = h + mlp(ln2(h))`) restarted with the
start block's recorded head outputs `z` do not recompute its attention (`finish_block`: only its
output projection runs, so hooks at `hook_z` and after still act). Other families (Gemma's extra
norms) replay whole blocks.

Where the lens's fast path serves the hooks of a restart (`workbench.engine.fast_path`), the clean
run had no padding and nothing is differentiated, the whole blocks run on its unwrapped twin
instead: the same weights and hook points, with PyTorch's SDPA attention instead of the bridge's
eager one, which at 1,000 tokens nearly halves a restart's time (benchmarks/RESULTS.md, "Restarts
on the fast path"). The logits agree with the bridge's to float rounding, not bit for bit; both
are thread-count invariant. `Lens.tail_context(..., fast=True)` records the clean run there as well
(no block keyword arguments: restarts from it must run on the fast path).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from transformer_lens.model_bridge import TransformerBridge

from workbench.engine.adapters import ModelAdapter
from workbench.engine.interventions import Hook
from workbench.errors import InputError
from workbench.tensor_types import AttentionMask, HeadOutputs, Logits, Residual, TokenIds

if TYPE_CHECKING:
    from workbench.engine.fast_path import FastPath

FINISHED_BLOCK_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3"})


@dataclass
class TailContext:
    """What the tail runner needs to restart a clean forward at any layer: each block's input
    residual and the keyword arguments (position embeddings, attention mask, ...) it received."""

    residuals: list[Residual]
    block_kwargs: list[dict[str, Any]]
    logits: Logits
    attention: AttentionMask | None = None  # the padding mask the clean run had (None: no padding)


@dataclass(frozen=True)
class Restart:
    """Where a forward starts: block `layer`, fed `context`'s recorded residual (or `residual`),
    repeated over `rows` batch rows. `head_outputs`: block `layer`'s clean per-head `z`
    (`[1 or rows, pos, head, d_head]`), so that its attention is not recomputed; exact when the
    masks leave that block's attention pattern as in the clean run (not `query-scale`)."""

    context: TailContext
    layer: int
    rows: int = 1
    residual: Residual | None = None
    head_outputs: HeadOutputs | None = None


def record_context(
    bridge: TransformerBridge,
    adapter: ModelAdapter,
    tokens: TokenIds,
    attention_mask: AttentionMask | None,
    hooks: Sequence[Hook],
) -> TailContext:
    """Run one forward (with `hooks`) and record every block's input residual and keyword arguments."""
    n_layers = len(bridge.blocks)
    residuals: list[Residual | None] = [None] * n_layers
    block_kwargs: list[dict[str, Any] | None] = [None] * n_layers

    def recorder(layer: int):
        def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            residuals[layer] = (args[0] if args else kwargs["hidden_states"]).detach()
            block_kwargs[layer] = adapter.tail_kwargs(kwargs)

        return record

    handles = [block.register_forward_pre_hook(recorder(layer), with_kwargs=True) for layer, block in enumerate(bridge.blocks)]
    try:
        with torch.no_grad(), _hooked(bridge, hooks):
            logits = bridge(tokens, attention_mask=attention_mask, use_cache=False, return_type="logits")
    finally:
        for handle in handles:
            handle.remove()
    return TailContext(residuals, block_kwargs, logits, attention_mask)  # type: ignore[arg-type]


def run_tail(
    bridge: TransformerBridge,
    adapter: ModelAdapter,
    restart: Restart,
    hooks: Sequence[Hook],
    *,
    positions: torch.Tensor | None = None,
    softcap: float | None = None,
    site_changes_pattern: bool = False,
    twin: FastPath | None = None,
) -> Float[torch.Tensor, "rows kept vocab"]:
    """Logits of the blocks from `restart.layer` up with `hooks` active, at `positions` (all when
    None). `site_changes_pattern`: a hook changes the start block's attention pattern, so its
    recorded head outputs cannot be reused. `twin`: the model's fast path, which then runs every
    whole block (SDPA attention; about 2x faster than the bridge's blocks at 1,000 tokens);
    `hooks` must be of the kinds it serves."""
    context, start, rows = restart.context, restart.layer, restart.rows
    n_layers = len(bridge.blocks)
    if not 0 <= start < n_layers:
        raise InputError(f"layer {start} out of range: the model has {n_layers} layers")
    head_outputs = restart.head_outputs
    if head_outputs is not None and site_changes_pattern:
        raise InputError("a query-scale mask changes the attention pattern; recorded head outputs cannot be reused")
    finished = adapter.family in FINISHED_BLOCK_FAMILIES
    hidden = context.residuals[start] if restart.residual is None else restart.residual
    hidden = (hidden.expand(rows, -1, -1) if hidden.shape[0] == 1 and rows > 1 else hidden).contiguous()
    with _hooked(bridge, hooks):  # the caller's grad mode (`Lens.run`): integrated gradients differentiate a tail
        if head_outputs is not None and finished:
            if head_outputs.shape[0] == 1 and rows > 1:
                head_outputs = head_outputs.expand(rows, -1, -1, -1)
            hidden = finish_block(bridge, context, start, hidden, head_outputs=head_outputs)
            start += 1
        if twin is not None:  # `Lens.run` passes one only for unpadded contexts
            return twin.tail(hidden, start, hooks, positions=positions)
        for layer in range(start, n_layers):
            block = bridge.blocks[layer]
            device = parameter_device(block)
            kwargs = {key: moved(value, device) for key, value in context.block_kwargs[layer].items()}
            hidden = adapter.block_output(block(hidden.to(device), **kwargs))
        if positions is not None:
            hidden = hidden[:, positions.to(hidden.device)]
        return unembed(bridge, hidden, softcap)


def finish_block(
    bridge: TransformerBridge,
    context: TailContext,
    layer: int,
    hidden: Residual,
    *,
    head_outputs: HeadOutputs | None = None,
) -> Residual:
    """Block `layer`'s output residual from its input `hidden` (pre-norm families only). With
    `head_outputs` (the block's per-head `z`) the attention is not recomputed, only its output
    projection. The block's hook points fire as in a whole block. Call inside the hooks' context."""
    block = bridge.blocks[layer]
    device = parameter_device(block)
    hidden = block.hook_in(hidden.to(device))
    if head_outputs is None:
        kwargs = {
            k: moved(v, device) for k, v in context.block_kwargs[layer].items() if k in ("attention_mask", "position_embeddings")
        }
        attention, _ = block.attn(hidden_states=block.ln1(hidden), **kwargs)
    else:
        attention = block.attn.hook_out(block.attn.o(head_outputs.to(device).flatten(-2)))
    middle = hidden + attention
    return block.hook_out(middle + block.mlp(block.ln2(middle)))


def unembed(bridge: TransformerBridge, hidden: Residual, softcap: float | None) -> Logits:
    """Final norm, unembedding and (where the model has one) the final logit soft-cap."""
    hidden = hidden.to(parameter_device(bridge.ln_final))
    logits = bridge.unembed(bridge.ln_final(hidden))
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def parameter_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights live (the execution device of a block in a split model)."""
    return next(module.parameters()).device


def moved(value: Any, device: torch.device) -> Any:
    """Tensors (also inside tuples, e.g. RoPE's (cos, sin)) moved to `device`; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(moved(item, device) for item in value)
    return value


def _hooked(bridge: TransformerBridge, hooks: Sequence[Hook]) -> AbstractContextManager[Any]:
    """The bridge's hook context for `hooks` (not entered at all when there are none: it costs
    milliseconds per entry)."""
    return bridge.hooks(fwd_hooks=list(hooks)) if hooks else nullcontext()
