"""The ablation audit: do the "important" heads depend on how a head is removed?

The same examples are scored (each head alone, Δ NLL of the reference output with the profile)
under several ablation kinds (`workbench.scores.ablation`):

- `zero`: the head's output `z` set to 0;
- `mean`: `z` set to its mean over every position of every sequence of the set (one mean per
  condition: the sequences with the profile for the with-profile scores, without it for the others);
- `resample`: `z` at each position replaced by another example's `z` at that position (a seeded
  cyclic permutation of the set gives each example its donor, never itself; positions past the
  donor's end take the donor's mean `z`);
- `resid-slice`: the authors' discovery ablation (a slice of residual coordinates after W_O);
- `query-zero`: the head's query zeroed (the authors' DPS mask at full strength): uniform
  attention over the causal window, the running mean of its values;
- `scaled`: `z · (1 − α)`.

Then, with bootstrap intervals over examples (seeded):

- agreement of every pair of kinds: Spearman rank correlation of the heads' mean scores and the
  number of heads their top-K share;
- cross-ablation: each kind's top-K ablated together under every kind, with and without the
  profile. The top-K an example is measured with are chosen on the *other* examples (cross-fitted),
  so no example selects the heads it then tests;
- self-repair: each head's direct effect (`workbench.scores.direct`) against its total effect
  under zero ablation; direct − total is what later layers made up for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations, product
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench import io
from workbench.checkpoint import CheckpointStore, digest
from workbench.data.files import read_json
from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.scores.ablation import Ablation, resampled_outputs
from workbench.scores.direct import direct_effects
from workbench.scores.engine import sequence_nll
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence
from workbench.stats import bootstrap_mean_ci, resampled_indices
from workbench.typed_config import Fraction, NonNegativeInt, PositiveInt, typed_config

if TYPE_CHECKING:
    from workbench.data.tokenized import TokenizedExample
    from workbench.engine.lens import Lens

KINDS: tuple[str, ...] = ("zero", "mean", "resample", "resid-slice", "query-zero", "scaled")
CONDITIONS = ("with-profile", "without-profile")
SCORES_FILE, AGREEMENT_FILE, CROSS_FILE = "audit_scores.parquet", "audit_agreement.csv", "audit_cross.csv"
CROSS_ROWS_FILE, REPAIR_FILE, REPAIR_ROWS_FILE = "audit_cross.parquet", "audit_self_repair.csv", "audit_self_repair.parquet"
RECORD_FILE = "audit.json"
FILES = (SCORES_FILE, AGREEMENT_FILE, CROSS_FILE, CROSS_ROWS_FILE, REPAIR_FILE, REPAIR_ROWS_FILE, RECORD_FILE)


@typed_config
class AuditSettings:
    """What the audit compares: the ablation kinds, `scaled`'s α, the K of the top-K sets, the
    seed of the resample donors and of the bootstrap, whether self-repair is estimated, and the
    layers whose heads are scored (a head in layer l costs the layers above it: the top layers
    are the cheap ones)."""

    kinds: tuple[Literal[KINDS], ...] = KINDS  # type: ignore[valid-type]
    alpha: Fraction = 0.5
    top_k: PositiveInt = 10
    seed: NonNegativeInt = 0
    resamples: PositiveInt = 1000
    self_repair: bool = True
    max_rows: PositiveInt = 64
    layers: tuple[NonNegativeInt, ...] | None = None  # the layers whose heads are scored (None: all)

    name = "audit"

    def __post_init__(self) -> None:
        if len(set(self.kinds)) != len(self.kinds):
            raise InputError(f"audit: kinds are named twice in {', '.join(self.kinds)}")
        if len(self.kinds) < 2:
            raise InputError(f"audit: kinds must name at least two ablation kinds to compare, got {', '.join(self.kinds)}")


def check_audit(settings: AuditSettings, n_examples: int, n_layers: int | None = None, n_heads: int | None = None) -> None:
    """Refuse, in one line, an audit the examples (and the model's `n_layers` x `n_heads`) cannot support."""
    if n_examples < 2:
        why = "resample ablation takes a head's output from another example, and " if "resample" in settings.kinds else ""
        raise InputError(f"audit needs at least 2 examples, got {n_examples}: {why}each example's top-K heads are "
                         "chosen on the other examples")  # fmt: skip
    if n_layers is None or n_heads is None:
        return
    outside = [layer for layer in settings.layers or () if layer >= n_layers]
    if outside:
        raise InputError(f"audit: layer {outside[0]} of layers is out of range: the model has {n_layers} layers (from 0)")
    scored = len(settings.layers or range(n_layers)) * n_heads
    if settings.top_k >= scored:
        raise InputError(f"audit: top_k ({settings.top_k}) must be below the {scored} heads scored")


def donors(n: int, seed: int) -> list[int]:
    """Each example's resample donor: a seeded cyclic permutation, so never the example itself."""
    if n < 2:
        raise InputError(f"resample ablation needs at least 2 examples (a donor other than the example), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    donor = [0] * n
    for position, index in enumerate(order):
        donor[int(index)] = int(order[(position + 1) % n])
    return donor


def condition_sequences(examples: Sequence[TokenizedExample]) -> dict[str, list[TargetSequence]]:
    """Each example's `prompt ‖ target` with the profile and without it."""
    missing = [e.example_id for e in examples if e.no_profile_prompt_ids is None]
    if missing:
        raise InputError(f"example {missing[0]!r} has no prompt without the profile; the audit scores both")
    return {
        "with-profile": [TargetSequence(e.prompt_ids, e.target_ids) for e in examples],
        "without-profile": [TargetSequence(e.no_profile_prompt_ids, e.target_ids) for e in examples],  # type: ignore[arg-type]
    }


class KindAblations:
    """Every kind's `Ablation` for each sequence of one condition (`mean` and `resample` take their
    references from the condition's own sequences)."""

    def __init__(self, lens: Lens, settings: AuditSettings, sequences: Sequence[TargetSequence]):
        self.lens, self.settings, self.sequences = lens, settings, list(sequences)
        ids = [list(sequence.ids) for sequence in self.sequences]
        self.mean = (
            Ablation("mean", lens.mean_head_outputs(ids), digest(ids)) if "mean" in settings.kinds else None
        )  # fmt: skip
        self.donor = donors(len(ids), settings.seed) if "resample" in settings.kinds else None

    def key(self, kind: str, index: int) -> str:
        """What makes `kind`'s scores of sequence `index`: its tokens, the kind and its reference."""
        reference: Any = None
        if kind == "mean":
            reference = self.mean.reference_digest  # type: ignore[union-attr]
        elif kind == "resample":
            reference = list(self.sequences[self.donor[index]].ids)  # type: ignore[index]
        elif kind == "scaled":
            reference = self.settings.alpha
        return digest(list(self.sequences[index].ids), kind, reference)

    def of(self, kind: str, index: int) -> Ablation:
        if kind == "mean":
            return self.mean  # type: ignore[return-value]
        if kind == "resample":
            donor = self.sequences[self.donor[index]]  # type: ignore[index]
            return Ablation("resample", resampled_outputs(self.lens, donor.ids, len(self.sequences[index].ids)))
        if kind == "scaled":
            return Ablation("scaled", keep=1.0 - self.settings.alpha)
        return Ablation(kind)


def top_heads(grid: np.ndarray, k: int) -> list[Head]:
    """The k heads of largest score of a `[layer, head]` grid (ties: the lower index first; NaN: not scored)."""
    order = np.argsort(-np.nan_to_num(grid.reshape(-1), nan=-np.inf), kind="stable")[:k]
    return [(int(i) // grid.shape[1], int(i) % grid.shape[1]) for i in order]


@dataclass
class AuditResult:
    """The audit's tables (see the module docstring) and its record (settings, sizes, donors)."""

    scores: pd.DataFrame  # example_id, kind, layer, head, delta (with the profile)
    agreement: pd.DataFrame  # kind_a, kind_b, spearman (+ low, high), shared_top_k (+ low, high), k, n
    cross: pd.DataFrame  # selected_by, ablated_as, condition, delta, low, high, k, n
    cross_rows: pd.DataFrame  # example_id, selected_by, ablated_as, condition, delta, heads
    self_repair: pd.DataFrame  # layer, head, total, direct, repair, with intervals
    self_repair_rows: pd.DataFrame  # example_id, layer, head, total, direct
    record: dict[str, Any] = field(default_factory=dict)

    def grids(self) -> dict[str, np.ndarray]:
        """Each kind's mean score per head, `[layer, head]`."""
        layers, heads = int(self.scores["layer"].max()) + 1, int(self.scores["head"].max()) + 1
        grids = {}
        for kind in self.record["settings"]["kinds"]:
            means = self.scores[self.scores["kind"] == kind].groupby(["layer", "head"])["delta"].mean()
            grid = np.full((layers, heads), np.nan)
            for (layer, head), value in means.items():
                grid[int(layer), int(head)] = value
            grids[kind] = grid
        return grids

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        io.write_parquet(folder / SCORES_FILE, self.scores)
        io.write_text(folder / AGREEMENT_FILE, self.agreement.to_csv(index=False))
        io.write_text(folder / CROSS_FILE, self.cross.to_csv(index=False))
        io.write_parquet(folder / CROSS_ROWS_FILE, self.cross_rows)
        io.write_text(folder / REPAIR_FILE, self.self_repair.to_csv(index=False))
        io.write_parquet(folder / REPAIR_ROWS_FILE, self.self_repair_rows)
        io.write_json(folder / RECORD_FILE, self.record)

    @classmethod
    def load(cls, folder: str | Path) -> AuditResult:
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise InputError(f"{folder} is not an audit folder: {missing[0]} is missing")
        return cls(pd.read_parquet(folder / SCORES_FILE), pd.read_csv(folder / AGREEMENT_FILE), pd.read_csv(folder / CROSS_FILE),
                   pd.read_parquet(folder / CROSS_ROWS_FILE), pd.read_csv(folder / REPAIR_FILE),
                   pd.read_parquet(folder / REPAIR_ROWS_FILE), read_json(folder / RECORD_FILE))  # fmt: skip


def audit_ablations(
    lens: Lens,
    examples: Sequence[TokenizedExample],
    settings: AuditSettings = AuditSettings(),
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> AuditResult:
    """Score `examples` under every kind of `settings` and compare the kinds (module docstring).
    With `checkpoint` (a folder), each example's scores under each kind and its direct effects are
    kept as soon as they are done, keyed by content, so an interrupted audit resumes."""
    geometry = lens.geometry
    check_audit(settings, len(examples), geometry.n_layers, geometry.n_heads)
    layers = sorted(set(settings.layers)) if settings.layers else list(range(geometry.n_layers))
    scored = [(layer, head) for layer, head in geometry.all_heads() if layer in layers]
    store = None if checkpoint is None else CheckpointStore(checkpoint, {"model": lens.name, "audit": "per-head scores"})

    def cached(key: str, compute: Callable[..., Any], *args: Any, **options: Any) -> np.ndarray:
        """`compute(*args, **options)` as an array, or what the checkpoint holds under `key`."""
        key = digest(key, layers)
        if store is not None and key in store:
            return store.load(key)["grid"]
        grid = compute(*args, **options).numpy()
        if store is not None:
            store.save(key, {"grid": grid})
        return grid

    kinds, k, n = settings.kinds, settings.top_k, len(examples)
    sequences = condition_sequences(examples)
    ablations = {condition: KindAblations(lens, settings, sequences[condition]) for condition in CONDITIONS}
    grids = {kind: np.full((n, geometry.n_layers, geometry.n_heads), np.nan) for kind in kinds}
    score_rows = []
    steps = tqdm(list(product(range(n), kinds)), desc="audit: every head under every kind", disable=not progress)
    for index, kind in steps:
        with_profile = ablations["with-profile"]
        grid = cached(with_profile.key(kind, index), exact_deltas, lens, sequences["with-profile"][index],
                      with_profile.of(kind, index), scored, max_rows=settings.max_rows)  # fmt: skip
        grids[kind][index] = grid
        score_rows += [{"example_id": examples[index].example_id, "kind": kind, "layer": layer, "head": head,
                        "delta": float(grid[layer, head])} for layer, head in scored]  # fmt: skip
    say(f"  scored {len(scored)} heads x {len(kinds)} kinds on {n} examples")

    cross_rows = []
    for index in range(n):
        others = [i for i in range(n) if i != index]
        chosen = {kind: top_heads(grids[kind][others].mean(axis=0), k) for kind in kinds}
        for condition, ablated_as in product(CONDITIONS, kinds):
            ablation = ablations[condition].of(ablated_as, index)
            masks = [ablation.together(lens, chosen[kind]) for kind in kinds]
            deltas = sequence_nll(lens, sequences[condition][index], masks, max_rows=settings.max_rows).deltas
            cross_rows += [{"example_id": examples[index].example_id, "selected_by": kind, "ablated_as": ablated_as,
                            "condition": condition, "delta": float(delta), "heads": _heads_text(chosen[kind])}
                           for kind, delta in zip(kinds, deltas.tolist())]  # fmt: skip
    cross_rows_frame = pd.DataFrame(cross_rows)

    repair_rows = []
    if settings.self_repair:
        for index in tqdm(range(n), desc="audit: direct effects", disable=not progress):
            sequence = sequences["with-profile"][index]
            total = grids["zero"][index] if "zero" in kinds else exact_deltas(lens, sequence, Ablation("zero"), scored).numpy()
            direct = cached(digest(list(sequence.ids), "direct"), direct_effects, lens, sequence)
            repair_rows += [{"example_id": examples[index].example_id, "layer": layer, "head": head,
                             "total": float(total[layer, head]), "direct": float(direct[layer, head])}
                            for layer, head in scored]  # fmt: skip
    repair_rows_frame = pd.DataFrame(repair_rows, columns=["example_id", "layer", "head", "total", "direct"])

    full_top = {kind: top_heads(grids[kind].mean(axis=0), k) for kind in kinds}
    record = {
        "settings": {"kinds": list(kinds), "alpha": settings.alpha, "top_k": k, "seed": settings.seed,
                     "resamples": settings.resamples, "self_repair": settings.self_repair},
        "n_examples": n, "example_ids": [e.example_id for e in examples], "model": lens.name,
        "heads": geometry.n_total_heads, "layers_scored": layers, "heads_scored": len(scored),
        "top_k_heads": {kind: [list(head) for head in heads] for kind, heads in full_top.items()},
        "resample_donors": {condition: None if a.donor is None else [examples[d].example_id for d in a.donor]
                            for condition, a in ablations.items()},
        "mean_reference": "mean z over every position (prompt and target) of the condition's sequences, all examples pooled",
        "selection": "cross-fitted: each example's top-K heads are chosen on the other examples' mean scores",
        "interval": f"95% percentile bootstrap over examples, {settings.resamples} resamples, seed {settings.seed}",
    }  # fmt: skip
    return AuditResult(
        pd.DataFrame(score_rows), agreement_table(grids, k, settings.resamples, settings.seed),
        cross_table(cross_rows_frame, k, settings.resamples, settings.seed), cross_rows_frame,
        self_repair_table(repair_rows_frame, settings.resamples, settings.seed), repair_rows_frame, record,
    )  # fmt: skip


def _heads_text(heads: Sequence[Head]) -> str:
    return " ".join(f"L{layer}H{head}" for layer, head in heads)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    return pd.DataFrame(values.reshape(-1, values.shape[-1])).rank(axis=1).to_numpy().reshape(values.shape)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of `a` and `b` along the last axis (Pearson of average ranks)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(axis=-1, keepdims=True), rb - rb.mean(axis=-1, keepdims=True)
    return (ra * rb).sum(axis=-1) / np.sqrt((ra**2).sum(axis=-1) * (rb**2).sum(axis=-1))


def shared_top_k(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """How many of the k largest entries along the last axis `a` and `b` share."""

    def top(values: np.ndarray) -> np.ndarray:
        flags = np.zeros(values.shape, dtype=bool)
        np.put_along_axis(flags, np.argsort(-values, axis=-1, kind="stable")[..., :k], True, axis=-1)
        return flags

    return (top(a) & top(b)).sum(axis=-1)


def agreement_table(grids: dict[str, np.ndarray], k: int, resamples: int, seed: int) -> pd.DataFrame:
    """Every pair of kinds: Spearman of the heads' mean scores and the top-K they share, each with a
    percentile bootstrap interval over examples (the same draws for every pair)."""
    n = next(iter(grids.values())).shape[0]
    scored = np.all([np.isfinite(grid.reshape(n, -1)).all(axis=0) for grid in grids.values()], axis=0)  # heads every kind scored
    flat = {kind: grid.reshape(n, -1)[:, scored] for kind, grid in grids.items()}
    draws = resampled_indices(n, resamples, seed)
    resampled = {kind: values[draws].mean(axis=1) for kind, values in flat.items()}  # [resample, heads]
    rows = []
    for a, b in combinations(grids, 2):
        mean_a, mean_b = flat[a].mean(axis=0), flat[b].mean(axis=0)
        rho, shared = spearman(resampled[a], resampled[b]), shared_top_k(resampled[a], resampled[b], k)
        rows.append({"kind_a": a, "kind_b": b, "spearman": float(spearman(mean_a, mean_b)),
                     "spearman_low": float(np.percentile(rho, 2.5)), "spearman_high": float(np.percentile(rho, 97.5)),
                     "shared_top_k": int(shared_top_k(mean_a, mean_b, k)), "shared_low": float(np.percentile(shared, 2.5)),
                     "shared_high": float(np.percentile(shared, 97.5)), "k": k, "n": n})  # fmt: skip
    return pd.DataFrame(rows)


def _mean_interval(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float, float]:
    """Mean over the first axis with its percentile-bootstrap interval (NaN bounds below 2 values)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    low, high = bootstrap_mean_ci(np.array(values, dtype=float), n_resamples=resamples, seed=seed)
    return mean, float(low), float(high)


def cross_table(rows: pd.DataFrame, k: int, resamples: int, seed: int) -> pd.DataFrame:
    """Mean Δ NLL of each kind's (cross-fitted) top-K ablated together under each kind, per condition."""
    table = []
    for (selected_by, ablated_as, condition), group in rows.groupby(["selected_by", "ablated_as", "condition"], sort=False):
        mean, low, high = _mean_interval(group["delta"].to_numpy(), resamples, seed)
        table.append({"selected_by": selected_by, "ablated_as": ablated_as, "condition": condition, "delta": mean,
                      "low": low, "high": high, "k": k, "n": len(group)})  # fmt: skip
    return pd.DataFrame(table)


def self_repair_table(rows: pd.DataFrame, resamples: int, seed: int) -> pd.DataFrame:
    """Per head: mean total and direct effect and `repair = direct − total`, each with its interval."""
    table = []
    for (layer, head), group in rows.groupby(["layer", "head"]):
        entry: dict[str, Any] = {"layer": int(layer), "head": int(head), "n": len(group)}
        values = {"total": group["total"].to_numpy(), "direct": group["direct"].to_numpy()}
        values["repair"] = values["direct"] - values["total"]
        for name, value in values.items():
            entry[name], entry[f"{name}_low"], entry[f"{name}_high"] = _mean_interval(value, resamples, seed)
        table.append(entry)
    return pd.DataFrame(table)
