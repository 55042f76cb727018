"""Start-up time of the `workbench` command: `workbench --help` and every subcommand's `--help`
(issue 22.4), in fresh interpreters, for one or two source trees.

Each run is `python -m workbench.cli ARGS --help` with the tree first on PYTHONPATH, timed from
the parent (interpreter start-up included). With `--baseline DIR` (e.g. an export of an older
commit: `git archive <commit> workbench | tar -x -C DIR`) the two trees alternate, run by run, and
the table gives each tree's median and the ratio baseline / this tree for the same command.

    .venv/bin/python benchmarks/bench_cli.py [--baseline DIR] [--repeats 3] [--commands discover evaluate]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMMANDS = [
    "", "cluster", "compare", "decoders", "demo", "discover", "evaluate", "figures", "info", "merge", "run",
    "select", "show", "steer", "studio", "validate",
]  # fmt: skip


def help_seconds(tree: Path, command: str) -> float:
    """Wall time of `workbench COMMAND --help` run from `tree`, in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, "-m", "workbench.cli", *command.split(), "--help"]
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=tree, capture_output=True, text=True, check=False)  # `-m` puts the cwd first
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tree}: `workbench {command} --help` failed: {done.stderr.strip()[-300:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="Another source tree to compare with, run by run.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commands", nargs="*", default=COMMANDS, help="Subcommands ('' is `workbench --help`).")
    args = parser.parse_args()
    trees = {"this tree": HERE} | ({"baseline": args.baseline} if args.baseline else {})
    print("| command | " + " | ".join(f"{name} median (s)" for name in trees) + (" | ratio |" if args.baseline else " |"))
    print("|---" * (len(trees) + 1 + bool(args.baseline)) + "|")
    for command in args.commands:
        runs: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():  # alternate the trees, so load changes hit both alike
                try:
                    runs[name].append(help_seconds(tree, command))
                except SystemExit:
                    if name == "baseline":  # a command the baseline does not have
                        runs[name].append(float("nan"))
                    else:
                        raise
        medians = {name: statistics.median(values) for name, values in runs.items()}
        cells = [f"{medians[name]:.2f}" for name in trees]
        if args.baseline:
            cells.append(f"{medians['baseline'] / medians['this tree']:.1f}×")
        print(f"| `workbench {command} --help`".replace("  ", " ") + " | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
