"""The studio's model side: every number the page shows, computed through the library, no web code.

A `StudioSession` holds the lens, the run folder and its examples. For one example, profile state,
head set and ablation kind it reports the reference output's NLL clean and ablated, for the chosen
profile state and without the profile, and the profile-specific effect (Δ with − Δ without); it
generates greedy, ablated and DPS continuations; it computes attribution PCS of a single example.

Speed: every NLL is the scoring engine's (`workbench.scores.engine.MaskedNLL`, one per example and
profile state): the clean forward runs once, an ablation costs only the layers from its lowest
ablated layer up, and a new set that differs from the last one only from layer d on (a click on a
head of layer d) restarts there, from the residual the last run fed block d. The two conditions are not batched:
their prompts differ in length, the one without profile is the short one, and at a few hundred
tokens a CPU forward is compute-bound, so padding them into one batch would cost more than it saves.

The ablation masks are the DPS decoders' own (`Suppression.mask`, the generic pass of `Suppressed` and `DPS`), so the
ablated NLL, the ablated continuation and DPS's generic pass suppress the heads in the same way:

- `zero`: every head of the set outputs 0 (its weight only selects it);
- `mean`: every head of the set outputs its mean over the example's sequences (with and without
  profile, prompt ‖ reference);
- `weighted`: head output scaled by `1 − strength · w` (w = 1 for clicked heads; strength 1
  equals `zero` for them).

Every model computation takes the session's one `FairLock`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.data.tokenized import TokenizedExample
from workbench.decoding import DPS, Contrast, Decoder, Generation, Greedy, Suppressed, Suppression, generate
from workbench.engine.lens import Lens
from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.scores import PCSResult, score_heads
from workbench.scores.engine import MaskedNLL
from workbench.scores.nll import TargetSequence
from workbench.studio.examples import OFF, ProfileState, StudioExample, TextExample, load_split
from workbench.studio.jobs import FairLock
from workbench.studio.runfolder import RunFolder, TaskSource
from workbench.tensor_types import HeadReference

KINDS: tuple[str, ...] = ("zero", "mean", "weighted")
DECODERS: tuple[str, ...] = ("greedy", "ablated", "dps")
HeadSet = Mapping[Head, float]
MAX_NEW_TOKENS = 256
CACHED_ITEMS = 16
CACHE_BYTES = 1 << 30  # clean contexts kept, at most (about 7,000 tokens of the default model)


@dataclass(frozen=True)
class AblationKind:
    kind: str = "zero"
    strength: float = 1.0  # `weighted` only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown ablation kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not (isinstance(self.strength, (int, float)) and 0 <= self.strength <= 1):
            raise InputError(f"the weighted ablation's strength must lie in [0, 1], got {self.strength!r}")

    def describe(self) -> str:
        return f"weighted (strength {self.strength:g})" if self.kind == "weighted" else self.kind


@dataclass(frozen=True)
class Condition:
    """The reference NLL under one prompt: mean and per token, clean and with the set ablated."""

    name: str
    clean: float
    ablated: float
    clean_tokens: np.ndarray
    ablated_tokens: np.ndarray

    @property
    def delta(self) -> float:
        return self.ablated - self.clean


@dataclass(frozen=True)
class NLLReport:
    """`conditions[0]` is the chosen profile state; `conditions[1]` (absent when the profile is off)
    the same example without profile. `profile_specific` = Δ with − Δ without (None when off)."""

    conditions: list[Condition]
    tokens: list[str]
    n_heads: int
    ablation: str
    seconds: float

    @property
    def profile_specific(self) -> float | None:
        return None if len(self.conditions) < 2 else self.conditions[0].delta - self.conditions[1].delta


class StudioSession:
    """The lens, the run folder and its examples, with the computations the page asks for."""

    def __init__(self, lens: Lens, run: RunFolder, source: TaskSource | None = None):
        """`source`: where the examples come from (default: what the run records, `RunFolder.task_source`)."""
        self.lens, self.run = lens, run
        self.source = run.task_source() if source is None else source
        self.lock = FairLock()
        self._splits: dict[str, list[StudioExample]] = {}
        self._typed: OrderedDict[tuple, TextExample] = OrderedDict()
        self._measures: OrderedDict[tuple[str, str], MaskedNLL] = OrderedDict()
        self._z_ref: OrderedDict[str, HeadReference] = OrderedDict()
        self._attribution: OrderedDict[tuple[str, str, str], PCSResult] = OrderedDict()

    # --- examples ----------------------------------------------------------------------------

    def examples(self, split: str) -> list[StudioExample]:
        if split not in self._splits:
            with self.lock:  # the tokenizer is not safe for concurrent use either
                self._splits[split] = load_split(self.lens, self.source, split)
        return self._splits[split]

    def example(self, split: str, key: str) -> StudioExample:
        for example in self.examples(split):
            if example.key == key:
                return example
        raise InputError(f"no example {key!r} in split {split!r}")

    def typed_example(self, prompt: str, reference: str, profile: str = "", *, chat: bool = False) -> TextExample:
        """A typed example (kept, so its clean forwards are reused while it is being looked at):
        plain text by default, in the chat template with `chat`; answers end as the run's task's do."""
        identity = (prompt, reference, profile, chat)
        if identity not in self._typed:
            key = f"typed-{abs(hash(identity)):x}"
            with self.lock:
                example = TextExample(
                    self.lens, key, "typed", prompt, reference, profile=profile, chat=chat, task=self.source.task
                )
            _remember(self._typed, identity, example)
        return self._typed[identity]

    def prompt(self, example: StudioExample, state: ProfileState) -> tuple[tuple[int, ...], str]:
        """The state's prompt as token ids and as the model sees it (special tokens shown)."""
        with self.lock:
            ids = example.prompt_ids(state)
            return ids, self.lens.decode(ids, skip_special_tokens=False)

    # --- masks -------------------------------------------------------------------------------

    def weights(self, heads: HeadSet, ablation: AblationKind) -> HeadWeights | None:
        """The head weights the decoders suppress (None when nothing is suppressed)."""
        grid = torch.zeros(self.lens.n_layers, self.lens.n_heads)
        for (layer, head), weight in heads.items():
            if not (isinstance(weight, (int, float)) and 0 < weight <= 1):
                raise InputError(f"head ({layer}, {head}) has weight {weight!r}; weights lie in (0, 1]")
            grid[self.lens.geometry.check_head(layer, head)] = float(weight)
        if ablation.kind == "weighted":
            grid = grid * ablation.strength
        return HeadWeights(grid, model=self.lens.name) if (grid > 0).any() else None

    def _suppressed(self, example: StudioExample, weights: HeadWeights, ablation: AblationKind) -> Suppressed:
        z_ref = self._mean_reference(example) if ablation.kind == "mean" else None
        return Suppressed(weights, generic=Suppression(suppression=ablation.kind, z_ref=z_ref))  # type: ignore[arg-type]

    def _mean_reference(self, example: StudioExample) -> HeadReference:
        if example.key not in self._z_ref:
            sequences = [list(example.prompt_ids(state)) + list(example.target_ids) for state in (ProfileState("own"), OFF)]
            _remember(self._z_ref, example.key, self.lens.mean_head_outputs(sequences))
        return self._z_ref[example.key]

    # --- NLL ---------------------------------------------------------------------------------

    def _measure(self, example: StudioExample, state: ProfileState) -> MaskedNLL:
        """The scoring engine's NLL of this example's reference under this state's prompt (the
        clean forward kept; the least used ones dropped past `CACHE_BYTES`)."""
        key = (example.key, state.key)
        if key not in self._measures:
            _remember(self._measures, key, MaskedNLL(self.lens, TargetSequence(example.prompt_ids(state), example.target_ids)))
            while len(self._measures) > 1 and sum(m.nbytes for m in self._measures.values()) > CACHE_BYTES:
                self._measures.popitem(last=False)
        self._measures.move_to_end(key)
        return self._measures[key]

    def nll(self, example: StudioExample, state: ProfileState, heads: HeadSet, ablation: AblationKind) -> NLLReport:
        """The reference NLL clean and with `heads` ablated, for `state` and without profile."""
        with self.lock:
            started = time.perf_counter()
            weights = self.weights(heads, ablation)
            states = [state] if state.mode == "off" else [state, OFF]
            conditions = []
            for current in states:
                measure = self._measure(example, current)
                mask = None
                if weights is not None:
                    mask = self._suppressed(example, weights, ablation).generic.mask(self.lens, weights, [measure.sequence.ids])
                clean, ablated = measure.clean.numpy(), measure.masked(mask).numpy()
                conditions.append(Condition(current.describe(), float(clean.mean()), float(ablated.mean()), clean, ablated))
            tokens = [self.lens.decode([t], skip_special_tokens=False) for t in example.target_ids]
            return NLLReport(conditions, tokens, len(heads), ablation.describe(), time.perf_counter() - started)

    # --- generation --------------------------------------------------------------------------

    def decoder(self, which: str, example: StudioExample, heads: HeadSet, ablation: AblationKind, gamma: float) -> Decoder:
        if which not in DECODERS:
            raise InputError(f"unknown decoder {which!r}; choose one of {', '.join(DECODERS)}")
        if which == "greedy":
            return Greedy()
        weights = self.weights(heads, ablation)
        if weights is None:
            raise InputError("select at least one head to ablate (or raise the strength above 0)")
        with self.lock:  # mean ablation's reference activation is a model computation
            suppressed = self._suppressed(example, weights, ablation)
        if which == "ablated":
            return suppressed
        return DPS(weights, contrast=Contrast(gamma=gamma), generic=suppressed.generic)

    def generate(
        self,
        example: StudioExample,
        state: ProfileState,
        decoder: Decoder,
        *,
        max_new_tokens: int = 24,
        on_step: Callable[[], None] | None = None,
    ) -> Generation:
        """One continuation of the state's prompt, ending where `evaluate` ends an answer (the
        example's stop strings). `on_step` runs before each new token (progress, cancellation);
        between tokens, clicks waiting for the model go first."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise InputError(f"new tokens must be a whole number in 1..{MAX_NEW_TOKENS}, got {max_new_tokens!r}")

        def step() -> None:
            if on_step is not None:
                on_step()
            self.lock.yield_turn()

        with self.lock:
            prompt = list(example.prompt_ids(state))
            observed = _Observed(decoder, step)
            return generate(self.lens, [prompt], observed, max_new_tokens=max_new_tokens, stop_strings=example.stop_strings)[0]

    # --- head maps ---------------------------------------------------------------------------

    def attribution(self, example: StudioExample, state: ProfileState, variant: str) -> PCSResult:
        """Attribution PCS of every head on this one example (`standard`, or `profile-contrast`
        against the prompt without profile), computed on the spot through `score_heads`."""
        key = (example.key, state.key, variant)
        if key not in self._attribution:
            with self.lock:
                if variant == "profile-contrast" and state.mode == "off":
                    raise InputError("profile-contrast PCS needs a profile: switch the profile on")
                tokenized = TokenizedExample(
                    example.key,
                    example.user_id,
                    example.prompt_ids(state),
                    example.target_ids,
                    no_profile_prompt_ids=example.prompt_ids(OFF),
                )
                result = score_heads(self.lens, [tokenized], method="attribution", variant=variant, progress=False)
            _remember(self._attribution, key, result)
        return self._attribution[key]


class _Observed(Decoder):
    """A decoder that calls `on_step` before every token it chooses."""

    def __init__(self, inner: Decoder, on_step: Callable[[], None]):
        self.inner, self.on_step = inner, on_step
        self.name = inner.name  # type: ignore[misc]  # a decoder's name is its class's; this wrapper takes its inner one's

    def prepare(self, lens: Lens, prompts: Any, contrast_prompts: Any) -> Any:
        return _ObservedRun(self.inner.prepare(lens, prompts, contrast_prompts), self.on_step)


class _ObservedRun:
    def __init__(self, inner: Any, on_step: Callable[[], None]):
        self._inner, self._on_step = inner, on_step

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def score(self, logits: torch.Tensor) -> Any:
        self._on_step()
        return self._inner.score(logits)


def _remember(cache: OrderedDict, key: Any, value: Any, size: int = CACHED_ITEMS) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
