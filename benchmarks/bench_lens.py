"""Batched per-row head ablation vs one forward per head (issue: foundation).

On the embedded default model, 1 x 256 tokens: one forward of a batch whose H rows each ablate a
different head of one layer, against H separate batch-1 forwards. Both run in this process,
alternating, best of --repeats; peak memory is measured in a fresh subprocess per variant
(peak resident set size minus the resident size after loading the model).

    .venv/bin/python benchmarks/bench_lens.py [--tokens 256] [--layer 15] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def setup(tokens: int):
    import transformers

    from workbench.engine.models import load_model

    transformers.utils.logging.disable_progress_bar()
    lens = load_model(device="cpu")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, lens.geometry.d_vocab, (1, tokens), generator=generator)
    return lens, ids


def batched(lens, ids, layer: int) -> torch.Tensor:
    from workbench.engine.masks import HeadMask

    heads = [(layer, head) for head in range(lens.n_heads)]
    return lens.forward(ids.expand(len(heads), -1), mask=HeadMask.one_head_per_row(lens.geometry, heads))


def separate(lens, ids, layer: int) -> torch.Tensor:
    from workbench.engine.masks import HeadMask

    return torch.cat([lens.forward(ids, mask=HeadMask.ablate(lens.geometry, [(layer, head)])) for head in range(lens.n_heads)])


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure_peak(variant: str, tokens: int, layer: int) -> None:
    """In this (fresh) process: load, reset the peak-RSS mark, run, print the peak growth in MiB."""
    lens, ids = setup(tokens)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM, the peak resident set size, to the current size
    globals()[variant](lens, ids, layer)
    print((_status_kib("VmHWM") - before) / 1024)


def peak_memory_mib(variant: str, tokens: int, layer: int) -> float:
    """Peak resident memory above the loaded model while one variant runs, in a fresh interpreter."""
    code = f"import sys; sys.path.insert(0, 'benchmarks'); import bench_lens; bench_lens.measure_peak({variant!r}, {tokens}, {layer})"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    lens, ids = setup(args.tokens)
    assert torch.allclose(batched(lens, ids, args.layer), separate(lens, ids, args.layer), atol=1e-4)
    timings: dict[str, list[float]] = {"batched": [], "separate": []}
    for _ in range(args.repeats):
        for name, run in (("batched", batched), ("separate", separate)):
            start = time.perf_counter()
            run(lens, ids, args.layer)
            timings[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in timings.items()}
    memory = {name: peak_memory_mib(name, args.tokens, args.layer) for name in best}
    print(
        json.dumps(
            {
                "heads": lens.n_heads,
                "tokens": args.tokens,
                "batched_s": round(best["batched"], 3),
                "separate_s": round(best["separate"], 3),
                "speedup": round(best["separate"] / best["batched"], 2),
                "peak_extra_mib_batched": round(memory["batched"], 1),
                "peak_extra_mib_separate": round(memory["separate"], 1),
                "threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
