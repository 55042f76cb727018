"""The lens: the one activation and intervention abstraction over a TransformerLens bridge.

Every consumer (PCS scans, heatmaps, decoders, interactive studies) reads activations and applies
head masks through a `Lens`. It knows the head geometry, tokenizes (chat template without a
doubled BOS), captures per-head outputs (`blocks.{l}.attn.hook_z`), applies `HeadMask`s as hooks,
runs KV-cached steps with the mask still active, and runs the *tail* of the network from a cached
residual stream so that an intervention at layer l costs only layers >= l.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerBase

from workbench.errors import InputError
from workbench.masks import HeadGeometry, HeadMask
from workbench.skinny_linear import use_skinny_linear
from workbench.tensor_types import AttentionMask, ContextMask, HeadOutputs, Logits, Residual, TokenIds

Hook = tuple[str, Callable[..., Any]]

# On the CPU a prefill runs in row chunks of about this many tokens: long prompts in one big batch
# make the eager attention's [rows, heads, pos, pos] tensors outgrow the caches (measured in
# benchmarks/RESULTS.md, "Decoding"); short prompts still go in one forward. Other devices prefill
# all rows at once.
CPU_PREFILL_CHUNK_TOKENS = 2048


def z_hook_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


SITE_HOOKS: dict[str, Callable[[int], str]] = {
    "head-output": z_hook_name,
    "query-scale": lambda layer: f"blocks.{layer}.attn.hook_q",
    "resid-slice": lambda layer: f"blocks.{layer}.attn.o.hook_out",
}


@dataclass
class TailContext:
    """What the tail runner needs to restart a clean forward at any layer: each block's input
    residual and the keyword arguments (position embeddings, attention mask, ...) it received."""

    residuals: list[Residual]
    block_kwargs: list[dict[str, Any]]
    logits: Logits


class Lens:
    """A TransformerLens bridge plus its tokenizer, head geometry and intervention machinery."""

    def __init__(self, bridge: TransformerBridge, tokenizer: PreTrainedTokenizerBase, name: str):
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.name = name
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
        self.final_logit_softcap = getattr(text_config, "final_logit_softcapping", None)

    @classmethod
    def from_hf(
        cls, hf_model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, name: str, *, skinny_linear: bool = True
    ) -> Lens:
        """Wrap a Hugging Face causal LM (in place) as a bridge; never touches the hub.

        `skinny_linear` switches its linear layers to `SkinnyLinear` (faster decoding steps on the
        CPU, see `workbench.skinny_linear`); inputs of many rows are computed as before."""
        overrides = None
        if not getattr(hf_model.config, "architectures", None):
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
        if skinny_linear:
            use_skinny_linear(bridge.original_model)
        for parameter in bridge.parameters():
            parameter.requires_grad_(False)
        return cls(bridge, tokenizer, name)

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
        """End-of-sequence and end-of-turn tokens (ChatML `<|im_end|>`, Llama-3 `<|eot_id|>`, ...)."""
        ids = {self.tokenizer.eos_token_id}
        for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return {i for i in ids if i is not None}

    # --- tokenization ------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_text(self, user: str, system: str | None = None) -> str:
        """The chat-template text of one user turn, ending where the assistant's reply begins."""
        if not self.has_chat_template:
            raise InputError(f"model {self.name!r} has no chat template; use a plain (few-shot) prompt format")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of `text`. Chat-template text already carries its own special tokens, so
        `add_bos` defaults to False (the template must not get a second BOS)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
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
        mask = mask.to(self.device)
        return [(SITE_HOOKS[mask.site](layer), self._site_hook(mask, layer)) for layer in mask.active_layers()]

    def _site_hook(self, mask: HeadMask, layer: int) -> Callable[..., torch.Tensor]:
        scale_by_row = mask.scale[:, layer, :]  # [rows, head]
        z_ref = None if mask.z_ref is None else mask.z_ref[layer]  # [head, d_head]
        n_heads = self.geometry.n_heads

        def rows_for(activation: torch.Tensor) -> torch.Tensor:
            batch = activation.shape[0]
            if scale_by_row.shape[0] not in (1, batch):
                raise InputError(f"head mask has {scale_by_row.shape[0]} rows but the batch has {batch}")
            return scale_by_row.to(activation.dtype)

        def per_head(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, head, d]
            scale = rows_for(activation)[:, None, :, None]
            if z_ref is None:
                return activation * scale
            # z_ref + s·(z − z_ref), written so that s = 1 gives z and s = 0 gives z_ref bit-exactly
            # (identity rows beside masked rows must equal an unmasked run).
            return activation * scale + z_ref.to(activation.dtype)[None, None] * (1 - scale)

        def residual_slices(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, d_model]
            batch, pos, d_model = activation.shape
            sliced = activation.reshape(batch, pos, n_heads, d_model // n_heads)
            return (sliced * rows_for(activation)[:, None, :, None]).reshape(batch, pos, d_model)

        return residual_slices if mask.site == "resid-slice" else per_head

    @contextmanager
    def intervene(self, mask: HeadMask | None, extra_hooks: Sequence[Hook] = ()) -> Iterator[Lens]:
        """Apply `mask` (and any extra hooks) to every forward run inside the block."""
        with self.bridge.hooks(fwd_hooks=self.mask_hooks(mask) + list(extra_hooks)):
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
        unembedding of a whole prompt) and the updated cache.
        """
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
    ) -> tuple[Logits, Any]:
        """`step` from an empty cache with `last_only`, run in row chunks of at most `chunk_tokens`
        tokens (at least one row; default `CPU_PREFILL_CHUNK_TOKENS` on the CPU, no chunking
        elsewhere) whose caches are joined. Rows never interact, so this equals one forward over
        all rows; `extra_hooks` fire once per chunk, in row order."""
        rows, width = tokens.shape
        if mask is not None and mask.rows not in (1, rows):
            raise InputError(f"head mask has {mask.rows} rows but the batch has {rows}")
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
        return torch.cat(logits), _join_caches(caches)

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
        recorders = [(z_hook_name(layer), recorder(layer)) for layer in layers]
        with torch.no_grad(), self.intervene(mask, recorders):
            logits = self.bridge(tokens, attention_mask=attention_mask, return_type="logits")
        return logits, torch.stack([store[layer] for layer in layers], dim=2)

    def mean_head_outputs(self, token_sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mean `z` over all positions of the given sequences: `[layer, head, d_head]`, the
        reference activation of mean ablation."""
        total = torch.zeros(self.n_layers, self.n_heads, self.d_head, dtype=torch.float64, device=self.device)
        count = 0
        for sequence in token_sequences:
            _, z = self.capture(sequence)
            total += z[0].double().sum(dim=0)
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
                kwargs = dict(kwargs)
                residuals[layer] = (args[0] if args else kwargs.pop("hidden_states")).detach()
                # The tail reruns blocks; a KV cache would be appended to twice.
                block_kwargs[layer] = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values")}
                block_kwargs[layer]["use_cache"] = False

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
        bridge's blocks directly, so hooks fire but blocks below `start_layer` cost nothing.
        """
        self.geometry.check_head(start_layer, 0)
        hidden = context.residuals[start_layer] if residual is None else residual
        if hidden.shape[0] == 1 and rows > 1:
            hidden = hidden.expand(rows, -1, -1)
        hidden = hidden.contiguous()
        with torch.no_grad(), self.intervene(mask):
            for layer in range(start_layer, self.n_layers):
                output = self.bridge.blocks[layer](hidden, **context.block_kwargs[layer])
                hidden = output[0] if isinstance(output, tuple) else output
            if positions is not None:
                hidden = hidden[:, positions]
            return self.unembed(hidden)

    def unembed(self, hidden: Residual) -> Logits:
        """Final norm, unembedding and (where the model has one) the final logit soft-cap."""
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
        inside `intervene`. Written for pre-norm blocks (Llama: `h = x + attn(ln1(x))`,
        `out = h + mlp(ln2(h))`).
        """
        block = self.bridge.blocks[layer]
        if head_outputs is None:
            kwargs = {k: v for k, v in context.block_kwargs[layer].items() if k in ("attention_mask", "position_embeddings")}
            attention, _ = block.attn(hidden_states=block.ln1(hidden), **kwargs)
        else:
            attention = block.attn.hook_out(block.attn.o(head_outputs.flatten(-2)))
        if positions is not None:
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
        """`run_tail(context, start_layer, rows=rows, mask=mask, positions=positions)` with less work:
        the last block's MLP and the unembedding run only at `positions`, and with `head_outputs`
        (block `start_layer`'s clean per-head `z`) that block's attention is not recomputed. Exact
        when the mask leaves block `start_layer`'s attention pattern as in the clean run, i.e. for
        masks at the head output or on residual slices, not for `query-scale`."""
        self.geometry.check_head(start_layer, 0)
        if head_outputs is not None and mask is not None and mask.site == "query-scale":
            raise InputError("a query-scale mask changes the attention pattern; recorded head outputs cannot be reused")
        hidden = context.residuals[start_layer]
        hidden = (hidden.expand(rows, -1, -1) if hidden.shape[0] == 1 and rows > 1 else hidden).contiguous()
        if head_outputs is not None and head_outputs.shape[0] == 1 and rows > 1:
            head_outputs = head_outputs.expand(rows, -1, -1, -1)
        last = self.n_layers - 1
        positions = positions.to(self.device)
        with torch.no_grad(), self.intervene(mask):
            for layer in range(start_layer, last):
                if layer == start_layer and head_outputs is not None:
                    hidden = self.finish_block(context, layer, hidden, head_outputs=head_outputs)
                    continue
                output = self.bridge.blocks[layer](hidden, **context.block_kwargs[layer])
                hidden = output[0] if isinstance(output, tuple) else output
            reuse = head_outputs if start_layer == last else None
            return self.unembed(self.finish_block(context, last, hidden, head_outputs=reuse, positions=positions))


def _join_caches(caches: list[Any]) -> Any:
    """One KV cache holding the rows of `caches` in order (their layers share a length)."""
    joined = caches[0]
    if len(caches) == 1:
        return joined
    for index, layer in enumerate(joined.layers):
        if layer.is_initialized:
            layer.keys = torch.cat([cache.layers[index].keys for cache in caches])
            layer.values = torch.cat([cache.layers[index].values for cache in caches])
    return joined
