#!/usr/bin/env bash
# Downloads into .whl/ the wheels a GPU machine without network access lacks for the GPU tier and bench
# (scripts/gpu_check.sh installs them there). Run it on a machine that reaches PyPI, from the repo root.
# Versions: what this project is tested with; the GPU image's own torch (CUDA) is kept.
# bitsandbytes ships a library per CUDA / ROCm / XPU version (43 MB): CUDA_KEEP (default "cuda13") keeps
# only the libraries for that CUDA major version (7 MB), so the whole set stays small enough to carry.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=.whl
mkdir -p "$dest"
wheels=(
  bitsandbytes==0.50.2 trl==1.16.0 peft==0.21.2 accelerate==1.16.0 transformers==5.25.0 huggingface_hub==2.4.0
  httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 idna==3.20 anyio==4.16.0 hf-xet==1.8.0 kernels==0.19.1
  tomlkit==0.15.3 regex==2026.11.19 click==8.5.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 typing_extensions==4.16.0 orjson==3.13.0 gguf==0.19.0 datasets==5.2.0 dill==0.4.1
  multiprocess==0.70.19 tokenizers==0.23.3 safetensors==0.8.0
)
for w in "${wheels[@]}"; do
  name="${w%%==*}"
  if ls "$dest" | grep -qi "^${name//[-_]/[-_]}-${w##*==}-"; then continue; fi
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64 --platform any -d "$dest" "$w"
done
keep="${CUDA_KEEP:-cuda13}"
for whl in "$dest"/bitsandbytes-*.whl; do
  [ -f "$whl" ] || continue
  drop=$(python3 - "$whl" "$keep" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print(" ".join(n for n in names if n.endswith(".so") and "libbitsandbytes_" in n and sys.argv[2] not in n and "_cpu" not in n))
PY
)
  if [ -n "$drop" ]; then
    # shellcheck disable=SC2086
    zip -q -d "$whl" $drop
    python3 - "$whl" <<'PY'
import sys, zipfile, shutil, os
path = sys.argv[1]
src = zipfile.ZipFile(path)
names = set(src.namelist())
tmp = path + ".tmp"
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
    for item in src.infolist():
        data = src.read(item)
        if item.filename.endswith("RECORD"):  # drop the removed libraries' lines so pip accepts the wheel
            data = "\n".join(l for l in data.decode().splitlines() if l.split(",")[0] in names or not l.endswith(".so") and ".so," not in l).encode() + b"\n"
        out.writestr(item, data)
os.replace(tmp, path)
PY
  fi
done
du -sh "$dest"
