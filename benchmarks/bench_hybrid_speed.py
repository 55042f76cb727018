"""Hybrid PCS discovery: this code against a baseline commit, in one command (issue 13.1).

Both run `score_heads(method="hybrid")` on the first `--examples` LaMP-4 `train` examples of the
demo set (tokenized as `workbench discover` does), each in its own subprocess: the baseline from a
`git archive` of `--baseline` put first on `PYTHONPATH`, with the candidate count `workbench
discover` used there (`top_m = 3·K`); this code with the same count (`current-3k`: what the
engine changes alone) and with its default rule for `top_k = K` (`current`; `--top-m M` gives it M
candidates instead, `--estimator NAME` ranks them by another estimator). Runs alternate
(baseline, current-3k, current, baseline, ...) so that a changing machine load hits all; each
reports its wall time, the time inside attribution and exact scoring, and its top-K, whose recall
of the exact top-K is computed when `bench_hybrid_recall.py` has cached the exact truth.

With `--data DIR` (a LaMP-4-schema folder, e.g. the commit-message set of
`workbench/data/commits/`) the examples are that folder's `train` examples with the ~1k-token
recipe of its data card (`long_prompts.py`: `--profile-k 24 --max-prompt-tokens 1024`); `--codes` picks the runs.

    .venv/bin/python benchmarks/bench_hybrid_speed.py [--baseline 39185c3] [--variant profile-contrast] [--repeats 1]
        [--data DIR --profile-k 24 --max-prompt-tokens 1024] [--codes baseline current-3k]
        [--codes current --top-m 41 --estimator target-exact]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import long_prompts
import torch

REPOSITORY = Path(__file__).resolve().parents[1]
# baseline: the baseline commit with top_m = 3·K; current-3k: this code with the same candidate
# count (what the engine alone changes); current: this code with its default candidate rule.
CODES = ("baseline", "current-3k", "current")


def worker(args) -> None:
    """One timed hybrid discovery with whatever `workbench` is importable; JSON on stdout."""
    import transformers

    import workbench.scores.pcs as pcs
    from workbench.data.prompts import tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    lens = load_model(device="cpu")
    examples = tokenized_examples(lens, load_examples(args.data, "LaMP-4", "train"), prompt_config(args))[: args.examples]
    spent = {"estimate_heads": 0.0, "exact_deltas": 0.0}
    for name in spent:
        original = getattr(pcs, name)

        def timed(*a, _original=original, _name=name, **k):
            start = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                spent[_name] += time.perf_counter() - start

        setattr(pcs, name, timed)
    options = {"top_k": args.top_k, "top_m": args.top_m} if args.worker == "current" else {"top_m": 3 * args.top_k}
    if args.worker == "current" and args.estimator:
        options["estimator"] = args.estimator
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = pcs.score_heads(lens, examples, method="hybrid", variant=args.variant, progress=False, **options)
    seconds = time.perf_counter() - start
    from workbench.heads import ranked_heads

    print(
        json.dumps(
            {
                "code": args.worker,
                "workbench": str(Path(pcs.__file__).parents[2]),
                "seconds": seconds,
                "attribution_seconds": spent["estimate_heads"],
                "exact_seconds": spent["exact_deltas"],
                "top_m": int(result.exact.sum()),
                "mean_tokens": sum(len(example.prompt_ids) + len(example.target_ids) for example in examples) / len(examples),
                "top": ranked_heads(result.mean())[: args.top_k],
                "load_before": load,
                "load_after": os.getloadavg()[0],
            }
        )
    )


def prompt_config(args):
    """How the examples are prompted: as `workbench discover` does, or with the long-prompt recipe."""
    from workbench.data.prompts import PromptConfig

    return PromptConfig(seed=0) if args.data is None else long_prompts.prompt_config(args.profile_k, args.max_prompt_tokens)


def exact_truth(args) -> torch.Tensor | None:
    """The exact mean PCS of every head, if `bench_hybrid_recall.py` has cached every sequence."""
    import transformers
    from bench_hybrid_recall import sequence_grids

    from workbench.data.prompts import tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model
    from workbench.scores.ablation import make_ablation
    from workbench.scores.pcs import variant_sequences

    transformers.utils.logging.disable_progress_bar()
    lens = load_model(device="cpu")
    zero = make_ablation(lens, "zero")
    examples = tokenized_examples(lens, load_examples(args.data, "LaMP-4", "train"), prompt_config(args))[: args.examples]
    total = 0
    try:
        for example in examples:
            for sign, sequence in variant_sequences(example, args.variant):
                total = total + sign * sequence_grids(lens, sequence, zero, args.truth_cache, compute=False)["exact"]
    except FileNotFoundError:
        return None
    return total / len(examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="39185c3")
    parser.add_argument("--variant", default="profile-contrast")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--truth-cache", type=Path, default=Path(tempfile.gettempdir()) / "workbench-hybrid-recall")
    parser.add_argument("--data", default=None, help="a LaMP-4-schema folder (default: the demo set)")
    long_prompts.add_options(parser)
    parser.add_argument("--codes", nargs="+", choices=CODES, default=list(CODES))
    parser.add_argument("--top-m", type=int, default=None, help="the `current` run's candidates (default: its rule for K)")
    parser.add_argument("--estimator", default=None, help="what ranks the `current` run's candidates (default: attribution)")
    parser.add_argument("--worker", choices=CODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    common = [
        "--variant",
        args.variant,
        "--examples",
        str(args.examples),
        "--top-k",
        str(args.top_k),
        "--threads",
        str(args.threads),
        *(["--top-m", str(args.top_m)] if args.top_m else []),
        *(["--estimator", args.estimator] if args.estimator else []),
        *(["--data", str(Path(args.data).resolve()), "--profile-k", str(args.profile_k), "--max-prompt-tokens",
           str(args.max_prompt_tokens)] if args.data else []),
    ]  # fmt: skip
    runs = []
    with tempfile.TemporaryDirectory() as baseline:
        archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", args.baseline], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", baseline], input=archive, check=True)
        paths = {"baseline": baseline, "current-3k": str(REPOSITORY), "current": str(REPOSITORY)}
        for _ in range(args.repeats):
            for code in args.codes:
                environment = {**os.environ, "PYTHONPATH": paths[code]}
                done = subprocess.run(
                    [sys.executable, __file__, "--worker", code, *common],
                    env=environment,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), flush=True)
    truth = exact_truth(args)
    summary = summarize(runs, truth, args.top_k)
    print(json.dumps(summary, indent=1))
    print(markdown(args, runs, summary))


def summarize(runs: list[dict], truth: torch.Tensor | None, k: int) -> dict:
    from workbench.scores.ranking import ranked_heads

    codes = [code for code in CODES if any(run["code"] == code for run in runs)]
    best = {code: min(run["seconds"] for run in runs if run["code"] == code) for code in codes}
    recalls = {}
    if truth is not None:
        top = set(ranked_heads(truth)[:k])
        for code in codes:
            found = next(run["top"] for run in runs if run["code"] == code)
            recalls[code] = len(top & {tuple(head) for head in found}) / k
    speedups = {code: best["baseline"] / best[code] for code in codes if code != "baseline"}
    return {"best_seconds": best, "speedup": speedups, "recall": recalls}


def markdown(args, runs: list[dict], summary: dict) -> str:
    lines = [
        "| run | code | top_m | mean tokens | seconds | attribution s | exact s | load average before / after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, run in enumerate(runs, start=1):
        lines.append(
            f"| {index} | {run['code']} | {run['top_m']} | {run.get('mean_tokens', 0):.0f} | {run['seconds']:.0f} | {run['attribution_seconds']:.0f} | "
            f"{run['exact_seconds']:.0f} | {run['load_before']:.1f} / {run['load_after']:.1f} |"
        )
    recall = summary["recall"]
    lines.append(
        "\nSpeed-up (best baseline time / best time): "
        + ", ".join(f"{code} **{value:.2f}×**" for code, value in summary["speedup"].items())
        + f"; recall of the exact top-{args.top_k}: "
        + (", ".join(f"{code} {value:.2f}" for code, value in recall.items()) if recall else "truth not cached")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
