"""The one generation loop: every decoder runs on it, so comparisons are fair.

Prompts (token-id lists, already chat-templated) are sorted by length and cut into batches.
Each batch is left-padded; each prompt occupies `groups` rows (one per pass of its decoder),
laid out group by group. The loop prefills once with every row's head mask active, then takes
KV-cached one-token steps: the decoder turns the last-position logits into scores, a token is
chosen (argmax or seeded sampling) and fed to all rows of its prompt. A prompt stops at a stop
token of the model (end of turn / EOS), at a stop string, or after `max_new_tokens`; finished
prompts leave the batch (their cache rows are dropped), so a long answer does not keep short
ones computing.

Token ids of a generation include its final stop token when it stopped on one; its text has
special tokens removed and ends before the stop string when it stopped on one. Prompts must
leave room for `max_new_tokens` within the model context (no silent truncation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from tqdm.auto import tqdm

from workbench.decoding.base import Decoder, DecoderRun, Prompts, StepScores
from workbench.decoding.contrast import entropy
from workbench.decoding.greedy import Greedy
from workbench.decoding.sampling import Sampling, choose_tokens
from workbench.engine.kv_cache import CacheSpec, GrowingKVCache
from workbench.engine.masks import HeadMask
from workbench.engine.numerics import products_on_every_thread
from workbench.errors import InputError
from workbench.tensor_types import AttentionMask, ContextMask, StepLogits, TokenIds

if TYPE_CHECKING:
    from workbench.engine.lens import Hook, Lens

StopReason = Literal["eos", "stop_string", "max_new_tokens"]
TOP_TOKENS = 5


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    stop_reason: StopReason
    steps: list[dict[str, Any]] | None = None


def generate(
    lens: Lens,
    prompts: Prompts,
    decoder: Decoder | None = None,
    contrast_prompts: Prompts | None = None,
    max_new_tokens: int = 32,
    sampling: Sampling | None = None,
    stop_strings: Sequence[str] = (),
    batch_size: int = 8,
    diagnostics: bool = False,
    progress: bool = False,
    use_cache: bool = True,
    stop_at_eos: bool = True,
    fast_path: bool = True,
    hooks: Sequence[Hook] = (),
) -> list[Generation]:
    """Continue every prompt with `decoder` (default `Greedy()`); one `Generation` per prompt, in order.

    `contrast_prompts` are the prompts without the user's profile (CAD needs them; other decoders
    ignore them). `diagnostics` records, per step, γ, entropies and the top tokens of each pass.
    `use_cache=False` recomputes the whole sequence every step (a slow check of the cache);
    `stop_at_eos=False` ignores the model's stop tokens (benchmarks that need fixed lengths).
    The cached steps run on the lens's fast path (`workbench.engine.fast_path`) unless `fast_path=False`
    or the path cannot serve the decoder's masks and hooks; then they run through the bridge.
    `hooks` (TransformerLens-style `(name, fn)`) act in every forward of every row, after the
    decoder's masks and hooks.
    """
    decoder = Greedy() if decoder is None else decoder
    prompts = _checked_prompts(lens, prompts, "prompts", max_new_tokens)
    if contrast_prompts is not None:
        contrast_prompts = _checked_prompts(lens, contrast_prompts, "contrast_prompts", max_new_tokens)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if any(not isinstance(stop, str) or not stop for stop in stop_strings):
        raise InputError(f"stop_strings must be non-empty strings, got {list(stop_strings)!r}")
    run = decoder.prepare(lens, prompts, contrast_prompts)
    if run.shared_prefill and not use_cache:
        raise InputError("prefill='shared' needs the KV cache (use_cache=True)")

    stop_ids = lens.stop_token_ids if stop_at_eos else set()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # less padding per batch
    results: list[Generation | None] = [None] * len(prompts)
    # decoding records its thread count instead of paying for thread-invariant few-row products (docs/numerics.md)
    with products_on_every_thread(), tqdm(total=len(prompts), desc=f"decoding ({decoder.name})", unit="prompt",
                                          disable=not progress) as bar:  # fmt: skip
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            batch = _Batch(lens, run, indices, max_new_tokens, sampling, stop_ids, tuple(stop_strings), diagnostics, hooks)
            contrasts = None if contrast_prompts is None else [contrast_prompts[i] for i in indices]
            for index, generation in zip(indices, batch.decode([prompts[i] for i in indices], contrasts, use_cache, fast_path)):
                results[index] = generation
            bar.update(len(indices))
    return results  # type: ignore[return-value]


def _checked_prompts(lens: Lens, prompts: Prompts, what: str, max_new_tokens: int) -> list[list[int]]:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if isinstance(prompts, (str, bytes)) or len(prompts) == 0:
        raise InputError(f"{what}: expected a non-empty list of token-id lists")
    checked = []
    n_ctx, d_vocab = lens.geometry.n_ctx, lens.geometry.d_vocab
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, (str, bytes)):
            raise InputError(f"{what}[{index}]: expected token ids, got text (encode it with lens.encode_chat)")
        ids = [int(token) for token in prompt]
        if not ids:
            raise InputError(f"{what}[{index}]: empty prompt")
        if min(ids) < 0 or max(ids) >= d_vocab:
            raise InputError(f"{what}[{index}]: token id out of range [0, {d_vocab}): {min(ids)}..{max(ids)}")
        if len(ids) + max_new_tokens > n_ctx:
            raise InputError(
                f"{what}[{index}]: {len(ids)} prompt tokens + {max_new_tokens} new tokens exceed "
                f"the model context of {n_ctx} tokens"
            )
        checked.append(ids)
    return checked


class _Batch:
    """One batch of prompts while it decodes. `active` holds the batch positions of the prompts
    still decoding; row `g·len(active) + i` is group g of the i-th of them."""

    def __init__(
        self,
        lens: Lens,
        run: DecoderRun,
        indices: list[int],
        max_new_tokens: int,
        sampling: Sampling | None,
        stop_ids: set[int],
        stop_strings: tuple[str, ...],
        diagnostics: bool,
        hooks: Sequence[Hook] = (),
    ):
        self.lens, self.decoder_run = lens, run
        self.user_hooks = list(hooks)
        self.max_new_tokens, self.sampling, self.stop_strings = max_new_tokens, sampling, stop_strings
        self.diagnostics = diagnostics
        self.stop_ids = stop_ids
        self.indices = indices
        self.active = list(range(len(indices)))
        self.generated: list[list[int]] = [[] for _ in indices]
        self.steps: list[list[dict[str, Any]]] = [[] for _ in indices]
        self.finished: dict[int, Generation] = {}
        self.generators = None if sampling is None else [sampling.generator(i, lens.device) for i in indices]

    # --- forwards ----------------------------------------------------------------------------

    def batch_mask(self) -> HeadMask | None:
        """Each group's mask for each active prompt (its own row where the mask has one per prompt)."""
        masks = self.decoder_run.group_masks()
        if masks is None:
            return None
        prompts = [self.indices[position] for position in self.active]
        return HeadMask.stack([mask.take(prompt, prompt + 1) for mask in masks for prompt in prompts])

    def hooks(self) -> list[Hook]:
        """One forward's hooks: the decoder's (fresh each forward), then the caller's."""
        return [*self.decoder_run.hooks(), *self.user_hooks]

    def forward(
        self, tokens: TokenIds, past: Any, attention: ContextMask, mask: HeadMask | None, hooks: list[Hook]
    ) -> tuple[StepLogits, Any]:
        """Last-position logits and the updated cache, through the lens's interventions."""
        logits, past = self.lens.step(tokens, past, attention_mask=attention, mask=mask, extra_hooks=hooks, last_only=True)
        return logits[:, -1], past

    def prefill(self, tokens: TokenIds, attention: AttentionMask, fast: bool) -> tuple[StepLogits, Any]:
        """Last-position logits of the prompts and their cache: on the lens's fast path (a
        preallocated cache, groups sharing the layers below their first difference) when `fast`."""
        hooks, mask = self.hooks(), self.batch_mask()
        capacity = tokens.shape[1] + self.max_new_tokens
        if not self.decoder_run.shared_prefill:
            spec = None
            if fast:
                groups = self.decoder_run.groups
                depth = self.lens.fast_path.shareable_depth(tokens, groups, mask, hooks)
                spec = CacheSpec(capacity, groups, depth) if depth else CacheSpec(capacity)
            logits, past = self.lens.prefill(tokens, attention_mask=attention, mask=mask, extra_hooks=hooks, cache=spec)
            return logits[:, -1], past
        # The authors' variant: one unmasked prefill of the first group without the last prompt
        # token, copied to every group; the last prompt token then runs with the masks on.
        n, past = len(self.active), None
        if tokens.shape[1] > 1:
            spec = CacheSpec(capacity) if fast else None
            _, past = self.lens.prefill(tokens[:n, :-1], attention_mask=attention[:n, :-1], cache=spec)
            past = self.lens.select_cache_rows(past, torch.arange(n, device=tokens.device).repeat(self.decoder_run.groups))
        elif fast:  # nothing to prefill: an empty fast cache, so that the steps stay on the fast path
            past = GrowingKVCache(self.lens.n_layers, tokens.shape[0], CacheSpec(capacity))
        return self.forward(tokens[:, -1:], past, attention, mask, hooks)

    # --- the loop ----------------------------------------------------------------------------

    def decode(self, prompts: Prompts, contrasts: Prompts | None, use_cache: bool, fast_path: bool) -> list[Generation]:
        sequences = self.decoder_run.rows(prompts, contrasts)
        tokens, attention = self.lens.pad_left(sequences)
        fast = use_cache and fast_path and self.lens.fast_path_refusal(self.batch_mask(), self.hooks()) is None
        logits, past = self.prefill(tokens, attention, fast)
        mask = self.batch_mask()
        for step in range(self.max_new_tokens):
            scored = self.decoder_run.score(logits)
            chosen = choose_tokens(scored.scores, self.sampling, self.active_generators())
            if self.diagnostics:
                self.record(step, chosen, scored)
            keep = self.advance(chosen.tolist(), last_step=step == self.max_new_tokens - 1)
            if not keep:
                break
            next_tokens = chosen[keep].repeat(self.decoder_run.groups)[:, None]
            if len(keep) < len(self.active):  # drop the finished prompts' rows
                n = len(self.active)
                rows = torch.tensor([g * n + i for g in range(self.decoder_run.groups) for i in keep], device=tokens.device)
                self.active = [self.active[i] for i in keep]
                mask = self.batch_mask()
                tokens, attention = tokens[rows], attention[rows]
                if use_cache:
                    past = self.lens.select_cache_rows(past, rows)
            attention = torch.cat([attention, attention.new_ones(len(next_tokens), 1)], dim=1)
            if use_cache:
                logits, past = self.forward(next_tokens, past, attention, mask, self.hooks())
            else:
                tokens = torch.cat([tokens, next_tokens], dim=1)
                logits, _ = self.forward(tokens, None, attention, mask, self.hooks())
        return [self.finished[i] for i in range(len(self.generated))]

    def active_generators(self) -> list[torch.Generator] | None:
        return None if self.generators is None else [self.generators[i] for i in self.active]

    def advance(self, chosen: list[int], last_step: bool) -> list[int]:
        """Append each active prompt's token; finish those that stop. Returns the positions (in
        `active`) of the prompts that go on."""
        keep = []
        for position, token in enumerate(chosen):
            prompt = self.active[position]
            self.generated[prompt].append(token)
            text, cut = None, None
            if self.stop_strings:  # only stop strings need the text before a prompt finishes
                text = self.lens.decode(self.generated[prompt])
                cut = min((i for i in (text.find(s) for s in self.stop_strings) if i >= 0), default=None)
            if token in self.stop_ids:
                self.finish(prompt, text, "eos")
            elif cut is not None and text is not None:
                self.finish(prompt, text[:cut], "stop_string")
            elif last_step:
                self.finish(prompt, text, "max_new_tokens")
            else:
                keep.append(position)
        return keep

    def finish(self, prompt: int, text: str | None, reason: StopReason) -> None:
        text = self.lens.decode(self.generated[prompt]) if text is None else text
        steps = self.steps[prompt] if self.diagnostics else None
        self.finished[prompt] = Generation(text, self.generated[prompt], reason, steps)

    def record(self, step: int, chosen: torch.Tensor, scored: StepScores) -> None:
        """Per-step diagnostics of every active prompt: γ, entropies and top tokens of each pass."""
        passes = {"top_scores": scored.scores, "top_full": scored.full, "top_contrast": scored.contrast}
        tops = {name: None if values is None else values.float().topk(TOP_TOKENS, dim=-1) for name, values in passes.items()}
        entropies = {"entropy": entropy(scored.full)}
        if scored.contrast is not None:
            entropies["entropy_contrast"] = entropy(scored.contrast)
        for position, prompt in enumerate(self.active):
            token = int(chosen[position])
            record: dict[str, Any] = {"step": step, "token_id": token, "token": self.token_text(token)}
            if scored.gamma is not None:
                record["gamma"] = float(scored.gamma[position])
            record.update({name: float(values[position]) for name, values in entropies.items()})
            record.update({name: float(values[position]) for name, values in scored.extra.items()})
            for name, top in tops.items():
                if top is not None:
                    record[name] = [
                        {"token_id": int(i), "token": self.token_text(int(i)), "value": float(v)}
                        for v, i in zip(top.values[position], top.indices[position])
                    ]
            self.steps[prompt].append(record)

    def token_text(self, token: int) -> str:
        return self.lens.decode([token], skip_special_tokens=False)
