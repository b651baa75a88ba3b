"""Benchmark: resident memory of a process while ``training.fit`` trains a LoRA'd Llama, in one process and in
each of N processes sharding the model with FSDP2 (``rlhf_organic.fsdp``).

What it measures
----------------
A Llama built from a config (``--hidden``, ``--layers``, vocabulary 8000, tied embeddings; random weights),
a LoRA adapter (r 8 on q_proj and v_proj), and ``--steps`` steps of next-token loss on 8 random sequences of
32 tokens through ``training.fit``: once in one process, once under ``torchrun --nproc_per_node N`` with
``ACCELERATE_USE_FSDP=true FSDP_VERSION=2`` (what ``accelerate launch --config_file
recipes/accelerate/fsdp_cpu.yaml`` sets). Each process reads its resident set (VmRSS) after loading the
model, right after each step's forward (parameters, gathered layer and activations alive) and after
``fit`` has handed the model back whole. The children run with ``MALLOC_MMAP_THRESHOLD_=131072`` so that
glibc returns freed tensors to the system at once (with its default, growing threshold, freed tensors stay
in the heap and the resident set does not show what was freed).

Expected: while training, each of N processes holds about (N-1)/N of the model's fp32 bytes less than
one process does; after ``fit`` they hold the whole model again (evaluation runs on it).

    .venv/bin/python bench/fsdp_memory.py [--processes 2] [--hidden 1024] [--layers 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, os, sys
import numpy as np, torch
from types import SimpleNamespace
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
from rlhf_organic.training import fit

hidden, layers, steps, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))

torch.set_num_threads(1)
torch.manual_seed(0)
config = LlamaConfig(vocab_size=8000, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                     num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=True, pad_token_id=0)
peft = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                           task_type="CAUSAL_LM"))
loaded = rss_mb()
ids = torch.randint(3, 8000, (8, 32), generator=torch.Generator().manual_seed(1))
during = []

def step_loss(step):
    loss = peft(input_ids=ids[step], labels=ids[step], use_cache=False).loss
    during.append(rss_mb())
    return loss, {}

settings = SimpleNamespace(lr=1e-3, weight_decay=0.0, warmup_ratio=0.0, grad_clip=1.0)
fit([p for p in peft.parameters() if p.requires_grad], [np.arange(8)] * steps, step_loss, settings, model=peft)
row = {"rank": int(os.environ.get("RANK", 0)), "parameters": sum(p.numel() for p in peft.parameters()),
       "loaded_mb": loaded, "training_mb": during, "after_fit_mb": rss_mb()}
with open(f"{out}/rank{row['rank']}.json", "w") as f:
    json.dump(row, f)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, hidden: int, layers: int, steps: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MALLOC_MMAP_THRESHOLD_": "131072",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    with tempfile.TemporaryDirectory() as folder:
        child = Path(folder) / "child.py"
        child.write_text(CHILD)
        args = [str(child), str(hidden), str(layers), str(steps), folder]
        if processes == 1:
            command = [sys.executable, *args]
        else:
            env.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_CPU_RAM_EFFICIENT_LOADING="false")
            command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                       f"--master_port={_free_port()}", *args]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        return [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(processes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    rows = [("1 process", r) for r in run(1, args.hidden, args.layers, args.steps)]
    rows += [(f"FSDP, rank {r['rank']} of {args.processes}", r) for r in run(args.processes, args.hidden, args.layers, args.steps)]
    params = rows[0][1]["parameters"]
    print(f"Llama, hidden {args.hidden}, {args.layers} layers: {params / 1e6:.1f}M parameters ({params * 4 / 2**20:.0f} MB in fp32)\n")
    print("| process | RSS after loading (MB) | RSS while training (MB, after each forward) | RSS after fit (MB) |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['loaded_mb']:.0f} | {', '.join(f'{x:.0f}' for x in r['training_mb'])} | {r['after_fit_mb']:.0f} |")


if __name__ == "__main__":
    main()
