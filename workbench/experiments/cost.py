"""What a job will cost, said before it starts: each stage's work counted in model passes, times
one forward and one decoding step measured on this machine (issue 22.1).

Passes are counted per example, in *forward equivalents* of a typical prompt:

- exact PCS: one clean forward, and per head the part of the network above that head's output
  (the ΔNLL engine restarts there): `(L − l) / L` of a forward for a head of layer l, so all heads
  cost `n_heads · (L + 1) / 2` forwards; each sequence of the variant (the control prompt of
  profile- and swap-contrast is a second one) pays it again. A restart computes logits only at
  the reference's positions, so the exact scan tends to take less than this count says;
- attribution: one forward and one backward, the backward counted as two forwards;
- hybrid: attribution, then exact PCS for the `top_m` candidates, at the average head's share;
- validation: the clean run and every head set ablated together, with and without the profile;
- the profile effect: three forwards (with, without and with a swapped profile);
- the ablation audit: exact PCS of every head under each kind, each kind's top-K ablated under
  every kind with and without the profile (a clean run each), and one forward for direct effects;
- decoding: one prefill and one cached step per new token, for each row of the decoder (two
  for the contrastive ones: DPS, CAD, random heads, routed DPS).

Not counted: loading, clustering's profile embeddings, the retrieval / induction scores of the
validation's pattern heads (synthetic sequences), figures. An estimate, not a promise: a loaded
machine or batching changes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from workbench.data.tokenized import TokenizedExample
from workbench.decoding import Greedy, generate
from workbench.engine.lens import Lens
from workbench.experiments.discovery import DiscoverSettings
from workbench.scores.pcs import VARIANTS, default_top_m

BACKWARD_FORWARDS = 2.0  # a backward pass costs about two forwards
CONTRASTIVE_ROWS = {"greedy": 1}  # rows per decoding step; every other decoder of the run contrasts two


@dataclass(frozen=True)
class Passes:
    """Work per example: full forwards of a typical prompt, and cached one-token decoding steps."""

    forwards: float = 0.0
    steps: float = 0.0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.forwards + other.forwards, self.steps + other.steps)

    def __mul__(self, factor: float) -> Passes:
        return Passes(self.forwards * factor, self.steps * factor)


def exact_head_forwards(n_layers: int, n_heads: int) -> float:
    """All heads ablated one at a time, each from its own layer up: `n_heads · (L + 1) / 2`."""
    return sum(n_heads * (n_layers - layer) / n_layers for layer in range(n_layers))


def pcs_passes(method: str, n_layers: int, n_heads: int, *, variant: str = "standard", top_m: int = 0) -> Passes:
    """One example's PCS scan (`method`: exact, attribution or hybrid with `top_m` exact heads)."""
    sequences = 1 + (VARIANTS[variant] is not None)
    attribution = 1 + BACKWARD_FORWARDS
    average_head = exact_head_forwards(n_layers, n_heads) / (n_layers * n_heads)
    per_sequence = {
        "exact": 1 + exact_head_forwards(n_layers, n_heads),
        "attribution": attribution,
        "hybrid": attribution + 1 + top_m * average_head,
    }[method]
    return Passes(forwards=sequences * per_sequence)


def discovery_passes(settings: DiscoverSettings, n_layers: int, n_heads: int, top_m: int | None = None) -> Passes:
    """One example's scan as `settings` run it (the hybrid's `top_m` defaults as the scan's does)."""
    total = n_layers * n_heads
    top_m = default_top_m(total, settings.selection_size(total)) if top_m is None else top_m
    return pcs_passes(settings.method, n_layers, n_heads, variant=settings.variant, top_m=top_m)


def cluster_discovery_passes(settings: DiscoverSettings, n_layers: int, n_heads: int, top_m: int | None = None) -> Passes:
    """At most what per-cluster discovery adds to a finished global scan: exact and attribution
    reuse its per-example scores; the hybrid scores each cluster's candidates exactly, which
    costs at most its `top_m` heads again per example (fewer where they are the global ones)."""
    if settings.method != "hybrid":
        return Passes()
    with_candidates = discovery_passes(settings, n_layers, n_heads, top_m)
    without = pcs_passes("hybrid", n_layers, n_heads, variant=settings.variant, top_m=0)
    return Passes(forwards=with_candidates.forwards - without.forwards)


def validation_passes(n_sets: int) -> Passes:
    """One example of the validation study: clean and each of `n_sets` head sets, with and without the profile."""
    return Passes(forwards=2 * (1 + n_sets))


PROFILE_EFFECT = Passes(forwards=3)


def audit_passes(n_kinds: int, n_layers: int, n_heads: int, *, self_repair: bool = True) -> Passes:
    """One example of the ablation audit (`workbench.experiments.audit`) with `n_kinds` kinds."""
    every_head = n_kinds * (1 + exact_head_forwards(n_layers, n_heads))
    cross = 2 * n_kinds * (1 + n_kinds)
    return Passes(forwards=every_head + cross + self_repair)


def decoding_passes(method: str, new_tokens: int) -> Passes:
    rows = CONTRASTIVE_ROWS.get(method, 2)
    return Passes(forwards=rows, steps=rows * new_tokens)


@dataclass(frozen=True)
class Calibration:
    """Seconds of one forward of a `tokens`-long prompt and of one cached decoding step, measured."""

    tokens: int
    forward: float
    step: float

    def seconds(self, passes: Passes) -> float:
        return passes.forwards * self.forward + passes.steps * self.step


def typical_tokens(examples: Sequence[TokenizedExample]) -> int:
    """The mean length of prompt and reference output."""
    return max(1, round(sum(len(e.prompt_ids) + len(e.target_ids) for e in examples) / max(1, len(examples))))


def calibrate(lens: Lens, tokens: int, *, steps: int = 8) -> Calibration:
    """Time the forward of a `tokens`-long prompt (a one-token greedy generation: its prefill) and
    a decoding step (what `steps` more tokens add), after a short warm-up."""
    ids = [lens.tokenizer.bos_token_id or 0] + [(7 * i + 11) % lens.geometry.d_vocab for i in range(tokens - 1)]
    prompt = ids[: max(1, min(tokens, lens.geometry.n_ctx - steps - 1))]

    def seconds(new_tokens: int, prompt: list[int]) -> float:
        start = time.perf_counter()
        generate(lens, [prompt], Greedy(), max_new_tokens=new_tokens, stop_at_eos=False)
        return time.perf_counter() - start

    seconds(2, prompt[:8])  # warm-up: first-call allocations are not the job's cost
    forward = seconds(1, prompt)
    step = max(0.0, seconds(steps + 1, prompt) - forward) / steps
    return Calibration(len(prompt), forward, step)


@dataclass(frozen=True)
class StagePlan:
    """One stage of a job: its examples, the work per example, and whether it is already done."""

    name: str
    examples: int
    per_example: Passes
    done: bool = False

    @property
    def passes(self) -> Passes:
        return Passes() if self.done else self.per_example * self.examples


def plan_lines(stages: Sequence[StagePlan], calibration: Calibration, hint: str | None = None) -> list[str]:
    """The plan as printed: one line per stage, the total, and how to make it cheaper."""
    lines = [f"plan (timed on this machine: a {calibration.tokens}-token forward {calibration.forward:.2f} s, "
             f"a decoding step {calibration.step:.3f} s):"]  # fmt: skip
    total = 0.0
    for stage in stages:
        seconds = calibration.seconds(stage.passes)
        total += seconds
        work = f"{stage.per_example.forwards:g} forwards" + (
            f" + {stage.per_example.steps:g} steps" if stage.per_example.steps else ""
        )
        state = "done, reused" if stage.done else f"about {duration(seconds)}"
        lines.append(f"  {stage.name}: {stage.examples} examples x {work} each: {state}")
    lines.append(f"  estimated total: about {duration(total)}" + (f"; cheaper: {hint}" if hint else ""))
    return lines


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def discovery_plan(
    lens: Lens, examples: Sequence[TokenizedExample], settings: DiscoverSettings, *, top_m: int | None = None, done: bool = False
) -> list[str]:
    """The plan of one PCS scan (`workbench discover`), timed on `lens`, with the cheaper methods' totals."""
    g = lens.geometry
    calibration = calibrate(lens, typical_tokens(examples))
    top_m = default_top_m(g.n_total_heads, settings.selection_size(g.n_total_heads)) if top_m is None else top_m
    stage = StagePlan(f"discovery ({settings.method} PCS, {settings.variant})", len(examples),
                      discovery_passes(settings, g.n_layers, g.n_heads, top_m), done)  # fmt: skip
    cheaper = []
    for method in ("hybrid", "attribution"):
        passes = pcs_passes(method, g.n_layers, g.n_heads, variant=settings.variant, top_m=top_m)
        if passes.forwards < stage.per_example.forwards:
            cheaper.append(f"--method {method} (about {duration(calibration.seconds(passes * len(examples)))})")
    return plan_lines([stage], calibration, hint=", ".join([*cheaper, "--limit N (fewer examples)"]))


def validation_plan(lens: Lens, examples: Sequence[TokenizedExample], n_sets: int) -> list[str]:
    """The plan of one validation study (`workbench validate`) of `n_sets` head sets, timed on `lens`."""
    stage = StagePlan(f"validation ({n_sets} head sets)", len(examples), validation_passes(n_sets))
    return plan_lines([stage], calibrate(lens, typical_tokens(examples)), hint="--n-random N (fewer random sets), --limit N")
