"""Head scores: naive per-head loop vs the exact engine, attribution and hybrid (issue 3).

Default model, `--examples` synthetic chat examples of about 128 prompt and 16 target tokens.
All methods run side by side in this process:

- naive: one full forward per head, batch 1, full-vocabulary logits. A naive forward costs the
  same for every head, so it runs on `--naive-heads` heads spread evenly over the layers of the
  first `--naive-examples` examples, and its per-example time is that average times L·H;
  its scores are compared with the exact engine's on those heads;
- exact (`workbench.scores.exact`), attribution and hybrid (`score_heads`) on all examples.

Peak memory: the growth of the resident set above its size before the method (VmHWM, reset per
method through /proc/self/clear_refs; Linux only). Results go to stdout as JSON and, with
`--write`, into the "Head scores" section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_scores.py [--examples 16] [--naive-examples 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

SUBSECTION = "### Methods against the naive loop (synthetic examples)"
WORDS = [
    "trail",
    "coffee",
    "garden",
    "rain",
    "novel",
    "jazz",
    "market",
    "river",
    "winter",
    "recipe",
    "cycling",
    "museum",
    "harbor",
    "violin",
    "mountain",
    "kitchen",
    "lantern",
    "orchard",
    "festival",
    "poetry",
    "ceramics",
    "sailing",
    "desert",
    "library",
    "typewriter",
    "bakery",
    "canyon",
    "meadow",
    "workshop",
]


def synthetic_examples(lens, n: int, prompt_tokens: int, target_tokens: int, seed: int):
    """Chat examples whose profile is a run of seeded topic words, trimmed to `prompt_tokens`, with
    the same request without the profile as their no-profile control."""
    from workbench.data.tokenized import TokenizedExample

    rng = random.Random(seed)
    examples = []
    for index in range(n):
        words = [rng.choice(WORDS) for _ in range(prompt_tokens)]
        prompt = []
        while words:
            prompt = lens.encode_chat("Profile: " + " ".join(words) + ". Write a short headline for this user.")
            if len(prompt) <= prompt_tokens:
                break
            words.pop()
        target = lens.encode(" ".join(rng.choice(WORDS) for _ in range(target_tokens)))[:target_tokens]
        no_profile = lens.encode_chat("Write a short headline for this user.")
        examples.append(TokenizedExample(f"b{index}", f"u{index}", prompt, target, no_profile_prompt_ids=no_profile))
    return examples


def _kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measured(function):
    """(result, seconds, peak resident growth in MiB) of `function()`."""
    before = _kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the high-water mark to the current resident size
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    return result, seconds, (_kib("VmHWM") - before) / 1024


def naive_deltas(lens, sequence, heads):
    """The textbook loop: a full forward per head, full-vocabulary log-softmax."""
    from workbench.engine.masks import HeadMask
    from workbench.scores.nll import mean_nll

    def nll(mask):
        logits = lens.forward(list(sequence.ids), mask=mask)
        return mean_nll(logits[:, sequence.positions], sequence.targets)[0]

    clean = nll(None)
    return {head: float(nll(HeadMask.ablate(lens.geometry, [head])) - clean) for head in heads}


def recall(reference: torch.Tensor, candidate: torch.Tensor, k: int) -> float:
    from workbench.heads import ranked_heads

    return len(set(ranked_heads(reference)[:k]) & set(ranked_heads(candidate)[:k])) / k


def run(args) -> dict:
    import transformers

    from workbench.engine.models import load_model
    from workbench.scores import score_heads
    from workbench.scores.ablation import make_ablation
    from workbench.scores.exact import exact_deltas
    from workbench.scores.nll import TargetSequence

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    lens = load_model(device=args.device)
    geometry = lens.geometry
    examples = synthetic_examples(lens, args.examples, args.prompt_tokens, args.target_tokens, args.seed)
    sequences = [TargetSequence(e.prompt_ids, e.target_ids) for e in examples]
    zero = make_ablation(lens, "zero")
    n_total = geometry.n_total_heads
    naive_heads = [geometry.all_heads()[i] for i in np.linspace(0, n_total - 1, args.naive_heads).round().astype(int)]

    naive, naive_seconds, naive_memory = measured(
        lambda: [naive_deltas(lens, s, naive_heads) for s in sequences[: args.naive_examples]]
    )
    exact, exact_seconds, exact_memory = measured(lambda: score_heads(lens, examples, method="exact", progress=False))
    attribution, attribution_seconds, attribution_memory = measured(
        lambda: score_heads(lens, examples, method="attribution", progress=False)
    )
    hybrid, hybrid_seconds, hybrid_memory = measured(
        lambda: score_heads(lens, examples, method="hybrid", top_m=3 * args.top_k, progress=False)
    )

    naive_per_example = naive_seconds / (args.naive_examples * len(naive_heads)) * n_total
    per_example = {
        "naive (extrapolated)": naive_per_example,
        "exact": exact_seconds / len(examples),
        "attribution": attribution_seconds / len(examples),
        "hybrid": hybrid_seconds / len(examples),
    }
    max_naive_diff = max(
        abs(values[head] - float(exact.per_example[index][head])) for index, values in enumerate(naive) for head in naive_heads
    )
    # A fresh engine run on one example, to show the engine alone (no score_heads bookkeeping).
    _, engine_seconds, _ = measured(lambda: exact_deltas(lens, sequences[0], zero))
    top_tenth = max(1, n_total // 10)
    exact_mean, attribution_mean = exact.mean(), attribution.mean()
    rho_examples = [
        spearmanr(exact.per_example[i].flatten(), attribution.per_example[i].flatten()).statistic for i in range(len(examples))
    ]
    return {
        "device": str(lens.device),
        "torch_threads": torch.get_num_threads(),
        "examples": len(examples),
        "heads": n_total,
        "prompt_tokens_mean": float(np.mean([len(e.prompt_ids) for e in examples])),
        "target_tokens": args.target_tokens,
        "naive_examples": args.naive_examples,
        "naive_heads": len(naive_heads),
        "seconds_per_example": per_example,
        "engine_seconds_one_example": engine_seconds,
        "speedup_vs_naive": {name: naive_per_example / seconds for name, seconds in per_example.items()},
        "peak_rss_growth_mib": {
            "naive": naive_memory,
            "exact": exact_memory,
            "attribution": attribution_memory,
            "hybrid": hybrid_memory,
        },
        "max_abs_diff_naive_vs_exact": max_naive_diff,
        "attribution_spearman_mean_pcs": spearmanr(exact_mean.flatten(), attribution_mean.flatten()).statistic,
        "attribution_spearman_per_example": {
            "min": float(np.min(rho_examples)),
            "median": float(np.median(rho_examples)),
            "max": float(np.max(rho_examples)),
        },
        "attribution_recall_exact_top10pct": recall(exact_mean, attribution_mean, top_tenth),
        "top_k": args.top_k,
        "hybrid_recall_exact_top_k": recall(exact_mean, hybrid.mean(), args.top_k),
    }


def markdown(result: dict) -> str:
    seconds, speedup, memory = result["seconds_per_example"], result["speedup_vs_naive"], result["peak_rss_growth_mib"]
    names = {"naive (extrapolated)": "naive", "exact": "exact", "attribution": "attribution", "hybrid": "hybrid"}
    rows = "\n".join(f"| {name} | {seconds[name]:.2f} | {speedup[name]:.1f}× | {memory[names[name]]:.0f} |" for name in seconds)
    rho = result["attribution_spearman_per_example"]
    return f"""{SUBSECTION}

`.venv/bin/python benchmarks/bench_scores.py --write` (issue 3). Default model on {result["device"]}
({result["torch_threads"]} torch threads, a shared 2-core machine: absolute seconds are noisy, the
ratios are measured side by side in one process). {result["examples"]} synthetic chat examples of
{result["prompt_tokens_mean"]:.0f} prompt tokens on average and {result["target_tokens"]} target tokens, all
{result["heads"]} heads, zero ablation, standard PCS. The naive loop (one full forward per head, batch 1,
full-vocabulary logits) costs the same for every head, so it ran on {result["naive_heads"]} heads spread over
all layers of {result["naive_examples"]} examples and its per-example time is extrapolated to all heads.

| method | s / example | speed-up vs naive | peak RSS growth (MiB) |
|---|---|---|---|
{rows}

- Exact engine vs naive loop: max |ΔPCS| = {result["max_abs_diff_naive_vs_exact"]:.1e} nats on the compared heads.
- Attribution vs exact PCS, Spearman ρ over all heads: mean PCS {result["attribution_spearman_mean_pcs"]:.3f};
  per example min / median / max {rho["min"]:.3f} / {rho["median"]:.3f} / {rho["max"]:.3f}.
  Recall of the exact top 10 % by the attribution top 10 %: {result["attribution_recall_exact_top10pct"]:.2f}.
- Hybrid (attribution, then exact on the top {3 * result["top_k"]} candidates): recall of the exact top-{result["top_k"]}: {result["hybrid_recall_exact_top_k"]:.2f}.
- No GPU was lent to this task, so there are no GPU figures.
"""


def write_section(text: str, path: Path = Path(__file__).with_name("RESULTS.md")) -> None:
    """Replace (or append) this script's subsection of "## Head scores", leaving the rest alone."""
    from workbench import io

    existing = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\n## Head scores\n"
    start = existing.find(SUBSECTION)
    if start < 0:
        section = existing.find("## Head scores")
        end = existing.find("\n## ", section + 1) if section >= 0 else -1
        insert = len(existing) if end < 0 else end
        updated = existing[:insert].rstrip("\n") + "\n\n" + text + existing[insert:]
    else:
        ends = [i for i in (existing.find("\n### ", start + 1), existing.find("\n## ", start + 1)) if i >= 0]
        updated = existing[:start] + text + (existing[min(ends) :] if ends else "")
    io.write_text(path, updated)


def contrast_batching(args) -> dict:
    """Clean forwards of each demo example's two profile-contrast sequences (with and without the
    profile) as one left-padded batch against two separate forwards, alternating, best of repeats:
    what running the two sequences' rows in one batch could save."""
    import transformers

    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples
    from workbench.engine.models import load_model

    transformers.utils.logging.disable_progress_bar()
    lens = load_model(device=args.device)
    examples = tokenized_examples(lens, load_examples(None, "LaMP-4", "train"), PromptConfig(seed=args.seed))[: args.examples]
    timings = {"separate": [], "one batch": []}
    for _ in range(args.repeats):
        for name in timings:
            start = time.perf_counter()
            for example in examples:
                pair = [list(example.prompt_ids + example.target_ids), list(example.no_profile_prompt_ids + example.target_ids)]
                if name == "separate":
                    for ids in pair:
                        lens.forward(ids)
                else:
                    tokens, attention = lens.pad_left(pair)
                    lens.forward(tokens, attention_mask=attention)
            timings[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in timings.items()}
    return {
        "examples": len(examples),
        "threads": torch.get_num_threads(),
        "seconds": best,
        "batch_over_separate": best["one batch"] / best["separate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--target-tokens", type=int, default=16)
    parser.add_argument("--naive-examples", type=int, default=2)
    parser.add_argument("--naive-heads", type=int, default=30)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument("--repeats", type=int, default=2, help="Repeats of --contrast-batching.")
    parser.add_argument(
        "--contrast-batching", action="store_true", help="Only time the contrast sequences batched vs separate (demo set)."
    )
    parser.add_argument("--write", action="store_true", help="Write this script's subsection of benchmarks/RESULTS.md.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.contrast_batching:
        print(json.dumps(contrast_batching(args), indent=2))
        return
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.write:
        write_section(markdown(result))


if __name__ == "__main__":
    main()
