"""A per-token trace of DPS decoding: what the full pass, the masked pass and their combination
proposed at every generated token, the γ used there, and what each suppressed head did to the
token that was chosen.

The tokens are DPS's own: the one generation loop (`generate`), greedy, with the caller's token
budget and stop strings (pass `workbench.data.prompts.answer_stop_strings`, as `evaluate` does, to
stop where it stops). Then one teacher-forced pass over prompt ‖ generated tokens through the
scoring engine (`workbench.scores.engine.masked_logits`) gives at every step t, for the chosen
token y_t:

- the full logits, the masked logits (every head suppressed as the decoder's generic pass
  suppresses it, over the whole context), and DPS's scores from them by the decoder's own
  `Contrast` (γ per step: fixed, or the full pass's entropy);
- one row per suppressed head h with *only* h suppressed (its own weight, the same suppression);

all in the contrast's space, s = logits or log-probabilities (`combine`). DPS moves y_t's score by
`γ_t · Δ_t` away from the full model's, where `Δ_t = s_full(y_t) − s_masked(y_t)`. Head h's
effect is exact one-head-at-a-time masking, `e_{t,h} = s_full(y_t) − s_{h}(y_t)`, its share
`e_{t,h} / Δ_t`; the shares sum to 1 only when the heads act independently, and
`interaction = Δ_t − Σ_h e_{t,h}` says how far they do not.

The teacher-forced logits equal the loop's KV-cached steps up to float rounding; `agrees` says
at which steps DPS's recomputed best token is the chosen one. The authors' shared prefill (the
generic pass reusing the unmasked prompt cache) is not traced: a teacher-forced pass masks the
whole context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from workbench import io
from workbench.decoding.dps import DPS, RandomHeads
from workbench.decoding.loop import TOP_TOKENS, generate
from workbench.engine.masks import Head, HeadMask
from workbench.errors import InputError
from workbench.scores.engine import masked_logits

if TYPE_CHECKING:
    from workbench.engine.lens import Lens

PASSES: tuple[str, ...] = ("full", "masked", "dps")


@dataclass(frozen=True)
class DecodingTrace:
    """Per generated token t and suppressed head k (heaviest first). Arrays: `gamma [T]`;
    `scores[pass] [T]` the chosen token's score in `space` under `full` and `masked`;
    `logprobs[pass] [T]` its log-probability under `full`, `masked` and `dps`;
    `head_scores [T, K]` its score with only head k suppressed; `top_ids[pass]`, `top_logprobs[pass]`
    `[T, top]` each pass's most likely tokens."""

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    text: str
    stop_reason: str
    heads: tuple[Head, ...]
    weights: np.ndarray
    shape: tuple[int, int]
    space: str
    gamma: np.ndarray
    scores: dict[str, np.ndarray]
    logprobs: dict[str, np.ndarray]
    head_scores: np.ndarray
    top_ids: dict[str, np.ndarray]
    top_logprobs: dict[str, np.ndarray]
    top_tokens: dict[int, str]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> np.ndarray:
        """Δ_t = s_full(y_t) − s_masked(y_t): what suppressing every head did to the chosen token."""
        return self.scores["full"] - self.scores["masked"]

    @property
    def effects(self) -> np.ndarray:
        """`[T, K]`: e_{t,k} = s_full(y_t) − s_{only k}(y_t)."""
        return self.scores["full"][:, None] - self.head_scores

    @property
    def shares(self) -> np.ndarray:
        """`[T, K]`: each head's effect as a fraction of Δ_t (NaN where Δ_t is 0)."""
        total = self.total[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total != 0, self.effects / np.where(total != 0, total, 1), np.nan)

    @property
    def interaction(self) -> np.ndarray:
        """Δ_t − Σ_k e_{t,k}: the part of the change no single head accounts for."""
        return self.total - self.effects.sum(axis=1)

    @property
    def agrees(self) -> np.ndarray:
        """Whether DPS's recomputed best token is the chosen one, per step."""
        return self.top_ids["dps"][:, 0] == np.asarray(self.token_ids)

    def share_grid(self, step: int) -> np.ndarray:
        """The shares of step `step` on the `[layer, head]` grid (NaN where no head is suppressed)."""
        if not 0 <= step < len(self.token_ids):
            raise InputError(f"step {step} is outside the trace's {len(self.token_ids)} tokens")
        grid = np.full(self.shape, np.nan)
        for (layer, head), share in zip(self.heads, self.shares[step]):
            grid[layer, head] = share
        return grid

    def steps_frame(self) -> pd.DataFrame:
        """One row per generated token: the token, γ, the chosen token's scores and log-probabilities."""
        frame = pd.DataFrame({"step": np.arange(len(self.token_ids)), "token_id": self.token_ids, "token": self.tokens})
        frame["gamma"] = self.gamma
        for name in ("full", "masked"):
            frame[f"score_{name}"] = self.scores[name]
        for name in PASSES:
            frame[f"logprob_{name}"] = self.logprobs[name]
        frame["total"], frame["interaction"], frame["agrees"] = self.total, self.interaction, self.agrees
        return frame

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per (generated token, suppressed head), with the token's step columns."""
        steps = len(self.token_ids)
        heads = pd.DataFrame(
            {
                "step": np.repeat(np.arange(steps), len(self.heads)),
                "layer": np.tile([layer for layer, _ in self.heads], steps),
                "head": np.tile([head for _, head in self.heads], steps),
                "weight": np.tile(self.weights, steps),
                "score_head": self.head_scores.reshape(-1),
                "effect": self.effects.reshape(-1),
                "share": self.shares.reshape(-1),
            }
        )
        return self.steps_frame().merge(heads, on="step")

    def top_frame(self) -> pd.DataFrame:
        """Tidy: one row per (generated token, pass, rank) of the top tokens and their log-probabilities."""
        rows = [
            {
                "step": step,
                "pass": name,
                "rank": rank,
                "token_id": int(token),
                "token": self.top_tokens[int(token)],
                "logprob": float(self.top_logprobs[name][step, rank]),
            }
            for name in PASSES
            for step in range(len(self.token_ids))
            for rank, token in enumerate(self.top_ids[name][step])
        ]
        return pd.DataFrame(rows, columns=["step", "pass", "rank", "token_id", "token", "logprob"])

    def to_csv(self, path: str | Path) -> None:
        """`to_frame()` as CSV, written atomically."""
        io.write_text(path, self.to_frame().to_csv(index=False))


def trace_dps(
    lens: Lens,
    prompt: Sequence[int],
    decoder: DPS,
    *,
    max_new_tokens: int = 32,
    stop_strings: Sequence[str] = (),
    top: int = TOP_TOKENS,
    max_rows: int = 16,
) -> DecodingTrace:
    """Decode `prompt` (token ids) with `decoder` (greedy) and trace every generated token (see the
    module docstring). A prompt that leaves no room for `max_new_tokens` in the model's context is
    refused, never cut."""
    if not isinstance(decoder, DPS):
        raise InputError(f"the decoding trace takes a DPS decoder, got {type(decoder).__name__}")
    if decoder.prefill == "shared":
        raise InputError("the decoding trace needs prefill='masked' (a shared prefill cannot be teacher-forced)")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(f"top must be a positive integer, got {top!r}")
    generation = generate(lens, [prompt], decoder, max_new_tokens=max_new_tokens, stop_strings=stop_strings)[0]
    prompt = [int(token) for token in prompt]
    heads = (
        decoder.control_heads(lens)
        if isinstance(decoder, RandomHeads)
        else decoder.generic.check(lens, decoder.heads, decoder.name)
    )
    generic = decoder.generic.mask(lens, heads, [prompt])
    chosen = heads.heads()
    singles = [_only(generic, head) for head in chosen]

    ids = torch.tensor(generation.token_ids)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(ids) - 1)
    contrast, space = decoder.contrast, decoder.contrast.combine
    full = masked = None
    head_scores = torch.empty(len(ids), len(chosen), dtype=torch.float64)
    for chunk, logits in masked_logits(
        lens, prompt + generation.token_ids[:-1], positions, [generic, *singles], max_rows=max_rows
    ):
        logits = logits.float().cpu()
        if not chunk:
            full = masked = logits[0]  # a mask that changes nothing leaves the clean logits
            head_scores[:] = _chosen(_in_space(full, space), ids)[:, None]
            continue
        for row, index in enumerate(chunk):
            if index == 0:
                masked = logits[row]
            else:
                head_scores[:, index - 1] = _chosen(_in_space(logits[row], space), ids)
    assert full is not None and masked is not None
    dps, gamma = contrast(full, masked)
    passes = {"full": full.log_softmax(-1), "masked": masked.log_softmax(-1), "dps": dps.float().log_softmax(-1)}
    tops = {name: values.topk(min(top, values.shape[-1]), dim=-1) for name, values in passes.items()}
    listed = sorted({int(t) for found in tops.values() for t in found.indices.flatten()} | {int(t) for t in ids})
    return DecodingTrace(
        prompt_ids=tuple(prompt),
        token_ids=tuple(generation.token_ids),
        tokens=tuple(_token_text(lens, int(t)) for t in ids),
        text=generation.text,
        stop_reason=generation.stop_reason,
        heads=tuple(chosen),
        weights=np.array([float(heads.weights[head]) for head in chosen]),
        shape=heads.shape,
        space=space,
        gamma=gamma.double().numpy(),
        scores={"full": _chosen(_in_space(full, space), ids).numpy(), "masked": _chosen(_in_space(masked, space), ids).numpy()},
        logprobs={name: _chosen(values, ids).numpy() for name, values in passes.items()},
        head_scores=head_scores.numpy(),
        top_ids={name: found.indices.numpy() for name, found in tops.items()},
        top_logprobs={name: found.values.double().numpy() for name, found in tops.items()},
        top_tokens={token: _token_text(lens, token) for token in listed},
        options={"max_new_tokens": max_new_tokens, "stop_strings": list(stop_strings), **decoder.options()},
    )


def _only(generic: HeadMask, head: Head) -> HeadMask:
    """The generic mask acting on `head` alone (its scale there, identity elsewhere)."""
    scale = torch.ones_like(generic.scale)
    scale[0, head[0], head[1]] = generic.scale[0, head[0], head[1]]
    return HeadMask(scale, generic.z_ref, generic.site)


def _in_space(logits: torch.Tensor, space: str) -> torch.Tensor:
    return logits.log_softmax(-1) if space == "logprobs" else logits


def _chosen(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return values.gather(-1, ids[:, None])[:, 0].double()


def _token_text(lens: Lens, token: int) -> str:
    return lens.decode([token], skip_special_tokens=False)
