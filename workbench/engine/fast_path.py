"""The fast path of KV-cached decoding: the lens's model run without the bridge's wrappers.

TransformerLens's bridge wraps every module of the Hugging Face model in a hook-carrying wrapper
(a SmolLM2 decoding step makes 1,762 module calls through the bridge against 396 in the plain
model), re-implements attention eagerly and repeats the keys and values of grouped-query attention
at every step. For decoding, `FastPath` runs an *unwrapped twin* of the same model instead:
each Hugging Face module shallow-copied with the bridge's wrappers replaced by the modules they
wrap, so the weights are shared, nothing is copied, and every block is the family's own Hugging
Face code. It changes three things:

- **attention**: registered as a Transformers attention implementation; grouped-query attention
  multiplies each key-value head's group of queries by its keys directly (no repeated copy), a
  multi-token forward without soft-capping uses PyTorch's SDPA, and the masks come from the
  padding, causality and each layer's sliding window;
- **the cache**: a `GrowingKVCache`, written in place; one-token steps on sliding-window layers
  attend to a view of the last `window` positions;
- **shared lower layers**: layers below the cache's `shared_below` run one row per prompt, and the
  residual stream fans out to the row groups there.

Interventions act where the bridge's hook points are, with the same tensor shapes, so the lens's
head masks and a decoder's extra hooks work unchanged: `z` (the output projection's input), the
query (`q`, or `q_normed` after a query norm), `o_out` (the output projection's output) and the
blocks' `resid_pre` / `resid_post`. A hook on any other point, or a model spread over several
devices, is refused (`refusal`), and callers fall back to the bridge.

Positions follow the padding (`cumsum(attention) − 1`, as the bridge derives them). Against the
bridge the logits agree to float rounding, not bit for bit (the grouped attention sums in another
order); shared and unshared layers give identical results.
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformers import AttentionInterface

from workbench.engine.adapters import ModelAdapter
from workbench.engine.interventions import Hook, mask_hooks
from workbench.engine.kv_cache import CacheSpec, GrowingKVCache
from workbench.engine.masks import HeadGeometry, HeadMask
from workbench.engine.numerics import serialize_small_products
from workbench.errors import InputError
from workbench.tensor_types import ContextMask, TokenIds

ATTENTION = "workbench-grouped"
# Hook kinds the fast path serves (names as in `workbench.engine.adapters.HOOKS`).
SERVED_KINDS = ("z", "q", "q_normed", "o_out", "resid_pre", "resid_post")
AllowedKeys = Bool[Tensor, "rows 1 new keys"]
# The logits of the new positions, or of the last one only (`last_only`).
NewLogits = Float[Tensor, "batch out vocab"]


def unwrapped(module: Any, memo: dict[int, Any] | None = None) -> Any:
    """A twin of a bridged Hugging Face module tree: every module shallow-copied (parameters and
    buffers shared, no hooks), every bridge wrapper replaced by the twin of what it wraps. Typed
    `Any`: Hugging Face modules are reached by attribute (`model.model.layers`), duck-typed."""
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    if isinstance(module, GeneralizedComponent):
        twin = unwrapped(module.original_component, memo)
        memo[id(module)] = twin
        return twin
    twin = copy.copy(module)
    twin.__dict__ = dict(module.__dict__)
    memo[id(module)] = twin
    for name in list(twin.__dict__):
        if name.endswith("_hooks") or name.endswith("_hooks_with_kwargs") or name.endswith("_hooks_always_called"):
            twin.__dict__[name] = OrderedDict()
    twin._modules = OrderedDict(
        (name, None if child is None else unwrapped(child, memo)) for name, child in module._modules.items()
    )
    return twin


class _Keys:
    """Which cached positions each new position may attend to, per row count and window: the
    keys' padding (`attention`), causality, the window, and always itself (so that a padding
    position, which attends to nothing real, still gets a finite output)."""

    def __init__(self, attention: ContextMask, start: int):
        self.valid = attention.bool()
        self.start, self.total = start, attention.shape[1]
        self.built: dict[tuple[int, int | None, int], AllowedKeys] = {}
        self.unpadded = bool(self.valid.all())

    def plainly_causal(self, new: int, window: int | None) -> bool:
        """Whether the allowed keys are exactly the causal triangle of a square score matrix (no
        cache, no padding, no window shorter than the sequence): SDPA's `is_causal`, which skips
        the masked half of the scores (1.6x faster at 1,000 tokens, the same values)."""
        return self.start == 0 and new == self.total and self.unpadded and (window is None or window >= self.total)

    def first_key(self, new: int, window: int | None) -> int:
        """The first position a one-token step on a sliding-window layer can see."""
        return max(0, self.total - window) if window is not None and new == 1 else 0

    def allowed(self, rows: int, window: int | None, first: int) -> AllowedKeys:
        key = (rows, window, first)
        if key not in self.built:
            device = self.valid.device
            query = torch.arange(self.start, self.total, device=device)[:, None]
            keys = torch.arange(first, self.total, device=device)[None]
            visible = keys <= query
            if window is not None:
                visible &= keys > query - window
            allowed = (self.valid[:rows, None, first:] & visible) | (keys == query)
            self.built[key] = allowed[:, None]
        return self.built[key]


def grouped_attention(
    module: nn.Module,
    query: Float[Tensor, "rows head new d_head"],
    key: Float[Tensor, "rows kv_head keys d_head"],
    value: Float[Tensor, "rows kv_head keys d_head"],
    attention_mask: Any,
    scaling: float,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Float[Tensor, "rows new head d_head"], None]:
    """The attention implementation of the fast path (`attention_mask` is its `_Keys`)."""
    masks: _Keys = attention_mask
    rows, heads, new, d_head = query.shape
    kv_heads = key.shape[1]
    first = masks.first_key(new, sliding_window)
    key, value = key[:, :, first:], value[:, :, first:]
    if softcap is None and new > 1 and masks.plainly_causal(new, sliding_window):
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=kv_heads != heads)
        return out.transpose(1, 2), None
    allowed = masks.allowed(rows, sliding_window, first)
    if softcap is None and new > 1:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=scaling, enable_gqa=kv_heads != heads)
        return out.transpose(1, 2), None
    # Each key-value head's group of query heads in one product (queries ordered kv head by kv head).
    group = heads // kv_heads
    scores = torch.matmul(query.reshape(rows, kv_heads, group * new, d_head), key.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(rows, kv_heads, group, new, -1).masked_fill(~allowed[:, :, None], float("-inf"))
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights.view(rows, kv_heads, group * new, -1), value)
    return out.view(rows, heads, new, d_head).transpose(1, 2), None


class FastPath:
    """The unwrapped twin of a bridged Hugging Face model, with prefill and step (see the module
    docstring). It needs the family's adapter (hook names, block outputs), the head geometry and
    the final-logit soft-cap, not the lens; its attention implementation is registered with
    Transformers when the first one is built."""

    def __init__(self, original: Any, adapter: ModelAdapter, geometry: HeadGeometry, softcap: float | None):
        AttentionInterface.register(ATTENTION, grouped_attention)
        self.adapter, self.geometry, self.softcap = adapter, geometry, softcap
        self.model: Any = unwrapped(original)
        serialize_small_products(self.model)  # the twin's modules are copies without the original's hooks
        fast_config = copy.copy(original.config)
        fast_config._attn_implementation_internal = ATTENTION
        for module in self.model.modules():
            if getattr(module, "config", None) is original.config:
                module.config = fast_config
        base = self.model.model
        self.embed, self.blocks, self.norm = base.embed_tokens, list(base.layers), base.norm
        self.lm_head, self.rotary = self.model.lm_head, base.rotary_emb
        self.layer_types = list(getattr(fast_config, "layer_types", None) or ["full_attention"] * len(self.blocks))
        self.rope_by_layer_type = "layer_type" in inspect.signature(self.rotary.forward).parameters
        self.hook_points = {
            adapter.hook_name(kind, layer): (kind, layer) for kind in SERVED_KINDS for layer in range(geometry.n_layers)
        }
        devices = {parameter.device for parameter in original.parameters()}
        self.devices_refusal = f"the model is spread over {len(devices)} devices" if len(devices) > 1 else None
        if self.devices_refusal is None and any(hasattr(module, "_hf_hook") for module in original.modules()):
            # accelerate's hooks replace a module's bound forward, which a shallow twin would call on the wrapped original
            self.devices_refusal = "the model carries accelerate's device hooks"

    # --- what it can serve -----------------------------------------------------------------------

    def refusal(self, mask: HeadMask | None, hooks: Sequence[Hook]) -> str | None:
        """Why the fast path cannot run this mask and these hooks (None: it can)."""
        if self.devices_refusal:
            return self.devices_refusal
        for name, _ in hooks:
            if name not in self.hook_points:
                return f"it serves no hook at {name!r} (only {', '.join(SERVED_KINDS)})"
        return None

    def shareable_depth(self, tokens: TokenIds, groups: int, mask: HeadMask | None, hooks: Sequence[Hook]) -> int:
        """How many lower layers the `groups` row groups of `tokens` (row `g·n + i` = group g of
        prompt i) can share: 0 unless every group has the same tokens; then the layers below the
        lowest one where the groups' head masks differ or an extra hook acts."""
        rows = tokens.shape[0]
        if groups == 1 or rows % groups:
            return 0
        by_group = tokens.view(groups, rows // groups, -1)
        if not bool((by_group == by_group[:1]).all()):
            return 0
        depth = len(self.blocks)
        if mask is not None and mask.rows > 1:
            scales = mask.scale.reshape(groups, rows // groups, *mask.scale.shape[1:])
            layers = (scales != scales[:1]).any(dim=(0, 1, 3)).nonzero()  # [groups, n, layer, head]
            depth = int(layers[0]) if len(layers) else depth
        for name, _ in hooks:
            depth = min(depth, self.hook_points[name][1])
        return depth

    # --- forwards ----------------------------------------------------------------------------

    def prefill(
        self,
        tokens: TokenIds,
        attention_mask: ContextMask,
        spec: CacheSpec,
        *,
        mask: HeadMask | None = None,
        extra_hooks: Sequence[Hook] = (),
    ) -> tuple[NewLogits, GrowingKVCache]:
        """Last-position logits of `tokens` and a new cache holding them (laid out by `spec`)."""
        cache = GrowingKVCache(len(self.blocks), tokens.shape[0], spec)
        return self.step(tokens, cache, attention_mask, mask=mask, extra_hooks=extra_hooks, last_only=True), cache

    def step(
        self,
        tokens: TokenIds,
        cache: GrowingKVCache,
        attention_mask: ContextMask,
        *,
        mask: HeadMask | None = None,
        extra_hooks: Sequence[Hook] = (),
        last_only: bool = False,
    ) -> NewLogits:
        """Logits of the new positions `tokens` (only the last with `last_only`); `cache` is
        extended in place. `attention_mask` spans the cached positions and the new ones."""
        refusal = self.refusal(mask, extra_hooks)
        if refusal:
            raise InputError(f"the fast decoding path cannot run this: {refusal}")
        rows, new = tokens.shape
        if rows != cache.rows or attention_mask.shape != (rows, cache.length + new):
            raise ValueError(
                f"{rows} rows of {new} new tokens with an attention mask of shape {tuple(attention_mask.shape)} "
                f"do not fit a cache of {cache.rows} rows and {cache.length} positions"
            )
        if mask is not None:
            mask.check(self.geometry)
            if mask.rows not in (1, rows):
                raise InputError(f"head mask has {mask.rows} rows but the batch has {rows}")
        shared = cache.prompt_rows if cache.shared_below else rows
        self._check_shared(tokens, mask, extra_hooks, cache)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, cache.length :]
        keys = _Keys(attention_mask, cache.length)
        embeddings: dict[tuple[int, str], Any] = {}
        with torch.no_grad(), self._hooks(mask, extra_hooks, cache) as resid_hooks:
            hidden = self.embed(tokens[:shared])
            for layer, block in enumerate(self.blocks):
                if layer == cache.shared_below and shared != rows:
                    hidden = hidden.repeat(cache.groups, 1, 1)
                hidden = resid_hooks.apply("resid_pre", layer, hidden)
                here = hidden.shape[0]
                layer_type = self.layer_types[layer]
                if (here, layer_type) not in embeddings:
                    embeddings[here, layer_type] = self._position_embeddings(hidden, positions[:here], layer_type)
                hidden = self.adapter.block_output(
                    block(
                        hidden,
                        attention_mask=keys,
                        position_ids=positions[:here],
                        past_key_values=cache,
                        position_embeddings=embeddings[here, layer_type],
                    )
                )
                hidden = resid_hooks.apply("resid_post", layer, hidden)
            if hidden.shape[0] != rows:  # every layer shared
                hidden = hidden.repeat(cache.groups, 1, 1)
            cache.advance(new)
            if last_only:
                hidden = hidden[:, -1:]
            logits = self.lm_head(self.norm(hidden))
        return torch.tanh(logits / self.softcap) * self.softcap if self.softcap else logits

    def tail(
        self,
        hidden: Float[Tensor, "rows pos d_model"],
        start: int,
        hooks: Sequence[Hook],
        *,
        positions: Tensor | None = None,
        inputs: list[Tensor] | None = None,
    ) -> Float[Tensor, "rows kept vocab"]:
        """Logits of blocks `start` and up run on `hidden` (block `start`'s input for rows without
        padding; no KV cache), at `positions` (all when None), with bridge-style `hooks` of the
        served kinds active (in the order given): what a restart of the tail runner runs
        (`workbench.engine.tail`), with this path's attention (SDPA for the whole sequence).
        `inputs`: a list to which each block's input is appended (before its `resid_pre` hooks,
        as the bridge's clean run records it)."""
        refusal = self.refusal(None, hooks)
        if refusal:
            raise InputError(f"the fast path cannot run this tail: {refusal}")
        rows, length = hidden.shape[:2]
        ids = torch.arange(length, device=hidden.device).expand(rows, -1)
        keys = _Keys(torch.ones(rows, length, dtype=torch.bool, device=hidden.device), 0)
        embeddings: dict[str, Any] = {}
        with self._installed(hooks) as resid_hooks:
            for layer in range(start, len(self.blocks)):
                if inputs is not None:
                    inputs.append(hidden.detach())
                hidden = resid_hooks.apply("resid_pre", layer, hidden)
                layer_type = self.layer_types[layer]
                if layer_type not in embeddings:
                    embeddings[layer_type] = self._position_embeddings(hidden, ids, layer_type)
                block = self.blocks[layer]
                hidden = self.adapter.block_output(
                    block(hidden, attention_mask=keys, position_ids=ids, position_embeddings=embeddings[layer_type])
                )
                hidden = resid_hooks.apply("resid_post", layer, hidden)
            if positions is not None:
                hidden = hidden[:, positions.to(hidden.device)]
            logits = self.lm_head(self.norm(hidden))
        return torch.tanh(logits / self.softcap) * self.softcap if self.softcap else logits

    def _position_embeddings(self, hidden: torch.Tensor, positions: torch.Tensor, layer_type: str) -> Any:
        if self.rope_by_layer_type:
            return self.rotary(hidden, positions, layer_type)
        return self.rotary(hidden, positions)

    def _check_shared(self, tokens: TokenIds, mask: HeadMask | None, hooks: Sequence[Hook], cache: GrowingKVCache) -> None:
        """Shared layers are exact only up to `shareable_depth`: every group has the same tokens
        and, below the shared depth, the same head mask, and no extra hook acts there."""
        if cache.shared_below and self.shareable_depth(tokens, cache.groups, mask, hooks) < cache.shared_below:
            raise ValueError(
                f"rows that share layers below {cache.shared_below} must have the same tokens in every group "
                "and, in those layers, the same head mask and no extra hook"
            )

    # --- hooks -------------------------------------------------------------------------------

    @contextmanager
    def _hooks(self, mask: HeadMask | None, extra_hooks: Sequence[Hook], cache: GrowingKVCache) -> Iterator[_ResidualHooks]:
        """Install the mask's and the extra hooks on the twin's modules for one forward; yield the
        residual-stream hooks, which the layer loop calls itself. Shared layers see the mask of
        the first group's rows."""
        hooks: list[Hook] = []
        if mask is not None:  # mask hooks first, as the lens orders them
            below = cache.shared_below
            shared_mask = mask.take(0, cache.prompt_rows)
            hooks += [(name, hook) for name, hook in self._mask_hooks(shared_mask) if self.hook_points[name][1] < below]
            hooks += [(name, hook) for name, hook in self._mask_hooks(mask) if self.hook_points[name][1] >= below]
        hooks += list(extra_hooks)
        with self._installed(hooks) as residual:
            yield residual

    @contextmanager
    def _installed(self, hooks: Sequence[Hook]) -> Iterator[_ResidualHooks]:
        """Bridge-style hooks (of the served kinds) on the twin's modules for one forward; yields
        the residual-stream ones, which the layer loop calls itself."""
        residual = _ResidualHooks()
        with ExitStack() as stack:
            for name, hook in hooks:
                kind, layer = self.hook_points[name]
                if kind in ("resid_pre", "resid_post"):
                    residual.add(kind, layer, name, hook)
                else:
                    stack.callback(self._module_hook(kind, layer, name, hook).remove)
            yield residual

    def _mask_hooks(self, mask: HeadMask) -> list[Hook]:
        return mask_hooks(mask, self.geometry, self.adapter)

    def _module_hook(self, kind: str, layer: int, name: str, hook: Callable[..., Any]) -> torch.utils.hooks.RemovableHandle:
        """Register `hook` (a bridge-style `hook(activation, hook_point)`) on the twin module whose
        input or output is the activation `kind` of `layer`, presented in the bridge's shape."""
        attention = self.blocks[layer].self_attn
        point = SimpleNamespace(name=name)
        n_heads, d_head = self.geometry.n_heads, self.geometry.d_head

        def changed(activation: torch.Tensor, shown: torch.Tensor, restore: Callable[[torch.Tensor], torch.Tensor]):
            result = hook(shown, point)
            return None if result is None else restore(result).reshape(activation.shape)

        if kind == "z":  # the output projection's input, [rows, pos, head * d_head] -> [rows, pos, head, d_head]

            def pre(module: nn.Module, args: tuple) -> tuple | None:
                z = args[0]
                result = changed(z, z.view(*z.shape[:-1], n_heads, d_head), lambda out: out)
                return None if result is None else (result, *args[1:])

            return attention.o_proj.register_forward_pre_hook(pre)
        if kind == "o_out":
            return attention.o_proj.register_forward_hook(lambda module, args, out: changed(out, out, lambda x: x))
        if kind == "q_normed":  # the family's query norm, shown as the bridge shows it: [rows, head, pos, d_head]
            axis = self.adapter.hf_q_norm_head_axis

            def normed(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
                if axis == 1:
                    return changed(out, out, lambda x: x)
                return changed(out, out.transpose(1, 2), lambda x: x.transpose(1, 2))

            return attention.q_norm.register_forward_hook(normed)
        # "q": the first head * d_head features of the query projection (or of a fused one)
        width = n_heads * d_head
        projection = getattr(attention, "q_proj", None) or attention.qkv_proj

        def query(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
            q = out[..., :width]
            result = hook(q.view(*q.shape[:-1], n_heads, d_head), point)
            if result is None:
                return None
            result = result.reshape(q.shape)
            return result if out.shape[-1] == width else torch.cat([result, out[..., width:]], dim=-1)

        return projection.register_forward_hook(query)


class _ResidualHooks:
    """Hooks on the residual stream at a block's input or output, called by the layer loop."""

    def __init__(self) -> None:
        self.hooks: dict[tuple[str, int], list[tuple[SimpleNamespace, Callable[..., Any]]]] = {}

    def add(self, kind: str, layer: int, name: str, hook: Callable[..., Any]) -> None:
        self.hooks.setdefault((kind, layer), []).append((SimpleNamespace(name=name), hook))

    def apply(self, kind: str, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        for point, hook in self.hooks.get((kind, layer), ()):
            result = hook(hidden, point)
            hidden = hidden if result is None else result
        return hidden
