#!/usr/bin/env bash
# Prepares a Python environment for rlhf_organic and prints the path of its python.
#
# - Inside an active virtualenv / conda env, installs there; otherwise creates ./.venv.
# - No NVIDIA GPU and no torch yet: installs the CPU build of torch first, so that pip does not
#   pull several GB of CUDA packages. With a GPU, the user's (CUDA) torch is left alone: a new
#   .venv then sees the system's packages, so an installed CUDA torch keeps being used.
# - Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
  py="$(command -v python)"
else
  if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv" >&2
    if have_gpu; then python3 -m venv --system-site-packages .venv; else python3 -m venv .venv; fi
  fi
  py="$root/.venv/bin/python"
fi

stamp="$("$py" -c 'import sys; print(sys.prefix)')/.rlhf_organic_setup"
want="$(cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$py"; exit 0
fi

pip_install() { "$py" -m pip install --disable-pip-version-check -q "$@" >&2; }
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
  if have_gpu; then
    echo "[setup] GPU found and no torch installed: installing the default (CUDA) torch" >&2
    pip_install "torch>=2.13"
  else
    # Pinned to the tested release; --no-deps and --retries 0 keep pip from asking the CPU index
    # (unreachable on some networks) about every other package. torch's own dependencies come
    # with the project install below.
    echo "[setup] no GPU: installing the CPU build of torch" >&2
    pip_install --no-deps --retries 0 --timeout 15 "torch==2.13.0" \
      --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi
echo "[setup] installing rlhf_organic and its dependencies" >&2
pip_install -e ".[test]"
echo "$want" >"$stamp"
echo "$py"
