"""What the workbench needs to know about one model family, beyond what TransformerLens bridges.

A `ModelAdapter` answers, for the lens, every question whose answer depends on the family:

- **hook names**: where a head's output (`z`), query, attention pattern, residual stream and the
  attention block's outputs can be read or changed (`hook_name(kind, layer)`);
- **tokens**: the stop tokens (end of sequence, end of turn), whether plain text must start with
  a BOS, and how a system prompt enters the chat template (some templates have no system role);
- **the tail runner**: how a block is called again from a recorded residual (which recorded
  keyword arguments to keep: each block's own attention mask, which differs between sliding-window
  and full-attention layers, and its own position embeddings, which differ where layer types use
  different RoPE bases) and how its output is read;
- **KV caches**: how row-chunked caches are joined, and how rows are selected, repeated or reordered
  (sliding-window layers keep only the last `window − 1` positions and a running length);
- **final-logit soft-capping** (Gemma-2).

The cache operations are the one seam between the decoding loop and the cache object. A cache is
opaque to every caller: it is made by `Lens.step`/`Lens.prefill` and changed only through
`join_caches` and `select_cache_rows`. Two kinds exist: Transformers' `DynamicCache` (the bridge's
steps) and `workbench.engine.kv_cache.GrowingKVCache` (the fast path's: preallocated, lower layers
shareable by row groups), which carries its own join and row selection; callers do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from workbench.engine.kv_cache import GrowingKVCache
from workbench.errors import InputError

# TransformerLens 4.3 bridge hook points, by what they carry (`{layer}` is the block index).
HOOKS: dict[str, str] = {
    "z": "blocks.{layer}.attn.hook_z",  # per-head output, the output projection's input [b, pos, head, d_head]
    "q": "blocks.{layer}.attn.hook_q",  # per-head query before RoPE [b, pos, head, d_head]
    "q_normed": "blocks.{layer}.attn.hook_q_normed",  # after a per-head query norm [b, head, pos, d_head]
    "k": "blocks.{layer}.attn.hook_k",  # per-KV-head key before RoPE
    "v": "blocks.{layer}.attn.hook_v",  # per-KV-head value
    "pattern": "blocks.{layer}.attn.hook_pattern",  # attention probabilities [b, head, query, key]
    "attn_scores": "blocks.{layer}.attn.hook_attn_scores",  # scores before the softmax
    "o_out": "blocks.{layer}.attn.o.hook_out",  # the output projection's output, before any post-attention norm
    "attn_out": "blocks.{layer}.hook_attn_out",  # what the attention block adds to the residual stream
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
}

# Hook points that only families with query/key norms have.
OPTIONAL_HOOKS = ("q_normed",)

# Recorded block keyword arguments that must not be replayed: the tail reruns blocks without a cache.
NOT_REPLAYED = ("hidden_states", "past_key_values", "cache_position")


@dataclass(frozen=True)
class ModelAdapter:
    """One model family. Family modules create one instance each and list it in the registry."""

    family: str
    # Hugging Face causal-LM classes of the family, and the GGUF `general.architecture` names.
    hf_classes: tuple[str, ...]
    gguf_architectures: tuple[str, ...] = ()
    # End-of-turn tokens of the family's chat formats, added to the tokenizer's EOS and the
    # generation config's EOS ids wherever the vocabulary has them.
    end_of_turn_tokens: tuple[str, ...] = ()
    # Whether the family has a BOS token at all (Qwen has none: TransformerLens then sets the
    # tokenizer's BOS to its EOS, which must never be prepended).
    has_bos: bool = True
    # Plain (non-chat) text must start with BOS: the model was trained that way and degrades without.
    requires_bos: bool = False
    # Whether the chat template takes a "system" message; when not, the system text opens the user turn.
    system_role: bool = True
    # Extra keyword arguments for `apply_chat_template` (e.g. Qwen3's thinking switch).
    chat_template_kwargs: tuple[tuple[str, Any], ...] = ()
    # The config attribute holding the final-logit soft-cap, if the family has one.
    softcap_attribute: str | None = None
    # Where "the query" of a head is scaled (the `query-scale` site) and the head axis there. With
    # a per-head query norm (Qwen3, Gemma-3) it must be after the norm, which would undo a scale.
    query_hook: str = "q"
    query_head_axis: int = 2
    # The head axis of the Hugging Face query norm's output (the fast path's `q_normed` site):
    # Qwen3 norms `[batch, pos, head, d_head]`, Gemma-3 `[batch, head, pos, d_head]`.
    hf_q_norm_head_axis: int = 2

    # --- hook names ----------------------------------------------------------------------------

    def hook_name(self, kind: str, layer: int) -> str:
        if kind not in HOOKS:
            raise InputError(f"unknown hook kind {kind!r}; choose one of {', '.join(HOOKS)}")
        return HOOKS[kind].format(layer=int(layer))

    def check_hooks(self, hook_names: Sequence[str]) -> None:
        """Raise if the bridge lacks a hook point this adapter names (a TransformerLens change)."""
        kinds = [kind for kind in HOOKS if kind not in OPTIONAL_HOOKS] + [self.query_hook]
        missing = [name for name in (self.hook_name(kind, 0) for kind in kinds) if name not in hook_names]
        if missing:
            raise InputError(f"the {self.family} bridge has no hook point {', '.join(missing)}")

    # --- tokens --------------------------------------------------------------------------------

    def stop_token_ids(self, tokenizer: PreTrainedTokenizerBase, generation_eos: int | Sequence[int] | None) -> set[int]:
        """EOS of the tokenizer and of the generation config, and the family's end-of-turn tokens."""
        ids: set[int] = set()
        for eos in (tokenizer.eos_token_id, generation_eos):
            if isinstance(eos, int):
                ids.add(eos)
            elif eos is not None:
                ids.update(int(i) for i in eos)
        for token in self.end_of_turn_tokens:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                ids.add(token_id)
        return ids

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Make the tokenizer state the family's BOS policy, which plain-format encoding follows."""
        if self.requires_bos and tokenizer.bos_token_id is not None and not getattr(tokenizer, "add_bos_token", False):
            tokenizer.add_bos_token = True

    def chat_messages(self, user: str, system: str | None) -> list[dict[str, str]]:
        if not system:
            return [{"role": "user", "content": user}]
        if not self.system_role:
            return [{"role": "user", "content": f"{system}\n\n{user}"}]
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    # --- the tail runner -----------------------------------------------------------------------

    def tail_kwargs(self, recorded: dict[str, Any]) -> dict[str, Any]:
        """A block's keyword arguments as recorded in a clean forward, ready to be replayed: each
        layer keeps its own attention mask and position embeddings; the cache is left out."""
        kwargs = {key: value for key, value in recorded.items() if key not in NOT_REPLAYED}
        kwargs["use_cache"] = False
        return kwargs

    def block_output(self, output: Any) -> torch.Tensor:
        """The residual stream a block returns (a tensor, or the first item of a tuple)."""
        return output[0] if isinstance(output, tuple) else output

    # --- KV caches -----------------------------------------------------------------------------

    def join_caches(self, caches: Sequence[Any]) -> Any:
        """One cache holding the rows of `caches` in order. The caches come from row chunks of one
        padded batch, so every layer has the same length (and sliding-window layers the same
        running length) in each; the first cache is extended in place and returned."""
        if isinstance(caches[0], GrowingKVCache):
            return GrowingKVCache.join(caches)
        joined = caches[0]
        if len(caches) == 1:
            return joined
        for index, layer in enumerate(joined.layers):
            if not layer.is_initialized:
                continue
            parts = [cache.layers[index] for cache in caches]
            lengths = {getattr(part, "cumulative_length", part.keys.shape[-2]) for part in parts}
            if len(lengths) != 1:
                raise ValueError(f"cannot join caches of different lengths {sorted(lengths)} at layer {index}")
            layer.keys = torch.cat([part.keys for part in parts])
            layer.values = torch.cat([part.values for part in parts])
        return joined

    def select_cache_rows(self, cache: Any, rows: torch.Tensor) -> Any:
        """Keep, repeat or reorder the batch rows of `cache` (new row i = old row `rows[i]`), in
        place; returns the cache. Each layer's index goes to that layer's device, so a model
        split over several devices works."""
        if isinstance(cache, GrowingKVCache):
            return cache.select_rows(rows)
        for layer in cache.layers:
            if layer.is_initialized:
                layer.reorder_cache(rows)
        return cache

    # --- logits --------------------------------------------------------------------------------

    def final_logit_softcap(self, text_config: Any) -> float | None:
        return getattr(text_config, self.softcap_attribute, None) if self.softcap_attribute else None
