"""The studio's model side: every number the page shows, computed through the library, no web code.

A `StudioSession` holds the lens, the run folder and its examples. For one example, profile state,
head set and ablation kind it reports the reference output's NLL clean and ablated, for the chosen
profile state and without the profile, and the profile-specific effect (Δ with − Δ without); it
generates greedy, ablated and DPS continuations; it computes attribution PCS of a single example.

Speed: the clean forward of each (example, profile state) runs once and is kept as the lens's tail
context (`Lens.tail_context`); an ablation then costs only the layers from its lowest ablated
layer up (`Lens.run_tail`), and only the reference positions are unembedded. The last ablated run
of each (example, state) also keeps every block's input residual: a new set that differs from it
only from layer d on (a click on a head of layer d) restarts there, so a click costs the layers
above the clicked head, not above the set's lowest head. The two conditions are not batched:
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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from workbench.data.tokenized import TokenizedExample
from workbench.decoding import DPS, Decoder, Generation, Greedy, Suppressed, generate
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.lens import Lens, TailContext
from workbench.masks import Head, HeadMask
from workbench.scores import PCSResult, score_heads
from workbench.scores.nll import TargetSequence
from workbench.studio.examples import OFF, ProfileState, StudioExample, TextExample, load_split
from workbench.studio.jobs import FairLock
from workbench.studio.runfolder import RunFolder
from workbench.tensor_types import HeadReference, Logits, Residual

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


@dataclass
class _Clean:
    context: TailContext  # logits kept at the reference positions only
    sequence: TargetSequence
    tokens: np.ndarray

    @property
    def nbytes(self) -> int:
        tensors = {id(t): t for t in _tensors([self.context.residuals, self.context.block_kwargs, self.context.logits])}
        return sum(t.nelement() * t.element_size() for t in tensors.values())


@dataclass
class _Ablated:
    """One ablated run: its mask (one row) and each block's input residual from its lowest
    ablated layer up."""

    scale: torch.Tensor  # [layer, head]
    z_ref: HeadReference | None
    residuals: dict[int, Residual]
    tokens: np.ndarray

    def first_difference(self, mask: HeadMask) -> int | None:
        """The lowest layer where `mask` (one row) acts differently from this run's mask; None when
        they are the same (a different reference activation differs everywhere)."""
        same_reference = (self.z_ref is None and mask.z_ref is None) or (
            self.z_ref is not None and mask.z_ref is not None and torch.equal(self.z_ref, mask.z_ref)
        )
        if not same_reference:
            return 0
        differing = torch.nonzero((self.scale != mask.scale[0]).any(dim=1)).flatten().tolist()
        return differing[0] if differing else None


def token_nll(logits: Logits, targets: torch.Tensor) -> np.ndarray:
    """NLL of each target token, `[batch, target]`, from logits at the target positions (log-softmax
    in float32 as in `workbench.scores.nll.mean_nll`, whose mean this is)."""
    log_probs = logits.float().log_softmax(dim=-1)
    index = targets.to(logits.device)[None, :, None].expand(logits.shape[0], -1, 1)
    return -log_probs.gather(-1, index)[..., 0].double().cpu().numpy()


class StudioSession:
    """The lens, the run folder and its examples, with the computations the page asks for."""

    def __init__(self, lens: Lens, run: RunFolder):
        self.lens, self.run = lens, run
        self.source = run.task_source()
        self.lock = FairLock()
        self._splits: dict[str, list[StudioExample]] = {}
        self._typed: OrderedDict[tuple, TextExample] = OrderedDict()
        self._clean: OrderedDict[tuple[str, str], _Clean] = OrderedDict()
        self._ablated: OrderedDict[tuple[str, str], _Ablated] = OrderedDict()
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

    def typed_example(self, prompt: str, reference: str, profile: str = "", *, chat: bool = True) -> TextExample:
        """A typed example (kept, so its clean forwards are reused while it is being looked at)."""
        identity = (prompt, reference, profile, chat)
        if identity not in self._typed:
            key = f"typed-{abs(hash(identity)):x}"
            with self.lock:
                example = TextExample(self.lens, key, "typed", prompt, reference, profile=profile, chat=chat)
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
        return Suppressed(weights, suppression=ablation.kind, z_ref=z_ref)  # type: ignore[arg-type]

    def _mean_reference(self, example: StudioExample) -> HeadReference:
        if example.key not in self._z_ref:
            sequences = [list(example.prompt_ids(state)) + list(example.target_ids) for state in (ProfileState("own"), OFF)]
            _remember(self._z_ref, example.key, self.lens.mean_head_outputs(sequences))
        return self._z_ref[example.key]

    # --- NLL ---------------------------------------------------------------------------------

    def _clean_run(self, example: StudioExample, state: ProfileState) -> _Clean:
        key = (example.key, state.key)
        if key not in self._clean:
            sequence = TargetSequence(example.prompt_ids(state), example.target_ids)
            context = self.lens.tail_context(list(sequence.ids))
            kept = replace(context, logits=context.logits[:, sequence.positions.to(context.logits.device)])
            _remember(self._clean, key, _Clean(kept, sequence, token_nll(kept.logits, sequence.targets)[0]))
            while len(self._clean) > 1 and sum(c.nbytes for c in self._clean.values()) > CACHE_BYTES:
                dropped, _ = self._clean.popitem(last=False)
                self._ablated.pop(dropped, None)
        self._clean.move_to_end(key)
        return self._clean[key]

    def _ablated_tokens(self, key: tuple[str, str], clean: _Clean, mask: HeadMask | None) -> np.ndarray:
        """Per-token reference NLL with `mask`, restarting from the last run of `key` where it can."""
        if mask is None:
            return clean.tokens
        start, residual, inherited = min(mask.active_layers()), None, {}
        previous = self._ablated.get(key)
        if previous is not None:
            first = previous.first_difference(mask)
            if first is None:
                return previous.tokens
            if first > start and first in previous.residuals:
                start, residual = first, previous.residuals[first]
                inherited = {layer: r for layer, r in previous.residuals.items() if layer < first}
        recorded: dict[int, Residual] = {}

        def recorder(layer: int) -> Callable[..., None]:
            def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
                recorded[layer] = (args[0] if args else kwargs["hidden_states"]).detach()

            return record

        blocks = self.lens.bridge.blocks
        handles = [
            blocks[layer].register_forward_pre_hook(recorder(layer), with_kwargs=True)
            for layer in range(start, self.lens.n_layers)
        ]
        try:
            positions = clean.sequence.positions.to(self.lens.device)
            context = clean.context
            if residual is not None:  # the previous run's residual entering block `start`
                residuals = list(context.residuals)
                residuals[start] = residual
                context = replace(context, residuals=residuals)
            logits = self.lens.run_tail(context, start, mask=mask, positions=positions)
        finally:
            for handle in handles:
                handle.remove()
        tokens = token_nll(logits, clean.sequence.targets)[0]
        # Only the clean contexts' keys keep a run (one per example and profile state).
        if key in self._clean:
            self._ablated[key] = _Ablated(mask.scale[0].clone(), mask.z_ref, {**inherited, **recorded}, tokens)
        return tokens

    def nll(self, example: StudioExample, state: ProfileState, heads: HeadSet, ablation: AblationKind) -> NLLReport:
        """The reference NLL clean and with `heads` ablated, for `state` and without profile."""
        with self.lock:
            started = time.perf_counter()
            weights = self.weights(heads, ablation)
            states = [state] if state.mode == "off" else [state, OFF]
            conditions = []
            for current in states:
                clean = self._clean_run(example, current)
                mask = None
                if weights is not None:
                    mask = self._suppressed(example, weights, ablation).generic.mask(self.lens, weights, [clean.sequence.ids])
                ablated = self._ablated_tokens((example.key, current.key), clean, mask)
                conditions.append(
                    Condition(current.describe(), float(clean.tokens.mean()), float(ablated.mean()), clean.tokens, ablated)
                )
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
        return DPS(weights, gamma=gamma, generic=suppressed.generic)

    def generate(
        self,
        example: StudioExample,
        state: ProfileState,
        decoder: Decoder,
        *,
        max_new_tokens: int = 24,
        on_step: Callable[[], None] | None = None,
    ) -> Generation:
        """One continuation of the state's prompt. `on_step` runs before each new token (progress,
        cancellation); between tokens, clicks waiting for the model go first."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise InputError(f"new tokens must be a whole number in 1..{MAX_NEW_TOKENS}, got {max_new_tokens!r}")

        def step() -> None:
            if on_step is not None:
                on_step()
            self.lock.yield_turn()

        with self.lock:
            prompt = list(example.prompt_ids(state))
            return generate(self.lens, [prompt], _Observed(decoder, step), max_new_tokens=max_new_tokens)[0]

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
        self.inner, self.on_step, self.name = inner, on_step, inner.name

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


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def _remember(cache: OrderedDict, key: Any, value: Any, size: int = CACHED_ITEMS) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
