"""What every bench records about the machine it ran on (imported by the bench scripts beside it)."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
from pathlib import Path


def matmul_speed(size: int = 2048, repeats: int = 10) -> dict:
    """GFLOP/s of a square float32 and bfloat16 matmul on this process's CPU threads, and their ratio: the
    most a bf16 trainer can gain over fp32 on this machine (AMX: about 6x; AVX512-BF16: about 2x)."""
    import time

    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        a @ b  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        out[f"{name}_gflops"] = round(2 * size**3 * repeats / (time.perf_counter() - started) / 1e9, 1)
    out["bf16_over_fp32"] = round(out["bf16_gflops"] / out["fp32_gflops"], 2)
    return out


def machine_info(*modules: str) -> dict:
    """CPU, cores, memory, platform, Python, the date, and the versions of ``modules`` and rlhf_organic."""
    import rlhf_organic

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in modules:
        versions["scikit-learn" if name == "sklearn" else name] = importlib.import_module(name).__version__
    return {
        "cpu_model": cpu,
        "cores_online": os.cpu_count(),
        "cores_used": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **versions,
        "rlhf_organic": rlhf_organic.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
