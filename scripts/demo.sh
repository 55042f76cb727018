#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded defaults. Extra arguments go to it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "${WORKBENCH_VENV:-$root/.venv}/bin/workbench" info "$@"
