"""One bench step in a fresh Python process: its own peak RSS, no imports or caches carried over.

The parent calls ``limit_cpus()`` once and ``run_child(script, args)`` per step; the child does its
work and ends with ``reply(answer)``, which prints the answer as the last line of stdout with the
child's peak RSS and CPU seconds.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def limit_cpus(max_cpus: int = 2) -> None:
    """Pin this process (and so its children) to at most ``max_cpus`` CPUs, so runs on bigger machines compare."""
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[:max_cpus])


def run_child(script: Path, args: list[str], *, threads: int | None = None, timeout: float | None = None,
              show_stderr: bool = False, env: dict | None = None, check: bool = True) -> dict:
    """Run ``python script *args``; its JSON answer plus wall time and the load average around it.

    ``threads`` caps the child's BLAS / OpenMP threads (several children at once: one thread each
    instead of fighting over the cores); ``env`` adds or replaces environment variables of the child.
    A child still running after ``timeout`` seconds is stopped and the answer is ``{"timed_out": True, ...}``;
    a child that fails ends the bench with its stderr, or with ``check`` false answers
    ``{"error": the tail of its stderr, "returncode": ...}`` and the bench goes on.
    """
    env = {**os.environ, **(env or {})}
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                              stderr=None if show_stderr else subprocess.PIPE, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "timeout_seconds": timeout, "process_seconds": round(time.perf_counter() - started, 2),
                "loadavg_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    wall = time.perf_counter() - started
    if proc.returncode != 0 and not check:
        return {"error": (proc.stderr or "")[-4000:], "returncode": proc.returncode, "process_seconds": round(wall, 2),
                "loadavg_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    if proc.returncode != 0:
        sys.exit(f"{Path(script).name} {' '.join(args)[:200]} failed ({proc.returncode}):\n{(proc.stderr or '')[-4000:]}")
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    answer["process_seconds"] = round(wall, 2)
    # Other work on the machine slows a run down: the 1-minute load average before and after shows it.
    answer["loadavg_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return answer


def reply(answer: dict) -> None:
    """In the child: print ``answer`` with the process's peak RSS (MB) and CPU seconds (imports included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    answer["peak_rss_mb"] = round(usage.ru_maxrss / 1024)
    answer["process_cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    print(json.dumps(answer, default=json_default))


def json_default(value):
    """numpy scalars and arrays as plain JSON."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
