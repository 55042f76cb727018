"""The lens: the one activation and intervention abstraction over a TransformerLens bridge.

Every consumer (PCS scans, heatmaps, decoders, interactive studies) reads activations and applies
head masks through a `Lens`. It knows the head geometry, tokenizes (chat template without a
doubled BOS), captures per-head outputs (`hook_name("z", layer)`), applies `HeadMask`s as hooks,
runs KV-cached steps with the mask still active, and runs the *tail* of the network from a cached
residual stream so that an intervention at layer l costs only layers >= l.

Everything that depends on the model family (hook names, stop tokens, BOS and chat-template
policy, how a block is replayed, how KV caches are joined and their rows selected, soft-capping)
comes from the lens's `ModelAdapter` (`workbench.adapters`). Interventions follow the device of
the activation they change, so a model split over several devices (`device_map`) works.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerBase

from workbench.adapters import ModelAdapter, adapter_for
from workbench.errors import InputError
from workbench.fast_forward import FastForward
from workbench.kv_cache import CacheSpec, GrowingKVCache
from workbench.masks import HeadGeometry, HeadMask
from workbench.tensor_types import AttentionMask, ContextMask, HeadOutputs, Logits, Residual, TokenIds

Hook = tuple[str, Callable[..., Any]]

# On the CPU a prefill runs in row chunks of about this many tokens: long prompts in one big batch
# make the eager attention's [rows, heads, pos, pos] tensors outgrow the caches (measured in
# benchmarks/RESULTS.md, "Decoding"); short prompts still go in one forward. Other devices prefill
# all rows at once.
CPU_PREFILL_CHUNK_TOKENS = 2048


@dataclass
class TailContext:
    """What the tail runner needs to restart a clean forward at any layer: each block's input
    residual and the keyword arguments (position embeddings, attention mask, ...) it received."""

    residuals: list[Residual]
    block_kwargs: list[dict[str, Any]]
    logits: Logits


class Lens:
    """A TransformerLens bridge plus its tokenizer, head geometry and intervention machinery."""

    def __init__(
        self, bridge: TransformerBridge, tokenizer: PreTrainedTokenizerBase, name: str, adapter: ModelAdapter | None = None
    ):
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.name = name
        self.adapter = adapter_for(bridge.original_model) if adapter is None else adapter
        self.adapter.check_hooks(list(bridge.hook_dict))
        self.adapter.prepare_tokenizer(tokenizer)
        config = bridge.original_model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_heads = text_config.num_attention_heads
        d_model = text_config.hidden_size
        self.geometry = HeadGeometry(
            n_layers=text_config.num_hidden_layers,
            n_heads=n_heads,
            n_kv_heads=getattr(text_config, "num_key_value_heads", None) or n_heads,
            d_head=getattr(text_config, "head_dim", None) or d_model // n_heads,
            d_model=d_model,
            n_ctx=int(bridge.cfg.n_ctx),
            d_vocab=text_config.vocab_size,
        )
        self.final_logit_softcap = self.adapter.final_logit_softcap(text_config)

    @classmethod
    def from_hf(cls, hf_model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, name: str) -> Lens:
        """Wrap a Hugging Face causal LM (in place) as a bridge; never touches the hub.

        The model may be spread over several devices (loaded with a `device_map`); it stays where
        it is. An unsupported family is refused before anything is wrapped."""
        adapter = adapter_for(hf_model)
        overrides = None
        if not getattr(hf_model.config, "architectures", None):
            # GGUF configs (Gemma-3's among them) carry no `architectures`; the bridge needs it.
            overrides = {"architectures": [type(hf_model).__name__]}
        device = next(hf_model.parameters()).device
        bridge = TransformerBridge.boot_transformers(
            name,
            hf_model=hf_model,
            tokenizer=tokenizer,
            device=device,
            dtype=next(hf_model.parameters()).dtype,
            hf_config_overrides=overrides,
        )
        bridge.eval()
        for parameter in bridge.parameters():
            parameter.requires_grad_(False)
        return cls(bridge, tokenizer, name, adapter)

    # --- properties --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    @property
    def n_layers(self) -> int:
        return self.geometry.n_layers

    @property
    def n_heads(self) -> int:
        return self.geometry.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.geometry.n_kv_heads

    @property
    def d_head(self) -> int:
        return self.geometry.d_head

    @property
    def stop_token_ids(self) -> set[int]:
        """End-of-sequence tokens (tokenizer and generation config) and the family's end-of-turn
        tokens (ChatML `<|im_end|>`, Llama-3 `<|eot_id|>`, Gemma `<end_of_turn>`, ...)."""
        generation_config = getattr(self.bridge.original_model, "generation_config", None)
        return self.adapter.stop_token_ids(self.tokenizer, getattr(generation_config, "eos_token_id", None))

    def hook_name(self, kind: str, layer: int) -> str:
        """The bridge hook point of `kind` ("z", "q", "pattern", "resid_post", ... see
        `workbench.adapters.HOOKS`) in block `layer`."""
        return self.adapter.hook_name(kind, layer)

    def site_hook_name(self, site: str, layer: int) -> str:
        """The hook point an intervention site (`HeadMask.site`) acts on in block `layer`: the
        head output `z`, the query (after the query norm where the family has one), or the
        output projection's output."""
        kind = {"head-output": "z", "query-scale": self.adapter.query_hook, "resid-slice": "o_out"}[site]
        return self.hook_name(kind, layer)

    # --- tokenization ------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_text(self, user: str, system: str | None = None) -> str:
        """The chat-template text of one user turn, ending where the assistant's reply begins."""
        if not self.has_chat_template:
            raise InputError(f"model {self.name!r} has no chat template; use a plain (few-shot) prompt format")
        return self.tokenizer.apply_chat_template(
            self.adapter.chat_messages(user, system),
            tokenize=False,
            add_generation_prompt=True,
            **dict(self.adapter.chat_template_kwargs),
        )

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of `text`. Chat-template text already carries its own special tokens, so
        `add_bos` defaults to False (the template must not get a second BOS). A family without a
        BOS token (Qwen) gets none."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id if self.adapter.has_bos else None
        if add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    def encode_chat(self, user: str, system: str | None = None) -> list[int]:
        return self.encode(self.chat_text(user, system))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def pad_left(self, sequences: Sequence[Sequence[int]]) -> tuple[TokenIds, AttentionMask]:
        """Left-pad token id lists into a batch with its attention mask (generation needs left)."""
        if not sequences or any(len(s) == 0 for s in sequences):
            raise InputError("cannot build a batch from an empty token sequence")
        width = max(len(s) for s in sequences)
        if width > self.geometry.n_ctx:
            raise InputError(f"sequence of {width} tokens exceeds the model context of {self.geometry.n_ctx}")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        tokens = torch.full((len(sequences), width), pad, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            tokens[row, width - len(sequence) :] = torch.as_tensor(list(sequence), dtype=torch.long)
            attention[row, width - len(sequence) :] = 1
        return tokens.to(self.device), attention.to(self.device)

    def as_batch(self, tokens: TokenIds | Sequence[int]) -> TokenIds:
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        tokens = tokens[None] if tokens.ndim == 1 else tokens
        if tokens.shape[-1] == 0:
            raise InputError("empty token sequence")
        if tokens.shape[-1] > self.geometry.n_ctx:
            raise InputError(f"sequence of {tokens.shape[-1]} tokens exceeds the model context of {self.geometry.n_ctx}")
        return tokens

    # --- interventions -----------------------------------------------------------------------

    def mask_hooks(self, mask: HeadMask | None) -> list[Hook]:
        """The forward hooks that apply `mask`, one per layer it changes."""
        if mask is None:
            return []
        mask.check(self.geometry)
        return [(self.site_hook_name(mask.site, layer), self._site_hook(mask, layer)) for layer in mask.active_layers()]

    def _site_hook(self, mask: HeadMask, layer: int) -> Callable[..., torch.Tensor]:
        """The hook of one layer. Its scales and reference activation move to the device and
        dtype of the activation they meet (once per device and dtype): in a model split over
        several devices, layer l's activation lives on layer l's device, not the lens's."""
        scale_by_row = mask.scale[:, layer, :]  # [rows, head]
        z_ref_of_layer = None if mask.z_ref is None else mask.z_ref[layer]  # [head, d_head]
        n_heads = self.geometry.n_heads
        # Heads lie on axis 2 of z ([batch, pos, head, d]); a normed query may be [batch, head, pos, d].
        head_axis = self.adapter.query_head_axis if mask.site == "query-scale" else 2
        placed: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor | None]] = {}

        def like(activation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            batch = activation.shape[0]
            if scale_by_row.shape[0] not in (1, batch):
                raise InputError(f"head mask has {scale_by_row.shape[0]} rows but the batch has {batch}")
            key = (activation.device, activation.dtype)
            if key not in placed:
                z_ref = None if z_ref_of_layer is None else z_ref_of_layer.to(*key)
                placed[key] = (scale_by_row.to(*key), z_ref)
            return placed[key]

        def per_head(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, head, d]
            scale_by_head, z_ref = like(activation)
            scale = scale_by_head[:, None, :, None] if head_axis == 2 else scale_by_head[:, :, None, None]
            if z_ref is None:
                return activation * scale
            # z_ref + s·(z − z_ref), written so that s = 1 gives z and s = 0 gives z_ref bit-exactly
            # (identity rows beside masked rows must equal an unmasked run).
            return activation * scale + z_ref[None, None] * (1 - scale)

        def residual_slices(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, d_model]
            batch, pos, d_model = activation.shape
            sliced = activation.reshape(batch, pos, n_heads, d_model // n_heads)
            return (sliced * like(activation)[0][:, None, :, None]).reshape(batch, pos, d_model)

        return residual_slices if mask.site == "resid-slice" else per_head

    @contextmanager
    def intervene(self, mask: HeadMask | None, extra_hooks: Sequence[Hook] = ()) -> Iterator[Lens]:
        """Apply `mask` (and any extra hooks) to every forward run inside the block. With nothing
        to apply, the bridge's hook context (milliseconds per entry) is not entered at all."""
        hooks = self.mask_hooks(mask) + list(extra_hooks)
        if not hooks:
            yield self
            return
        with self.bridge.hooks(fwd_hooks=hooks):
            yield self

    # --- forwards ----------------------------------------------------------------------------

    def forward(
        self,
        tokens: TokenIds | Sequence[int],
        *,
        attention_mask: AttentionMask | None = None,
        mask: HeadMask | None = None,
    ) -> Logits:
        """Full-sequence logits with `mask` applied."""
        tokens = self.as_batch(tokens)
        with torch.no_grad(), self.intervene(mask):
            return self.bridge(tokens, attention_mask=attention_mask, return_type="logits")

    def step(
        self,
        tokens: TokenIds,
        past: Any = None,
        *,
        attention_mask: ContextMask | None = None,
        mask: HeadMask | None = None,
        extra_hooks: Sequence[Hook] = (),
        last_only: bool = False,
    ) -> tuple[Logits, Any]:
        """One KV-cached forward (prefill when `past` is None) with `mask` (and `extra_hooks`) active.

        `attention_mask` spans the cached prefix and the new tokens. Returns the logits of the
        new positions (only the last one, `[batch, 1, vocab]`, with `last_only`, which spares the
        unembedding of a whole prompt) and the updated cache. A cache made by the fast path
        (`prefill(..., cache=CacheSpec(...))`) continues on the fast path.
        """
        if isinstance(past, GrowingKVCache):
            if attention_mask is None:
                attention_mask = torch.ones(
                    tokens.shape[0], past.length + tokens.shape[1], dtype=torch.long, device=tokens.device
                )
            logits = self.fast_forward.step(tokens, past, attention_mask, mask=mask, extra_hooks=extra_hooks, last_only=last_only)
            return logits, past
        with torch.no_grad(), self.intervene(mask, extra_hooks):
            return self.bridge(
                tokens,
                attention_mask=attention_mask,
                past_key_values=past,
                use_cache=True,
                return_type="logits_and_cache",
                **({"logits_to_keep": 1} if last_only else {}),
            )

    def prefill(
        self,
        tokens: TokenIds,
        *,
        attention_mask: AttentionMask,
        mask: HeadMask | None = None,
        extra_hooks: Sequence[Hook] = (),
        chunk_tokens: int | None = None,
        cache: CacheSpec | None = None,
    ) -> tuple[Logits, Any]:
        """`step` from an empty cache with `last_only`, run in row chunks of at most `chunk_tokens`
        tokens (at least one row; default `CPU_PREFILL_CHUNK_TOKENS` on the CPU, no chunking
        elsewhere) whose caches are joined. Rows never interact, so this equals one forward over
        all rows; `extra_hooks` fire once per chunk, in row order.

        With `cache`, the prefill runs on the fast path (`workbench.fast_forward`: no bridge
        wrappers, attention without repeated keys, SDPA) in one forward and returns a
        `GrowingKVCache` laid out by `cache` (room for `capacity` positions; with `shared_below`,
        rows of the same prompt in different groups share the layers below it). Later `step`s on
        that cache stay on the fast path. `InputError` if the fast path cannot serve the mask
        and hooks (`fast_path_refusal`)."""
        rows, width = tokens.shape
        if mask is not None and mask.rows not in (1, rows):
            raise InputError(f"head mask has {mask.rows} rows but the batch has {rows}")
        if cache is not None:
            with torch.no_grad():
                return self.fast_forward.prefill(tokens, attention_mask, cache, mask=mask, extra_hooks=extra_hooks)
        if chunk_tokens is None:
            chunk_tokens = CPU_PREFILL_CHUNK_TOKENS if self.device.type == "cpu" else rows * width
        per_chunk = max(1, chunk_tokens // width)
        logits, caches = [], []
        for start in range(0, rows, per_chunk):
            stop = min(rows, start + per_chunk)
            chunk_mask = None if mask is None else mask.take(start, stop)
            chunk_logits, cache = self.step(
                tokens[start:stop],
                attention_mask=attention_mask[start:stop],
                mask=chunk_mask,
                extra_hooks=extra_hooks,
                last_only=True,
            )
            logits.append(chunk_logits)
            caches.append(cache)
        return torch.cat(logits), self.join_caches(caches)

    @functools.cached_property
    def fast_forward(self) -> FastForward:
        """The fast decoding path over this lens's model (built on first use, weights shared)."""
        return FastForward(self)

    def fast_path_refusal(self, mask: HeadMask | None = None, extra_hooks: Sequence[Hook] = ()) -> str | None:
        """Why the fast decoding path cannot run with `mask` and `extra_hooks` (None when it can)."""
        return self.fast_forward.refusal(mask, extra_hooks)

    def join_caches(self, caches: Sequence[Any]) -> Any:
        """One KV cache holding the rows of `caches` (from row chunks of one padded batch) in order."""
        return self.adapter.join_caches(caches)

    def select_cache_rows(self, past: Any, rows: torch.Tensor) -> Any:
        """Keep, repeat or reorder the rows of a KV cache: new row i is old row `rows[i]`. Changes
        `past` in place and returns it (callers use the return value, so that a cache type
        that cannot change in place can be swapped in)."""
        return self.adapter.select_cache_rows(past, rows)

    def capture(
        self,
        tokens: TokenIds | Sequence[int],
        *,
        attention_mask: AttentionMask | None = None,
        mask: HeadMask | None = None,
        layers: Sequence[int] | None = None,
    ) -> tuple[Logits, HeadOutputs]:
        """Logits and per-head outputs `z` of `layers` (default all), stacked as
        `[batch, pos, layer, head, d_head]`, with `mask` applied (captured after the mask)."""
        tokens = self.as_batch(tokens)
        layers = list(range(self.n_layers)) if layers is None else [int(layer) for layer in layers]
        for layer in layers:
            self.geometry.check_head(layer, 0)
        store: dict[int, torch.Tensor] = {}

        def recorder(layer: int) -> Callable[..., None]:
            def record(z: torch.Tensor, hook: Any) -> None:
                store[layer] = z.detach()

            return record

        # Recording hooks are added after the mask hooks, so they see the masked z.
        recorders = [(self.hook_name("z", layer), recorder(layer)) for layer in layers]
        with torch.no_grad(), self.intervene(mask, recorders):
            logits = self.bridge(tokens, attention_mask=attention_mask, return_type="logits")
        # Layers of a model split over devices hold their z on their own device.
        return logits, torch.stack([store[layer].to(logits.device) for layer in layers], dim=2)

    def mean_head_outputs(self, token_sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean `z` over all positions of the given sequences: `[layer, head, d_head]`, the
        reference activation of mean ablation."""
        total = torch.zeros(self.n_layers, self.n_heads, self.d_head, dtype=torch.float64, device=self.device)
        count = 0
        for sequence in token_sequences:
            _, z = self.capture(sequence)
            total += z[0].double().sum(dim=0).to(total.device)
            count += z.shape[1]
        if count == 0:
            raise InputError("mean activations need at least one non-empty sequence")
        return (total / count).float()

    # --- the tail runner ---------------------------------------------------------------------

    def tail_context(self, tokens: TokenIds | Sequence[int], *, attention_mask: AttentionMask | None = None) -> TailContext:
        """Run one clean forward and record every block's input residual and keyword arguments."""
        tokens = self.as_batch(tokens)
        residuals: list[Residual | None] = [None] * self.n_layers
        block_kwargs: list[dict[str, Any] | None] = [None] * self.n_layers
        handles = []

        def recorder(layer: int) -> Callable[..., None]:
            def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
                residuals[layer] = (args[0] if args else kwargs["hidden_states"]).detach()
                block_kwargs[layer] = self.adapter.tail_kwargs(kwargs)

            return record

        for layer, block in enumerate(self.bridge.blocks):
            handles.append(block.register_forward_pre_hook(recorder(layer), with_kwargs=True))
        try:
            with torch.no_grad():
                logits = self.bridge(tokens, attention_mask=attention_mask, use_cache=False, return_type="logits")
        finally:
            for handle in handles:
                handle.remove()
        return TailContext(residuals, block_kwargs, logits)  # type: ignore[arg-type]

    def run_tail(
        self,
        context: TailContext,
        start_layer: int,
        *,
        rows: int = 1,
        mask: HeadMask | None = None,
        positions: torch.Tensor | None = None,
        residual: Residual | None = None,
    ) -> Logits:
        """Logits from running blocks `start_layer..L-1` on the recorded residual (or `residual`),
        repeated over `rows` batch rows, with `mask` active; only at `positions` when given.

        TransformerLens 4.3's `start_at_layer` still executes the lower blocks; this calls the
        bridge's blocks directly, so hooks fire but blocks below `start_layer` cost nothing. Each
        block gets its own recorded keyword arguments (a sliding-window layer its windowed mask,
        each layer type its own position embeddings), and its input on its own device.
        """
        self.geometry.check_head(start_layer, 0)
        hidden = context.residuals[start_layer] if residual is None else residual
        if hidden.shape[0] == 1 and rows > 1:
            hidden = hidden.expand(rows, -1, -1)
        hidden = hidden.contiguous()
        with torch.no_grad(), self.intervene(mask):
            for layer in range(start_layer, self.n_layers):
                block = self.bridge.blocks[layer]
                device = _parameter_device(block)
                kwargs = {key: _moved(value, device) for key, value in context.block_kwargs[layer].items()}
                hidden = self.adapter.block_output(block(hidden.to(device), **kwargs))
            if positions is not None:
                hidden = hidden[:, positions.to(hidden.device)]
            return self.unembed(hidden)

    def unembed(self, hidden: Residual) -> Logits:
        """Final norm, unembedding and (where the model has one) the final logit soft-cap."""
        hidden = hidden.to(_parameter_device(self.bridge.ln_final))
        logits = self.bridge.unembed(self.bridge.ln_final(hidden))
        if self.final_logit_softcap:
            logits = torch.tanh(logits / self.final_logit_softcap) * self.final_logit_softcap
        return logits

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"Lens({self.name!r}: {g.n_layers} layers, {g.n_heads} query heads, {g.n_kv_heads} key-value heads, "
            f"d_head {g.d_head}, d_model {g.d_model}, context {g.n_ctx}, on {self.device})"
        )

    # --- the tail runner with less work (for ΔNLL engines) --------------------------------------

    # Families whose blocks are pre-norm as `finish_block` computes them; the others (Gemma's
    # post-attention and post-feed-forward norms) replay whole blocks in `run_tail_at`.
    FINISHED_BLOCK_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3"})

    def finish_block(
        self,
        context: TailContext,
        layer: int,
        hidden: Residual,
        *,
        head_outputs: HeadOutputs | None = None,
        positions: torch.Tensor | None = None,
    ) -> Float[torch.Tensor, "batch kept d_model"]:
        """Block `layer`'s output residual from its input `hidden`, only at `positions` when given.

        With `head_outputs` (the block's per-head `z`, `[batch, pos, head, d_head]`, e.g. recorded
        in a clean run) the attention is not recomputed: only its output projection runs, so hooks
        at `hook_z` and after still apply. Without, the attention runs on every position (later
        positions attend to all earlier ones) and only the MLP is restricted to `positions`. Call
        inside `intervene`. Only for pre-norm blocks, `h = x + attn(ln1(x))`, `out = h + mlp(ln2(h))`
        (`FINISHED_BLOCK_FAMILIES`).
        """
        if self.adapter.family not in self.FINISHED_BLOCK_FAMILIES:
            raise InputError(f"finish_block does not know the {self.adapter.family} block; replay the block instead")
        block = self.bridge.blocks[layer]
        device = _parameter_device(block)
        hidden = hidden.to(device)
        if head_outputs is None:
            kwargs = {
                k: _moved(v, device)
                for k, v in context.block_kwargs[layer].items()
                if k in ("attention_mask", "position_embeddings")
            }
            attention, _ = block.attn(hidden_states=block.ln1(hidden), **kwargs)
        else:
            attention = block.attn.hook_out(block.attn.o(head_outputs.to(device).flatten(-2)))
        if positions is not None:
            positions = positions.to(device)
            hidden, attention = hidden[:, positions], attention[:, positions]
        middle = hidden + attention
        return middle + block.mlp(block.ln2(middle))

    def run_tail_at(
        self,
        context: TailContext,
        start_layer: int,
        positions: torch.Tensor,
        *,
        rows: int = 1,
        mask: HeadMask | None = None,
        head_outputs: Float[torch.Tensor, "#rows pos head d_head"] | None = None,
    ) -> Float[torch.Tensor, "rows kept vocab"]:
        """`run_tail(context, start_layer, rows=rows, mask=mask, positions=positions)` with less work
        where the family's blocks allow (`finish_block`): the last block's MLP and the unembedding
        run only at `positions`, and with `head_outputs` (block `start_layer`'s clean per-head `z`)
        that block's attention is not recomputed. Exact when the mask leaves block `start_layer`'s
        attention pattern as in the clean run: masks at the head output or on residual slices, not
        `query-scale`."""
        self.geometry.check_head(start_layer, 0)
        if head_outputs is not None and mask is not None and mask.site == "query-scale":
            raise InputError("a query-scale mask changes the attention pattern; recorded head outputs cannot be reused")
        if self.adapter.family not in self.FINISHED_BLOCK_FAMILIES:
            return self.run_tail(context, start_layer, rows=rows, mask=mask, positions=positions)
        hidden = context.residuals[start_layer]
        hidden = (hidden.expand(rows, -1, -1) if hidden.shape[0] == 1 and rows > 1 else hidden).contiguous()
        if head_outputs is not None and head_outputs.shape[0] == 1 and rows > 1:
            head_outputs = head_outputs.expand(rows, -1, -1, -1)
        last = self.n_layers - 1
        with torch.no_grad(), self.intervene(mask):
            if head_outputs is not None:
                kept = positions if start_layer == last else None
                hidden = self.finish_block(context, start_layer, hidden, head_outputs=head_outputs, positions=kept)
                if start_layer == last:
                    return self.unembed(hidden)
                start_layer += 1
            for layer in range(start_layer, last):
                block = self.bridge.blocks[layer]
                device = _parameter_device(block)
                kwargs = {key: _moved(value, device) for key, value in context.block_kwargs[layer].items()}
                hidden = self.adapter.block_output(block(hidden.to(device), **kwargs))
            return self.unembed(self.finish_block(context, last, hidden, positions=positions))


def _parameter_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights live (the execution device of a block in a split model)."""
    return next(module.parameters()).device


def _moved(value: Any, device: torch.device) -> Any:
    """Tensors (also inside tuples, e.g. RoPE's (cos, sin)) moved to `device`; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_moved(item, device) for item in value)
    return value
