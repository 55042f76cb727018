"""DPS and its baselines on the one generation loop vs greedy, and vs the authors' procedure
(issue: decoding).

On the embedded default model, CPU float32, 32 new tokens (stop tokens ignored so every run
decodes the same number of tokens), prompts of about 128 and 512 tokens, batch 1 and 8:

- greedy, DPS (20 random heads, weighted suppression, γ = 1), DPS with the authors' shared
  prefill (`dps-shared`), CAD, DoLa and DeCoRe on our loop;
- `prefill`: greedy with one new token, i.e. the prefill alone. A
  masked prefill has twice the rows, so DPS costs at least greedy + prefill: the `prefill` row's
  `floor` column is that bound as a ratio to greedy;
- `authors`: their procedure as `workbench.authors_hf` writes it, on a plain Hugging Face copy of
  the model (no lens, no bridge, PyTorch's default linear layers): one prompt at a time, a query-
  scaling hook, one unmasked prefill, two deep copies of its cache, then two separate forwards per
  step (full and query-scaled), log-prob contrast with entropy γ.

Everything runs in this process, variants alternating, best of --repeats; the figures are the
wall-time ratio to greedy measured in the same setting and tokens per second.

    .venv/bin/python benchmarks/bench_decoding.py [--lengths 128 512] [--batches 1 8] [--repeats 2]
        [--decoders greedy prefill dps dps-shared authors cad dola decore] [--threads 1] [--markdown]

`greedy-bridge` / `dps-bridge`: the same decoders with the cached steps through the TransformerLens
bridge (`fast_path=False`, the path before `workbench.engine.fast_path`); `dps-upper`: DPS with the same
20 heads moved into the upper half of the layers, so that its two rows share the lower half.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

NEW_TOKENS = 32
SENTENCES = [
    "I spent the weekend hiking along the ridge and cooking lentil soup at the hut.",
    "My favourite books are slow novels about small towns and the people who stay.",
    "At work I review budgets, write short reports and avoid long meetings when I can.",
    "Please answer briefly and in a friendly tone, the way I usually write to friends.",
]


def build_prompts(lens, tokens: int, batch: int) -> list[list[int]]:
    """`batch` chat prompts of about `tokens` tokens each (rows differ a little in length)."""
    prompts = []
    for row in range(batch):
        words: list[str] = [f"Note {row}:"]
        while len(lens.encode_chat(" ".join(words) + " Summarise my notes.")) < tokens - 2 * row:
            words.append(SENTENCES[len(words) % len(SENTENCES)])
        prompts.append(lens.encode_chat(" ".join(words) + " Summarise my notes."))
    return prompts


def lowest_layer(weights) -> int:
    return int(weights.weights.nonzero()[:, 0].min())


def upper_half(weights, n_layers: int):
    """The same heads moved to the upper half of the layers (layer l -> n/2 + l/2): how DPS costs
    when the lower half can be shared, as with heads found in the upper layers."""
    from workbench.heads import HeadWeights

    moved = torch.zeros_like(weights.weights)
    for layer, head in weights.weights.nonzero().tolist():
        moved[n_layers // 2 + layer // 2, head] = weights.weights[layer, head]
    return HeadWeights(moved)


def authors_style(hf_model, prompts, weights) -> None:
    """Their loop (`workbench.authors_hf.authors_dps`) on the plain Hugging Face model, one prompt at a time."""
    from workbench.authors_hf import authors_dps

    for prompt in prompts:
        authors_dps(hf_model, prompt, 1 - weights.weights, max_new_tokens=NEW_TOKENS, stop_ids=set())


def variants(lens, hf_model, prompts, contrasts, weights, upper_weights):
    from workbench.decoding import CAD, DPS, DeCoRe, DoLa, Greedy, generate

    def on_loop(decoder, contrast_prompts=None, new_tokens=NEW_TOKENS, fast_path=True):
        return lambda: generate(
            lens,
            prompts,
            decoder=decoder,
            contrast_prompts=contrast_prompts,
            max_new_tokens=new_tokens,
            batch_size=len(prompts),
            stop_at_eos=False,
            fast_path=fast_path,
        )

    return {
        "greedy": on_loop(Greedy()),
        "greedy-bridge": on_loop(Greedy(), fast_path=False),
        "prefill": on_loop(Greedy(), new_tokens=1),
        "dps": on_loop(DPS(weights, gamma=1.0)),
        "dps-bridge": on_loop(DPS(weights, gamma=1.0), fast_path=False),
        "dps-upper": on_loop(DPS(upper_weights, gamma=1.0)),
        "dps-shared": on_loop(DPS(weights, gamma=1.0, prefill="shared")),
        "authors": lambda: authors_style(hf_model, prompts, weights),
        "cad": on_loop(CAD(), contrasts),
        "dola": on_loop(DoLa()),
        "decore": on_loop(DeCoRe(weights)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--decoders",
        nargs="+",
        default=["greedy", "prefill", "dps", "dps-shared", "authors", "cad", "dola", "decore"],
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadier on a shared machine).")
    parser.add_argument("--markdown", action="store_true", help="Print the table as Markdown.")
    args = parser.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM

    from workbench.engine.models import embedded_default_folder, load_model
    from workbench.heads import HeadWeights

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    lens = load_model(device="cpu")
    hf_model = AutoModelForCausalLM.from_pretrained(embedded_default_folder(), dtype=torch.float32).eval()
    weights = HeadWeights.random_heads(lens.geometry, 20, seed=0)
    upper_weights = upper_half(weights, lens.n_layers)
    print(
        f"load average {os.getloadavg()[0]:.1f}; lowest suppressed layer: dps {lowest_layer(weights)}, dps-upper {lowest_layer(upper_weights)}"
    )
    names = ["greedy"] + [name for name in args.decoders if name != "greedy"]
    rows = []
    for length in args.lengths:
        for batch in args.batches:
            prompts = build_prompts(lens, length, batch)
            contrasts = build_prompts(lens, length // 2, batch)  # "without the profile": shorter
            runs = variants(lens, hf_model, prompts, contrasts, weights, upper_weights)
            best = {name: float("inf") for name in names}
            for _ in range(args.repeats):
                for name in names:
                    start = time.perf_counter()
                    runs[name]()
                    best[name] = min(best[name], time.perf_counter() - start)
            for name in names:
                ratio = best[name] / best["greedy"]
                new_tokens = 1 if name == "prefill" else NEW_TOKENS
                floor = f"{(best['greedy'] + best[name]) / best['greedy']:.2f}" if name == "prefill" else ""
                rows.append((length, batch, name, best[name], ratio, batch * new_tokens / best[name], floor))
                print(
                    f"prompt {length:4d}  batch {batch}  {name:12s} {best[name]:7.2f} s  x{ratio:.2f} greedy  "
                    f"{batch * new_tokens / best[name]:6.1f} tok/s  {floor}",
                    flush=True,
                )
    if args.markdown:
        print("\n| prompt tokens | batch | decoder | wall time (s) | ratio to greedy | new tokens / s | floor |")
        print("|---|---|---|---|---|---|---|")
        for length, batch, name, seconds, ratio, rate, floor in rows:
            print(f"| {length} | {batch} | {name} | {seconds:.2f} | {ratio:.2f} | {rate:.1f} | {floor} |")


if __name__ == "__main__":
    main()
