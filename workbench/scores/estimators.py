"""Estimators of every head's single-head ablation effect `NLL(head ablated) − NLL(clean)` that
cost a few passes per sequence instead of one run per head: what the attribution and hybrid PCS
methods rank heads and choose candidates by (`ScanOptions.estimator`). Each gives an `Estimate`,
two float64 `[layer, head]` grids: the signed estimate and a magnitude (how large the head's effect
may be whatever its sign; the hybrid takes half of its candidates by it).

In the scale `s` of a head's mask (`z' = z_ref + s · (z − z_ref)`; 1 clean, 0 ablated) the effect is
`∫₀¹ (z_ref − z) · ∂NLL/∂z'|_{s = 1 − α} dα`: the terms `(z_ref − z) ⊙ ∂NLL/∂z'`, summed over the
head's positions and dimensions, integrated along the path.

- `attribution`: the terms at the clean point (one forward and one backward; AtP).
- `ig`: integrated gradients along each head's own ablation path, the midpoint rule with `steps`
  points (`α = (i + ½) / steps`): converges to the exact effect (error O(1/steps²)). Each head
  needs its own `steps` forward-backward passes of the layers above it (restarted from its layer,
  `workbench.engine.tail`), so it costs about `3·steps` times exact PCS: a reference and a check,
  not a shortcut.
- `eap-ig`: integrated gradients along one path shared by all heads (every head at `1 − α` at once,
  as EAP-IG, Hanna et al. 2024, moves every component together): `steps` rows of one batched
  forward and backward. It splits the effect of ablating *every* head among the heads, which is
  not the single-head effect where heads interact.
- `graddrop`: AtP*'s GradDrop (Kramár et al. 2024, arXiv 2403.00745, section 3.1.2, as we read it):
  for each block l the attribution with the backward pass cut at block l's residual updates
  (attention and MLP output detached), `c_l`; the magnitude is `Σ_l |c_l| / (L − 1)`, which a
  cancellation between a head's direct and indirect effects cannot hide. The estimate is
  attribution's. One forward, one backward from the loss and one from each block's input down
  (about L/2 backward passes more).
- `target-exact`: each head ablated exactly at the scored positions (whose logits predict the
  target), plus attribution's terms at all other positions. By causality, ablating a head at the
  scored positions changes nothing before them, so the exact part reruns only those positions on
  the clean run's keys and values (a KV cache), for every head. Its bias: what a head's writes at
  earlier (context) positions do is still linear, and their interaction with the scored positions'
  ablation is left out. Needs the fast path (`Lens.fast_path_refusal`).

Every gradient goes through `invariant_grad`, so every estimate is bit-equal at any CPU thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from workbench.engine.interventions import Hook, Recording
from workbench.engine.kv_cache import CacheSpec, GrowingKVCache
from workbench.engine.lens import Lens
from workbench.engine.masks import Head, HeadMask
from workbench.engine.numerics import invariant_grad, one_thread
from workbench.engine.tail import Restart
from workbench.errors import InputError
from workbench.scores.ablation import Ablation
from workbench.scores.attribution import ablation_terms, head_gradients
from workbench.scores.nll import TargetSequence, mean_nll, token_nll
from workbench.tensor_types import HeadGrid, HeadOutputs

EstimatorName = Literal["attribution", "graddrop", "target-exact", "ig", "eap-ig"]
ESTIMATORS: tuple[str, ...] = get_args(EstimatorName)
PATH_ESTIMATORS = ("ig", "eap-ig")  # those that take a step count
PASS_TOKENS = 2048  # rows x tokens of one backward pass (its memory grows with both)
CACHE_ROW_TOKENS = 16384  # rows x cached positions of one `target_ablation_deltas` pass


@dataclass(frozen=True)
class Estimate:
    """Estimated `NLL(head ablated) − NLL(clean)` and its magnitude, float64 `[layer, head]`."""

    estimate: HeadGrid
    magnitude: HeadGrid


def attribution(lens: Lens, sequence: TargetSequence, ablation: Ablation, hooks: Sequence[Hook] = ()) -> Estimate:
    return Estimate(*ablation_terms(*head_gradients(lens, sequence, ablation, hooks), ablation))


def integrated_gradients(
    lens: Lens,
    sequence: TargetSequence,
    ablation: Ablation,
    steps: int,
    hooks: Sequence[Hook] = (),
    *,
    max_rows: int | None = None,
) -> Estimate:
    """Midpoint-rule integrated gradients of every head along its own ablation path. A head of
    layer l runs from block l on (the clean run's residual and head outputs), one batch row per
    head and point, `max_rows` rows per pass (default `PASS_TOKENS` tokens, at least one row)."""
    _check_steps(steps)
    geometry = lens.geometry
    sites = [lens.site_hook_name(ablation.site, layer) for layer in range(geometry.n_layers)]
    outputs = [lens.hook_name("z", layer) for layer in range(geometry.n_layers)]
    clean = Recording([*sites, *outputs])
    context = lens.tail_context(list(sequence.ids), hooks=[*hooks, *clean.hooks])
    max_rows = max(1, PASS_TOKENS // len(sequence.ids)) if max_rows is None else max_rows
    points = [(head, (step + 0.5) / steps) for head in range(geometry.n_heads) for step in range(steps)]
    estimate = torch.zeros(geometry.n_layers, geometry.n_heads, dtype=torch.float64)
    magnitude = torch.zeros_like(estimate)
    for layer in range(geometry.n_layers):
        activation = _per_head(clean[sites[layer]], geometry.n_heads)[0]  # [pos, head, d]
        reference = 0.0 if ablation.z_ref is None else ablation.z_ref[layer].to(activation)[None]
        difference = (reference - activation).double()
        gradient_sum = torch.zeros_like(difference)  # per head, the sum of its path's gradients
        for chunk in _chunks(points, max_rows):
            scale = torch.ones(len(chunk), geometry.n_layers, geometry.n_heads)
            for row, (head, alpha) in enumerate(chunk):
                scale[row, layer, head] = 1 - alpha
            after_mask = Recording([sites[layer]], differentiable=True)
            restart = Restart(context, layer, rows=len(chunk), head_outputs=clean[outputs[layer]])
            logits = lens.run(start=restart, mask=HeadMask(scale, ablation.z_ref, ablation.site), hooks=hooks,
                              record=after_mask, positions=sequence.positions, grad=True).logits  # fmt: skip
            (gradient,) = invariant_grad(mean_nll(logits, sequence.targets).sum(), after_mask.values())
            gradient = _per_head(gradient, geometry.n_heads).double()
            for row, (head, _) in enumerate(chunk):
                gradient_sum[:, head] += gradient[row, :, head]
        terms = difference * gradient_sum / steps
        estimate[layer], magnitude[layer] = terms.sum(dim=(0, 2)).cpu(), terms.abs().sum(dim=(0, 2)).cpu()
    return Estimate(estimate, magnitude)


def shared_path_gradients(
    lens: Lens, sequence: TargetSequence, ablation: Ablation, steps: int, hooks: Sequence[Hook] = ()
) -> Estimate:
    """Midpoint-rule integrated gradients along the path that moves every head at once (EAP-IG's
    path): row i has every head at scale `1 − (i + ½) / steps`; rows in passes of `PASS_TOKENS`."""
    _check_steps(steps)
    geometry = lens.geometry
    per_pass = max(1, PASS_TOKENS // len(sequence.ids))
    estimate = torch.zeros(geometry.n_layers, geometry.n_heads, dtype=torch.float64)
    magnitude = torch.zeros_like(estimate)
    alphas = [(step + 0.5) / steps for step in range(steps)]
    for begin in range(0, steps, per_pass):
        chunk = torch.tensor(alphas[begin : begin + per_pass])
        scale = (1 - chunk)[:, None, None].expand(-1, geometry.n_layers, geometry.n_heads).contiguous()
        activations, gradients = head_gradients(lens, sequence, ablation, hooks, scale=scale)
        part, absolute = ablation_terms(activations, gradients, ablation)
        estimate += part * len(chunk) / steps
        magnitude += absolute * len(chunk) / steps  # one pass (steps ≤ rows per pass): |path-averaged terms|
    return Estimate(estimate, magnitude)


def graddrop(lens: Lens, sequence: TargetSequence, ablation: Ablation, hooks: Sequence[Hook] = ()) -> Estimate:
    """Attribution's estimate, and AtP*'s GradDrop score as the magnitude (module docstring).

    With block b's residual updates detached, the gradient at a head output below block b is the
    gradient of block b's *input* residual (the skip path alone), taken with the clean gradient at
    block b's output; block b's own heads get none, and those above keep theirs."""
    geometry = lens.geometry
    n_layers = geometry.n_layers
    sites = Recording([lens.site_hook_name(ablation.site, layer) for layer in range(n_layers)], differentiable=True)
    outputs: dict[int, torch.Tensor] = {}

    def keep(block: int) -> Callable[..., None]:
        def hook(residual: torch.Tensor, hook: Any) -> None:
            outputs[block] = residual  # with its graph: a block's output, differentiated below

        return hook

    kept = [(lens.hook_name("resid_post", block), keep(block)) for block in range(n_layers)]
    logits = lens.run(list(sequence.ids), hooks=[*hooks, *kept], record=sites, positions=sequence.positions, grad=True).logits
    heads = sites.values()
    found = invariant_grad(
        mean_nll(logits, sequence.targets).sum(), [*heads, *(outputs[b] for b in range(n_layers))], retain_graph=True
    )
    gradients, at_outputs = list(found[:n_layers]), found[n_layers:]
    activations = [_per_head(head, geometry.n_heads) for head in heads]
    estimate = ablation_terms(activations, [_per_head(g, geometry.n_heads) for g in gradients], ablation)[0]
    total = torch.zeros_like(estimate)
    for block in range(n_layers):
        below = []
        if block:
            below = list(invariant_grad(outputs[block - 1], heads[:block], grad_outputs=[at_outputs[block]],
                                        retain_graph=block + 1 < n_layers))  # fmt: skip
        dropped = [*below, torch.zeros_like(gradients[block]), *gradients[block + 1 :]]
        total += ablation_terms(activations, [_per_head(g, geometry.n_heads) for g in dropped], ablation)[0].abs()
    return Estimate(estimate, total / max(1, n_layers - 1))


def target_exact(
    lens: Lens, sequence: TargetSequence, ablation: Ablation, hooks: Sequence[Hook] = (), *, max_rows: int | None = None
) -> Estimate:
    """The exact effect of ablating each head at the scored positions only, plus attribution's
    terms at the other positions; the magnitude adds the absolute exact part to the absolute
    terms of the other positions (module docstring)."""
    activations, gradients = head_gradients(lens, sequence, ablation, hooks)
    outside = torch.ones(len(sequence.ids), dtype=torch.bool)
    outside[sequence.positions] = False
    linear, absolute = ablation_terms(activations, gradients, ablation, positions=outside)
    exact = target_ablation_deltas(lens, sequence, ablation, hooks, max_rows=max_rows)
    return Estimate(exact + linear, exact.abs() + absolute)


def target_ablation_deltas(
    lens: Lens, sequence: TargetSequence, ablation: Ablation, hooks: Sequence[Hook] = (), *, max_rows: int | None = None
) -> HeadGrid:
    """`NLL(head ablated at the scored positions only) − NLL(clean)` of every head: the positions
    before the first scored one run once (their keys and values are the clean run's), then the
    scored positions run once per head, `max_rows` heads (in layer order) as the row groups of one
    pass, which share the layers below the lowest one's (default: `CACHE_ROW_TOKENS` cached
    positions over all rows, at least one row: each row holds its own copy of the cache above).
    The cached steps run on one thread (`one_thread`): on the default model they differed by about
    4e-6 nats between 1 and 2 threads otherwise; the context's forward keeps every thread."""
    geometry = lens.geometry
    refusal = lens.fast_path_refusal(None, hooks)
    if refusal:
        raise InputError(f"the target-exact estimator runs on the fast path, which cannot run this: {refusal}")
    ids = lens.as_batch(list(sequence.ids))
    first, stop = int(sequence.positions[0]), int(sequence.positions[-1]) + 1
    context, scored = ids[:, :first], ids[:, first:stop]
    max_rows = max(1, CACHE_ROW_TOKENS // stop) if max_rows is None else max_rows
    if first:
        cache = lens.run(context, attention_mask=torch.ones_like(context), hooks=hooks, cache=CacheSpec(stop)).cache
    else:
        cache = GrowingKVCache(geometry.n_layers, 1, CacheSpec(stop))
    attention = torch.ones(1, stop, dtype=torch.long, device=ids.device)

    def nll(heads: Sequence[Head]) -> torch.Tensor:
        rows = max(1, len(heads))
        mask = HeadMask.one_head_per_row(geometry, heads, z_ref=ablation.z_ref, site=ablation.site) if heads else None
        fanned = cache.fanned_out(rows, heads[0][0] if heads else 0)
        logits = lens.run(scored.expand(rows, -1), cache=fanned, attention_mask=attention.expand(rows, -1), mask=mask,
                          hooks=hooks).logits  # fmt: skip
        return token_nll(logits, sequence.targets).mean(dim=1).cpu()

    deltas = torch.empty(geometry.n_layers, geometry.n_heads, dtype=torch.float64)
    with one_thread():  # cached steps of few rows differ at float rounding between thread counts
        clean = nll([])[0]
        for heads in _chunks(geometry.all_heads(), max_rows):
            deltas[[layer for layer, _ in heads], [head for _, head in heads]] = nll(heads) - clean
    return deltas


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise InputError(f"integrated gradients need at least 1 step, got {steps}")


@dataclass(frozen=True)
class Estimator:
    """An estimator by name, with the step count of the path estimators: what attribution and
    hybrid PCS score heads with (`ScanOptions.estimator`, `ScanOptions.ig_steps`)."""

    name: str = "attribution"
    steps: int = 2

    def __post_init__(self) -> None:
        if self.name not in ESTIMATORS:
            raise InputError(f"unknown estimator {self.name!r}; choose one of {', '.join(ESTIMATORS)}")
        _check_steps(self.steps)

    @classmethod
    def parse(cls, text: str) -> Estimator:
        """`attribution`, `graddrop`, `target-exact`, or a path estimator with its steps, `ig:4`."""
        name, _, steps = text.partition(":")
        if steps and not steps.isdigit():
            raise InputError(f"estimator {text!r}: the step count after ':' must be a whole number")
        if steps and name not in PATH_ESTIMATORS:
            raise InputError(f"estimator {text!r}: only {' and '.join(PATH_ESTIMATORS)} take a step count")
        return cls(name, int(steps)) if steps else cls(name)

    def describe(self) -> str:
        """The name, with the step count of a path estimator (`ig:4`): what results record."""
        return f"{self.name}:{self.steps}" if self.name in PATH_ESTIMATORS else self.name


def estimate_heads(
    lens: Lens, sequence: TargetSequence, ablation: Ablation, estimator: Estimator = Estimator(), hooks: Sequence[Hook] = ()
) -> Estimate:
    """Every head's estimate and magnitude by `estimator`, with `hooks` acting in every forward."""
    if estimator.name == "ig":
        return integrated_gradients(lens, sequence, ablation, estimator.steps, hooks)
    if estimator.name == "eap-ig":
        return shared_path_gradients(lens, sequence, ablation, estimator.steps, hooks)
    plain = {"attribution": attribution, "graddrop": graddrop, "target-exact": target_exact}[estimator.name]
    return plain(lens, sequence, ablation, hooks)


def _per_head(tensor: torch.Tensor, n_heads: int) -> HeadOutputs:
    """`[row, pos, head, d_head]` (a residual slice counts as a head), detached."""
    return tensor.detach().reshape(*tensor.shape[:2], n_heads, -1)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for begin in range(0, len(items), size):
        yield items[begin : begin + size]
