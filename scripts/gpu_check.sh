#!/usr/bin/env bash
# The GPU tier (tests/gpu) and the GPU bench in one command, on a CUDA machine, from the repo root:
#   bash scripts/gpu_check.sh                  logs and results under ${OUT:-gpu_out}/
# Prepare it on a machine with network access: `bash scripts/gpu_wheels.sh` puts the wheels the GPU image
# lacks in .whl/ (installed here into /tmp/site), and .dev/tok should hold a real tokenizer's files
# (SmolLM2's tokenizer.json, tokenizer_config.json, chat_template.jinja) so that the random-init models get
# a real 49k vocabulary; without it the tier trains a small tokenizer on the spot.
# GPU_CHECK_SKIP_TIER=1 / GPU_CHECK_SKIP_BENCH=1 skip a part; GPU_TIER_ARGS (default -x) go to pytest;
# GPU_BENCH_SIZE (default 0.8b) is the bench's model size. Exit status: 1 if the tier failed, 2 if only the bench did.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package is not installed on that machine
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled PYTHONUNBUFFERED=1
if [ -z "${RLHF_GPU_TOKENIZER:-}" ] && [ -d .dev/tok ]; then export RLHF_GPU_TOKENIZER=.dev/tok; fi

python3 - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import torch, transformers, peft, trl, bitsandbytes
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, GPU {gpu}), transformers {transformers.__version__}, "
      f"peft {peft.__version__}, trl {trl.__version__}, bitsandbytes {bitsandbytes.__version__}")
PY
nvidia-smi 2>&1 | tee -a "$OUT/versions.txt"
if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" && [ "${RLHF_GPU_TIER_ON_CPU:-}" != 1 ]; then
  echo "gpu_check: no CUDA GPU here: the tier would only skip (RLHF_GPU_TIER_ON_CPU=1 runs it on CPU)"; exit 1
fi

tier=skipped bench=skipped
if [ -z "${GPU_CHECK_SKIP_TIER:-}" ]; then
  RLHF_GPU_TIER_REPORT="$OUT/gpu_tier.json" python3 -m pytest tests/gpu ${GPU_TIER_ARGS--x} -q -rfEs -p no:cacheprovider \
    2>&1 | tee "$OUT/gpu_tier.log"
  tier=${PIPESTATUS[0]}
fi
if [ -z "${GPU_CHECK_SKIP_BENCH:-}" ]; then
  if [ -f bench/gpu_qlora.py ]; then
    python3 bench/gpu_qlora.py --size "${GPU_BENCH_SIZE:-0.8b}" ${RLHF_GPU_TOKENIZER:+--tokenizer "$RLHF_GPU_TOKENIZER"} \
      --out "$OUT/gpu_qlora.json" 2>&1 | tee "$OUT/gpu_qlora.log"
    bench=${PIPESTATUS[0]}
  else
    echo "gpu_check: bench/gpu_qlora.py not found"
  fi
fi
status() { case "$1" in 0) echo passed;; skipped) echo skipped;; *) echo "FAILED (exit $1)";; esac; }
echo "gpu_check: tier $(status "$tier"), bench $(status "$bench"); logs in $OUT/"
case "$tier" in 0|skipped) ;; *) exit 1;; esac
case "$bench" in 0|skipped) ;; *) exit 2;; esac
