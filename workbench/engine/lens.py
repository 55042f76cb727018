"""The lens: the one activation and intervention abstraction over a TransformerLens bridge.

Every consumer (PCS scans, heatmaps, decoders, the studio, interactive studies) runs the model
through a `Lens`. It knows the head geometry, tokenizes (chat template without a doubled BOS) and
has ONE way to run the model, `Lens.run`: tokens, a head mask and any hooks, where to start and an
optional KV cache in; logits, the cache and the recorded activations out. Behind it sit

- the bridge's forward (TransformerLens hook points everywhere; with `grad=True` differentiable);
- the restart from a layer (`workbench.engine.tail`: a clean forward recorded once, blocks from l up);
- KV-cached steps through the bridge, or on the fast path (`workbench.engine.fast_path`: the
  unwrapped Hugging Face model, a preallocated cache), chosen by the cache object.

Masks and hooks act identically on every path (`workbench.engine.interventions`). Everything that
depends on the model family comes from the lens's `ModelAdapter` (`workbench.engine.adapters`).
Interventions follow the device of the activation they change, so a model split over several
devices (`device_map`) works.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from transformer_lens import ActivationCache
from transformer_lens.model_bridge import TransformerBridge
from transformers import DynamicCache, PreTrainedTokenizerBase

from workbench.engine.adapters import ModelAdapter, adapter_for
from workbench.engine.fast_path import FastPath
from workbench.engine.interventions import Hook, Recording, mask_hooks, site_hook_name
from workbench.engine.kv_cache import CacheSpec, GrowingKVCache
from workbench.engine.masks import HeadGeometry, HeadMask
from workbench.engine.numerics import serialize_small_products
from workbench.engine.tail import Restart, TailContext, record_context, run_tail, unembed
from workbench.errors import InputError
from workbench.tensor_types import AttentionMask, ContextMask, HeadOutputs, Logits, Residual, TokenIds

# On the CPU a prefill runs in row chunks of about this many tokens: long prompts in one big batch
# make the eager attention's [rows, heads, pos, pos] tensors outgrow the caches (measured in
# benchmarks/RESULTS.md, "Decoding"); short prompts still go in one forward. Other devices prefill
# all rows at once.
CPU_PREFILL_CHUNK_TOKENS = 2048
FINAL_NORM_INPUT = "ln_final.hook_in"


@dataclass
class Forward:
    """What one run of the model gives: the logits (of the positions asked for), the KV cache (when
    the run used one) and the activations recorded at the hook points asked for."""

    logits: Logits
    cache: Any = None
    recorded: dict[str, torch.Tensor] = field(default_factory=dict)


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
        config: Any = bridge.original_model.config  # a Transformers config: its fields differ per family
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
        serialize_small_products(bridge.original_model)  # the same sums at any CPU thread count (`workbench.engine.numerics`)

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
        `workbench.engine.adapters.HOOKS`) in block `layer`."""
        return self.adapter.hook_name(kind, layer)

    def site_hook_name(self, site: str, layer: int) -> str:
        """The hook point an intervention site (`HeadMask.site`) acts on in block `layer`."""
        return site_hook_name(self.adapter, site, layer)

    # --- tokenization ------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return self.geometry.n_ctx

    @property
    def plain_text_bos(self) -> bool:
        """Whether plain text starts with a BOS token (the tokenizer's own `add_bos_token`)."""
        return bool(getattr(self.tokenizer, "add_bos_token", False))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_text(self, user: str, system: str | None = None) -> str:
        """The chat-template text of one user turn, ending where the assistant's reply begins."""
        if not self.has_chat_template:
            raise InputError(f"model {self.name!r} has no chat template; use a plain (few-shot) prompt format")
        text = self.tokenizer.apply_chat_template(
            self.adapter.chat_messages(user, system),
            tokenize=False,
            add_generation_prompt=True,
            **dict(self.adapter.chat_template_kwargs),
        )
        assert isinstance(text, str)  # tokenize=False gives the text
        return text

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
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

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
        return mask_hooks(mask, self.geometry, self.adapter)

    @contextmanager
    def intervene(self, mask: HeadMask | None, extra_hooks: Sequence[Hook] = ()) -> Iterator[Lens]:
        """Apply `mask` (and any extra hooks) to every bridge forward run inside the block (for code
        that calls the bridge itself). With nothing to apply, the bridge's hook context
        (milliseconds per entry) is not entered at all."""
        hooks = self.mask_hooks(mask) + list(extra_hooks)
        if not hooks:
            yield self
            return
        with self.bridge.hooks(fwd_hooks=hooks):
            yield self

    # --- the one way to run the model ---------------------------------------------------------

    def run(
        self,
        tokens: TokenIds | Sequence[int] | None = None,
        *,
        mask: HeadMask | None = None,
        hooks: Sequence[Hook] = (),
        record: Recording | Sequence[str] = (),
        attention_mask: AttentionMask | ContextMask | None = None,
        start: Restart | None = None,
        positions: torch.Tensor | None = None,
        cache: Any = None,
        last_only: bool = False,
        grad: bool = False,
    ) -> Forward:
        """Run the model once with `mask` and `hooks` active (mask hooks first) and `record`'s hook
        points recorded (after both).

        - `start`: restart at a layer from a recorded clean run instead of running `tokens`
          (`workbench.engine.tail`); `positions`: the positions whose logits are wanted (all by
          default; the restart then skips the last MLP's other positions);
        - `cache`: None runs without a KV cache; a `CacheSpec` prefills a new fast-path cache and a
          `GrowingKVCache` continues it (`workbench.engine.fast_path`); any other Transformers
          cache (e.g. a new `DynamicCache()`) runs the step through the bridge. `attention_mask`
          then spans the cached and the new positions; `last_only` keeps the last position's logits;
        - `grad`: build the autograd graph (record with `Recording(..., differentiable=True)` to
          differentiate with respect to activations).
        """
        recording = record if isinstance(record, Recording) else Recording(record)
        extra = [*hooks, *recording.hooks]
        every = [*self.mask_hooks(mask), *extra]
        with torch.enable_grad() if grad else torch.no_grad():
            if start is not None:
                self.geometry.check_head(start.layer, 0)
                changes_pattern = mask is not None and mask.site == "query-scale"
                padded = start.context.attention is not None and not bool(start.context.attention.all())
                refusal = (
                    "it does not differentiate"
                    if grad
                    else "the tokens are padded"
                    if padded
                    else self.fast_path.refusal(None, every)
                )
                twin = None if refusal else self.fast_path
                if twin is None and not start.context.block_kwargs:
                    raise InputError(f"this context was recorded on the fast path, which cannot run the restart: {refusal}")
                logits = run_tail(self.bridge, self.adapter, start, every, positions=positions, softcap=self.final_logit_softcap,
                                  site_changes_pattern=changes_pattern, twin=twin)  # fmt: skip
                return Forward(logits, None, recording.store)
            if tokens is None:
                raise ValueError("a run needs tokens unless it restarts from a layer (start=...)")
            tokens = self.as_batch(tokens)
            if mask is not None and mask.rows not in (1, tokens.shape[0]):
                raise InputError(f"head mask has {mask.rows} rows but the batch has {tokens.shape[0]}")
            if isinstance(cache, (CacheSpec, GrowingKVCache)):
                return self._fast(tokens, cache, attention_mask, mask, extra, last_only, recording)
            if cache is not None:
                with self._hooked(every):
                    logits, past = self.bridge(tokens, attention_mask=attention_mask, past_key_values=cache, use_cache=True,
                                               return_type="logits_and_cache", **({"logits_to_keep": 1} if last_only else {}))  # fmt: skip
                return Forward(logits, past, recording.store)
            if positions is not None:  # only these positions reach the final norm and the unembedding
                kept = positions.to(self.device)
                every.append((FINAL_NORM_INPUT, lambda residual, hook: residual[:, kept]))
            with self._hooked(every):
                logits = self.bridge(tokens, attention_mask=attention_mask, return_type="logits")
            return Forward(logits, None, recording.store)

    def _fast(
        self,
        tokens: TokenIds,
        cache: CacheSpec | GrowingKVCache,
        attention_mask: Any,
        mask: HeadMask | None,
        hooks: list[Hook],
        last_only: bool,
        recording: Recording,
    ) -> Forward:
        """A prefill (new cache laid out by a `CacheSpec`) or a step on the fast path."""
        if isinstance(cache, CacheSpec):
            logits, grown = self.fast_path.prefill(tokens, attention_mask, cache, mask=mask, extra_hooks=hooks)
            return Forward(logits, grown, recording.store)
        if attention_mask is None:
            attention_mask = torch.ones(tokens.shape[0], cache.length + tokens.shape[1], dtype=torch.long, device=tokens.device)
        logits = self.fast_path.step(tokens, cache, attention_mask, mask=mask, extra_hooks=hooks, last_only=last_only)
        return Forward(logits, cache, recording.store)

    def _hooked(self, hooks: Sequence[Hook]) -> Any:
        """The bridge's hook context (not entered without hooks: it costs milliseconds per entry)."""
        return self.bridge.hooks(fwd_hooks=list(hooks)) if hooks else contextlib.nullcontext()

    # --- conveniences over `run` ---------------------------------------------------------------

    def forward(
        self,
        tokens: TokenIds | Sequence[int],
        *,
        attention_mask: AttentionMask | None = None,
        mask: HeadMask | None = None,
    ) -> Logits:
        """Full-sequence logits with `mask` applied."""
        return self.run(tokens, attention_mask=attention_mask, mask=mask).logits

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
        forward = self.run(tokens, attention_mask=attention_mask, mask=mask, hooks=extra_hooks, last_only=last_only,
                           cache=DynamicCache() if past is None else past)  # fmt: skip
        return forward.logits, forward.cache

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

        With `cache`, the prefill runs on the fast path (no bridge wrappers, attention without
        repeated keys, SDPA) in one forward and returns a `GrowingKVCache` laid out by `cache` (room
        for `capacity` positions; with `shared_below`, rows of the same prompt in different groups
        share the layers below it). Later `step`s on that cache stay on the fast path.
        `InputError` if the fast path cannot serve the mask and hooks (`fast_path_refusal`)."""
        rows, width = tokens.shape
        if mask is not None and mask.rows not in (1, rows):
            raise InputError(f"head mask has {mask.rows} rows but the batch has {rows}")
        if cache is not None:
            forward = self.run(tokens, attention_mask=attention_mask, mask=mask, hooks=extra_hooks, cache=cache)
            return forward.logits, forward.cache
        if chunk_tokens is None:
            chunk_tokens = CPU_PREFILL_CHUNK_TOKENS if self.device.type == "cpu" else rows * width
        per_chunk = max(1, chunk_tokens // width)
        logits, caches = [], []
        for begin in range(0, rows, per_chunk):
            end = min(rows, begin + per_chunk)
            chunk_mask = None if mask is None else mask.take(begin, end)
            chunk_logits, chunk_cache = self.step(tokens[begin:end], attention_mask=attention_mask[begin:end], mask=chunk_mask,
                                                  extra_hooks=extra_hooks, last_only=True)  # fmt: skip
            logits.append(chunk_logits)
            caches.append(chunk_cache)
        return torch.cat(logits), self.join_caches(caches)

    @functools.cached_property
    def fast_path(self) -> FastPath:
        """The fast decoding path over this lens's model (built on first use, weights shared)."""
        return FastPath(self.bridge.original_model, self.adapter, self.geometry, self.final_logit_softcap)

    def fast_path_refusal(self, mask: HeadMask | None = None, extra_hooks: Sequence[Hook] = ()) -> str | None:
        """Why the fast decoding path cannot run with `mask` and `extra_hooks` (None when it can)."""
        return self.fast_path.refusal(mask, extra_hooks)

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
        layers = list(range(self.n_layers)) if layers is None else [int(layer) for layer in layers]
        for layer in layers:
            self.geometry.check_head(layer, 0)
        names = [self.hook_name("z", layer) for layer in layers]
        forward = self.run(tokens, attention_mask=attention_mask, mask=mask, record=names)
        # Layers of a model split over devices hold their z on their own device.
        return forward.logits, torch.stack([forward.recorded[name].to(forward.logits.device) for name in names], dim=2)

    def run_with_cache(
        self,
        tokens: TokenIds | Sequence[int],
        *,
        mask: HeadMask | None = None,
        hooks: Sequence[Hook] = (),
        names_filter: str | Sequence[str] | Callable[[str], bool] | None = None,
        attention_mask: AttentionMask | None = None,
    ) -> tuple[Logits, ActivationCache]:
        """TransformerLens's own `run_with_cache` with `mask` and `hooks` active: the logits and an
        `ActivationCache` of the hook points `names_filter` picks (TransformerLens's names and filter
        forms; default every hook point), recorded after the mask and the hooks."""
        names = list(names_filter) if isinstance(names_filter, (list, tuple)) else names_filter
        with torch.no_grad(), self._hooked([*self.mask_hooks(mask), *hooks]):
            return self.bridge.run_with_cache(self.as_batch(tokens), names_filter=names, attention_mask=attention_mask)

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

    def tail_context(
        self,
        tokens: TokenIds | Sequence[int],
        *,
        attention_mask: AttentionMask | None = None,
        hooks: Sequence[Hook] = (),
        fast: bool = False,
    ) -> TailContext:
        """Run one clean forward (`hooks` active, e.g. recorders) and record every block's input
        residual and keyword arguments: what `Restart` starts from. `fast`: run it on the fast path
        (SDPA; unpadded tokens, hooks it serves), so that the clean run and the restarts, which run
        there too, are one computation; restarts from such a context must run on the fast path."""
        tokens = self.as_batch(tokens)
        if not fast:
            return record_context(self.bridge, self.adapter, tokens, attention_mask, hooks)
        refusal = self.fast_path.refusal(None, hooks)
        if refusal or (attention_mask is not None and not bool(attention_mask.all())):
            raise InputError(f"the fast path cannot record this clean run: {refusal or 'the tokens are padded'}")
        inputs: list[Residual] = []
        with torch.no_grad():
            logits = self.fast_path.tail(self.fast_path.embed(tokens), 0, hooks, inputs=inputs)
        return TailContext(inputs, [], logits)

    def run_tail(
        self,
        context: TailContext,
        start_layer: int,
        *,
        rows: int = 1,
        mask: HeadMask | None = None,
        positions: torch.Tensor | None = None,
        residual: Float[torch.Tensor, "#rows pos d_model"] | None = None,
        head_outputs: Float[torch.Tensor, "#rows pos head d_head"] | None = None,
        hooks: Sequence[Hook] = (),
    ) -> Float[torch.Tensor, "rows kept vocab"]:
        """`run(start=Restart(...))`: logits of blocks `start_layer..L-1` on the recorded residual (or
        `residual`), repeated over `rows` batch rows, with `mask` active; only at `positions` when given."""
        restart = Restart(context, start_layer, rows=rows, residual=residual, head_outputs=head_outputs)
        return self.run(start=restart, mask=mask, hooks=hooks, positions=positions).logits

    def unembed(self, hidden: Residual) -> Logits:
        """Final norm, unembedding and (where the model has one) the final logit soft-cap."""
        return unembed(self.bridge, hidden, self.final_logit_softcap)

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"Lens({self.name!r}: {g.n_layers} layers, {g.n_heads} query heads, {g.n_kv_heads} key-value heads, "
            f"d_head {g.d_head}, d_model {g.d_model}, context {g.n_ctx}, on {self.device})"
        )
