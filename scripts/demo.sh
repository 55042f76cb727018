#!/usr/bin/env bash
# The main job on the embedded defaults, from a fresh machine: set up (idempotent; creates .venv
# when missing) and run `workbench demo` (all stages, report.md, figures). Extra arguments go to
# it, e.g. `scripts/demo.sh --preset full` or `scripts/demo.sh --out runs/other`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "${WORKBENCH_VENV:-$root/.venv}/bin/workbench" demo "$@"
