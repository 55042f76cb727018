"""Head-score estimators against exact PCS, at the demo's prompt length and at about 1k tokens.

Every head of the default model (30 layers x 9 heads) is scored exactly (the truth: one ablation
per head, `workbench.scores.exact`) and by each estimator of `workbench.scores.estimators`, per
sequence (standard PCS, zero ablation unless `--ablation`). Reported per estimator and set:
Spearman's rho against exact over all heads, per example and of the mean over examples; the recall
of the exact top-10 (of the mean) by the estimator's top-10, and among the 30 candidates the hybrid
rule takes (half by estimate, half by magnitude, `workbench.scores.pcs.hybrid_candidates`); and the
cost per sequence as a ratio to plain attribution timed just before it in the same process (the
machine may be shared, so each ratio is rough).

Sets (`--sets`):

- `demo`: the first `--examples` LaMP-4 `train` examples of the bundled demo set, prompts as
  `workbench discover` makes them (plain few-shot, 5 BM25 items; about 290 tokens);
- `long`: generated ~`--long-tokens`-token prompts from the demo set. Its users have 5 to 8 short
  profile items, so each chosen user's profile is pooled with the items of every demo user (train
  and dev) of the same machine-checkable style, items about the question's own article left out;
  24 BM25 items under a prompt cap of `--long-tokens` less the reference. One example of each of
  the first `--examples` large styles;
- `commits`: the first `--examples` `train` examples of a LaMP-4-schema folder (`--commits PATH`,
  e.g. the commit-message set built by `workbench.data.commits`, which is not in git), with the
  ~1k-token recipe of its data card (`long_prompts.py`).

Exact grids are cached in `--cache` by content (`exact/`), so a rerun costs only the estimators.

    .venv/bin/python benchmarks/bench_estimators.py [--examples 3] [--sets demo long commits]
        [--commits /path/to/commits-LaMP-4] [--estimators attribution graddrop target-exact ig:2] [--markdown]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from long_prompts import folder_examples, prompt_config
from scipy.stats import spearmanr

LARGE_STYLES = ("lowercase", "caps", "titlecase", "question", "exclaim", "short", "quoted")
DEFAULT_ESTIMATORS = ("attribution", "graddrop", "target-exact", "ig:1", "ig:2", "eap-ig:8")
TOP_K = 10


def demo_examples(lens, n: int):
    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples

    return tokenized_examples(lens, load_examples(None, "LaMP-4", "train")[:n], PromptConfig(seed=0))


def long_examples(lens, n: int, tokens: int):
    """`n` demo LaMP-4 examples (one per large style) whose profiles pool every same-style demo
    user's items, tokenized with 24 BM25 items under a cap of `tokens` prompt-plus-reference tokens."""
    from workbench.data.prompts import build_prompt, target_text
    from workbench.data.sources import load_examples
    from workbench.data.tasks import task_spec
    from workbench.data.tokenized import TokenizedExample

    train, dev = load_examples(None, "LaMP-4", "train"), load_examples(None, "LaMP-4", "dev")
    spec = task_spec("LaMP-4")
    pools: dict[str, dict[tuple[str, str], dict]] = {}
    for example in train + dev:
        for item in example.profile:
            pools.setdefault(example.style, {}).setdefault((item["text"], item["title"]), item)
    chosen = [next(e for e in train if e.style == style) for style in LARGE_STYLES[:n]]
    tokenized = []
    for example in chosen:
        article = spec.content(example.input).strip()
        pooled = [item for key, item in sorted(pools[example.style].items()) if item["text"].strip() != article]
        long = dataclasses.replace(example, profile=tuple(pooled))
        target = lens.encode(target_text(long, "plain"))
        config = prompt_config(max_prompt_tokens=tokens - len(target))
        prompt = build_prompt(lens, long, config, answer_room=len(target))
        tokenized.append(TokenizedExample(long.example_id, long.user_id, prompt, target))
    return tokenized


def set_examples(lens, name: str, args):
    if name == "demo":
        return demo_examples(lens, args.examples)
    if name == "long":
        return long_examples(lens, args.examples, args.long_tokens)
    if args.commits is None:
        raise SystemExit("the commits set needs --commits PATH (a LaMP-4-schema folder)")
    return folder_examples(lens, args.commits, args.examples)


def cached(cache: Path, parts: list, compute):
    """`compute()` (a dict of tensors and numbers), stored under the digest of `parts`."""
    path = cache / (hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24] + ".pt")
    if path.exists():
        return torch.load(path)
    value = compute()
    torch.save(value, path)
    return value


def exact_grid(lens, sequence, ablation, cache: Path) -> dict:
    """Exact ΔNLL of every head of `sequence` and the seconds it took (cached by content)."""
    from workbench.scores.exact import exact_deltas

    def compute():
        start = time.perf_counter()
        grid = exact_deltas(lens, sequence, ablation)
        seconds = time.perf_counter() - start
        print(f"  exact: {len(sequence.ids)} tokens in {seconds:.0f} s", flush=True)
        return {"grid": grid, "seconds": seconds}

    key = [lens.name, ablation.name, ablation.reference_digest, list(sequence.ids), sequence.prompt_len]
    return cached(cache / "exact", key, compute)


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def estimator_grids(lens, sequence, ablation, names) -> dict:
    """Every estimator's grids of one sequence, each with its seconds and those of plain
    attribution run just before it (the cost baseline measured in the same process)."""
    from workbench.scores.estimators import Estimator, attribution, estimate_heads

    grids = {}
    for name in names:
        estimator = Estimator.parse(name)
        _, baseline = timed(lambda: attribution(lens, sequence, ablation))
        found, seconds = timed(lambda estimator=estimator: estimate_heads(lens, sequence, ablation, estimator))
        print(f"  {name}: {seconds:.1f} s (attribution {baseline:.1f} s)", flush=True)
        grids[name] = {
            "estimate": found.estimate,
            "magnitude": found.magnitude,
            "seconds": seconds,
            "attribution_seconds": baseline,
        }
    return grids


def summary(exact: torch.Tensor, per_sequence: list[dict], names) -> dict:
    """Per estimator: Spearman per example and of the means, top-10 recalls, cost ratios."""
    from workbench.scores.pcs import hybrid_candidates
    from workbench.scores.ranking import ranked_heads

    truth = set(ranked_heads(exact.mean(0))[:TOP_K])
    rows = {}
    for name in names:
        estimates = torch.stack([grids[name]["estimate"] for grids in per_sequence])
        magnitudes = torch.stack([grids[name]["magnitude"] for grids in per_sequence])
        rho = [float(spearmanr(e.flatten(), x.flatten()).statistic) for e, x in zip(exact, estimates)]
        ratios = [grids[name]["seconds"] / grids[name]["attribution_seconds"] for grids in per_sequence]
        mean, spread = estimates.mean(0), magnitudes.mean(0)
        rows[name] = {
            "rho_per_example": rho,
            "rho_of_mean": float(spearmanr(exact.mean(0).flatten(), mean.flatten()).statistic),
            "recall_top10": len(truth & set(ranked_heads(mean)[:TOP_K])) / TOP_K,
            "recall_top10_in_30": len(truth & set(hybrid_candidates(mean, spread, 3 * TOP_K))) / TOP_K,
            "cost_ratios": ratios,
            "seconds": [grids[name]["seconds"] for grids in per_sequence],
        }
    return rows


def markdown(results: dict) -> str:
    lines = []
    for set_name, result in results.items():
        lines += [
            f"**{set_name}** ({result['examples']} examples, {result['tokens']} tokens; exact PCS {result['exact_seconds']} s "
            "per example)",
            "",
            "| estimator | rho per example | rho of the mean | top-10 recall | exact top-10 in 30 hybrid candidates "
            "| cost / attribution (median, range) |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in result["estimators"].items():
            rho = ", ".join(f"{r:.3f}" for r in row["rho_per_example"])
            ratios = row["cost_ratios"]
            lines.append(
                f"| {name} | {rho} | {row['rho_of_mean']:.3f} | {row['recall_top10']:.1f} | {row['recall_top10_in_30']:.1f} "
                f"| {statistics.median(ratios):.1f}× ({min(ratios):.1f}–{max(ratios):.1f}) |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--long-tokens", type=int, default=1000)
    parser.add_argument("--sets", nargs="+", default=["demo", "long"], choices=["demo", "long", "commits"])
    parser.add_argument("--commits", type=Path, help="A LaMP-4-schema folder for the commits set.")
    parser.add_argument("--estimators", nargs="+", default=list(DEFAULT_ESTIMATORS))
    parser.add_argument("--exact-only", action="store_true", help="Only fill the exact cache.")
    parser.add_argument("--ablation", default="zero", choices=["zero", "mean", "resid-slice"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "workbench-estimators")
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    import transformers

    from workbench.engine.models import load_model
    from workbench.scores.ablation import make_ablation
    from workbench.scores.nll import TargetSequence, reference_sequences

    if not args.exact_only:
        from workbench.scores.estimators import Estimator

        for name in args.estimators:
            Estimator.parse(name)  # refuse a bad name before the model loads
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    (args.cache / "exact").mkdir(parents=True, exist_ok=True)
    lens = load_model(device="cpu")
    results = {}
    for set_name in args.sets:
        examples = set_examples(lens, set_name, args)
        ablation = make_ablation(lens, args.ablation, reference_sequences(examples))
        exact, per_sequence = [], []
        for example in examples:
            sequence = TargetSequence(example.prompt_ids, example.target_ids)
            print(f"{set_name} {example.example_id}: {len(sequence.ids)} tokens ({len(sequence.targets)} scored)", flush=True)
            exact.append(exact_grid(lens, sequence, ablation, args.cache))
            if not args.exact_only:
                per_sequence.append(estimator_grids(lens, sequence, ablation, args.estimators))
        if args.exact_only:
            continue
        lengths = [len(e.prompt_ids) + len(e.target_ids) for e in examples]
        seconds = [entry["seconds"] for entry in exact]
        results[set_name] = {
            "examples": len(examples),
            "tokens": f"{min(lengths)}–{max(lengths)}",
            "exact_seconds": f"{min(seconds):.0f}–{max(seconds):.0f}",
            "estimators": summary(torch.stack([entry["grid"] for entry in exact]), per_sequence, args.estimators),
        }
    text = json.dumps({"threads": args.threads, "ablation": args.ablation, "results": results}, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    if args.markdown:
        print(markdown(results))


if __name__ == "__main__":
    main()
