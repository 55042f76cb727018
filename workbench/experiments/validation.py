"""The validation study: do the selected preference heads matter more than other heads, and is
what they carry the profile?

On held-out examples, each head set is ablated *together* and the rise of the reference output's
NLL is measured, with the profile in the prompt and without it. Head sets: the top-K preference
heads, `n_random` random K-head sets (optionally with the preference set's layer distribution),
and the top-K retrieval and induction heads. The summary gives, per head set and condition
(`profile`, `no-profile`, and their difference `profile-specific`), the mean ΔNLL with a
bootstrap interval over examples and a permutation p-value against the random sets:
`(1 + #{random sets with mean ≥ this set's mean}) / (1 + n_random)` (one-sided).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from workbench.checkpoint import CheckpointStore, digest
from workbench.data.tokenized import TokenizedExample
from workbench.engine.lens import Lens
from workbench.engine.masks import Head, HeadMask
from workbench.engine.workers import LocalWorkers, Workers
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.scores.ablation import make_ablation
from workbench.scores.engine import sequence_nll
from workbench.scores.nll import TargetSequence, reference_sequences
from workbench.scores.ranking import ranked_heads
from workbench.stats import bootstrap_mean_ci
from workbench.tensor_types import HeadGrid

CONDITIONS = {"profile": "prompt_ids", "no-profile": "no_profile_prompt_ids"}


def head_sets(
    lens: Lens,
    heads: HeadWeights,
    *,
    k: int | None = None,
    n_random: int = 20,
    match_layers: bool = False,
    retrieval: HeadGrid | None = None,
    induction: HeadGrid | None = None,
    seed: int = 0,
) -> list[tuple[str, int, list[Head]]]:
    """`(head_set, draw, heads)` for the preference set, the random draws and the pattern-score sets."""
    heads.check(lens.geometry)
    preference = heads.heads()
    k = len(preference) if k is None else int(k)
    if not 1 <= k <= len(preference):
        raise InputError(f"k must lie in 1..{len(preference)} (the heads with non-zero weight), got {k}")
    if n_random < 1:
        raise InputError(f"the validation study needs at least one random head set, got n_random={n_random}")
    preference = preference[:k]
    sets = [("preference", 0, preference)]
    for draw in range(n_random):
        sets.append(("random", draw, _random_set(lens, preference, match_layers, seed + draw)))
    for name, grid in (("retrieval", retrieval), ("induction", induction)):
        if grid is not None:
            lens.geometry.check_grid(torch.as_tensor(grid), f"{name} scores")
            sets.append((name, 0, ranked_heads(grid)[:k]))
    return sets


def _random_set(lens: Lens, preference: list[Head], match_layers: bool, seed: int) -> list[Head]:
    """K random heads; with `match_layers`, as many in each layer as the preference set has."""
    if not match_layers:
        return HeadWeights.random_heads(lens.geometry, len(preference), seed=seed).heads()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for layer in sorted({layer for layer, _ in preference}):
        count = sum(1 for other, _ in preference if other == layer)
        chosen += [(layer, int(h)) for h in torch.randperm(lens.n_heads, generator=generator)[:count]]
    return chosen


HeadSets = list[tuple[str, int, list[Head]]]


def validation_deltas(
    lens: Lens,
    examples: Sequence[TokenizedExample],
    sets: HeadSets | Mapping[str, HeadSets],
    *,
    ablation: str = "zero",
    max_rows: int = 64,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    reference: Sequence[Sequence[int]] | None = None,
    workers: Workers | None = None,
) -> pd.DataFrame:
    """Per example, condition and head set: the set's number of heads (`n_heads`), clean NLL, NLL with
    the set ablated together, ΔNLL.

    `sets` is one study's head sets, or several studies by name (e.g. the head sets of two PCS
    variants): the table then has a `heads` column naming the study, and a head set shared by
    studies (the same random draw) is ablated once. With `checkpoint`, each finished example is
    stored at once, keyed by its token ids, so an interrupted study resumes where it stopped.
    `reference`: the mean ablation's sequences (default: the examples' prompt ‖ target; a shard
    passes its whole run's); `workers` run the examples (default: this process, on `lens`)."""
    if not examples:
        raise InputError("no held-out examples to validate on")
    for example in examples:
        example.check_fits(lens.geometry.n_ctx)
        if example.no_profile_prompt_ids is None:
            raise InputError(
                f"example {example.example_id!r}: the validation study needs its prompt without the profile (prompt_no_profile)"
            )
    studies = {"": sets} if not isinstance(sets, Mapping) else dict(sets)
    unique = list(dict.fromkeys(tuple(heads) for study in studies.values() for _, _, heads in study))
    if reference is None:
        reference = reference_sequences(examples)
    chosen = make_ablation(lens, ablation, reference)
    masks = [chosen.together(lens, list(heads)) for heads in unique]
    store = None
    if checkpoint is not None:
        store = CheckpointStore(checkpoint, {
            "model": lens.name, "geometry": vars(lens.geometry), "dtype": str(next(lens.bridge.parameters()).dtype),
            "ablation": ablation, "sets": digest([list(heads) for heads in unique]), "max_rows": max_rows,
            "reference": digest([list(r) for r in reference]) if ablation == "mean" else None,
        })  # fmt: skip
    keys = [digest([list(e.prompt_ids), list(e.no_profile_prompt_ids), list(e.target_ids)]) for e in examples]  # type: ignore[arg-type]
    nlls = {i: torch.from_numpy(store.load(key)["nll"]) for i, key in enumerate(keys) if store is not None and key in store}
    todo = [i for i in range(len(examples)) if i not in nlls]
    workers = workers if workers is not None else LocalWorkers(lens)
    with tqdm(total=len(examples), initial=len(nlls), desc="validation", unit="example", disable=not progress) as bar:
        for position, nll in workers.map(example_nlls, [(examples[i],) for i in todo], shared=(masks, max_rows)):
            nlls[todo[position]] = nll
            if store is not None:
                store.save(keys[todo[position]], {"nll": nll.numpy()})
            bar.update()
    rows = []
    for index, example in enumerate(examples):
        nll = nlls[index]
        for row, condition in enumerate(CONDITIONS):
            clean = float(nll[row, 0])
            for study, study_sets in studies.items():
                for name, draw, heads in study_sets:
                    value = float(nll[row, 1 + unique.index(tuple(heads))])
                    rows.append((study, example.example_id, example.user_id, name, draw, len(heads), condition, clean, value,
                                 value - clean))  # fmt: skip
    columns = ["heads", "example_id", "user_id", "head_set", "draw", "n_heads", "condition",
               "nll_clean", "nll_masked", "delta_nll"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    return table.drop(columns="heads") if not isinstance(sets, Mapping) else table


def example_nlls(
    lens: Lens, masks: list[HeadMask], max_rows: int, example: TokenizedExample
) -> Float[torch.Tensor, "condition sets_plus_one"]:
    """One example's mean target NLL per condition, clean then with each mask (the unit of work a
    worker runs for `validation_deltas`)."""
    return torch.stack([
        torch.tensor([result.clean_mean, *result.masked_mean.tolist()], dtype=torch.float64)
        for result in (
            sequence_nll(lens, TargetSequence(getattr(example, field), example.target_ids), masks, max_rows=max_rows)
            for field in CONDITIONS.values()
        )
    ])  # fmt: skip


def summarize_validation(deltas: pd.DataFrame, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean ΔNLL per head set and condition, bootstrap interval over examples, permutation p-value
    (per study, with a `heads` column, when the table has one) and, when the table records it, the
    set's number of heads (`n_heads`: K)."""
    if "heads" in deltas.columns:
        parts = [
            summarize_validation(part.drop(columns="heads"), level=level, n_resamples=n_resamples, seed=seed).assign(heads=name)
            for name, part in deltas.groupby("heads", sort=False)
        ]
        return pd.concat(parts, ignore_index=True)
    wide = deltas.pivot_table(index="example_id", columns=["condition", "head_set", "draw"], values="delta_nll", sort=False)
    per_condition = {condition: wide[condition] for condition in CONDITIONS}
    per_condition["profile-specific"] = wide["profile"] - wide["no-profile"]
    records = []
    for condition, table in per_condition.items():
        random_means = torch.tensor(table["random"].mean(axis=0).to_numpy())  # one mean per draw
        for name in dict.fromkeys(table.columns.get_level_values(0)):
            values = torch.tensor(table[name].to_numpy()).mean(dim=1)  # per example (random: over draws)
            low, high = bootstrap_mean_ci(values, level=level, n_resamples=n_resamples, seed=seed)
            mean = float(values.mean())
            p_value = float("nan") if name == "random" else (1 + int((random_means >= mean).sum())) / (1 + len(random_means))
            records.append((name, condition, mean, float(low), float(high), p_value, len(values), len(random_means)))
    columns = ["head_set", "condition", "mean_delta_nll", "ci_low", "ci_high", "p_value_vs_random", "n_examples", "n_random"]
    summary = pd.DataFrame(records, columns=columns)
    if "n_heads" in deltas.columns:
        summary["n_heads"] = summary["head_set"].map(deltas.groupby("head_set")["n_heads"].max()).astype(int)
    return summary


def validate_heads(
    lens: Lens,
    examples: Sequence[TokenizedExample],
    heads: HeadWeights,
    *,
    k: int | None = None,
    n_random: int = 20,
    match_layers: bool = False,
    retrieval: HeadGrid | None = None,
    induction: HeadGrid | None = None,
    ablation: str = "zero",
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """The validation study's summary table (see the module docstring); `k` defaults to all
    heads with a non-zero weight."""
    sets = head_sets(
        lens, heads, k=k, n_random=n_random, match_layers=match_layers, retrieval=retrieval, induction=induction, seed=seed
    )
    return summarize_validation(validation_deltas(lens, examples, sets, ablation=ablation, progress=progress), seed=seed)
