"""Wall time and peak memory of a block of work (one pipeline stage).

Peak RSS is sampled by a background thread (every 0.2 s), because the process's lifetime peak
(``ru_maxrss``) never goes down and so cannot tell one stage from the next. On CUDA the peak
allocated GPU memory is reset and read around the block.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

SAMPLE_SECONDS = 0.2


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@contextmanager
def measure():
    """Yields a dict filled, when the block ends, with ``seconds``, ``peak_rss_mb`` and (CUDA) ``peak_gpu_mb``."""
    import torch

    usage: dict = {}
    peak = [_rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], _rss_mb())

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        yield usage
    finally:
        done.set()
        sampler.join()
        usage["seconds"] = round(time.perf_counter() - started, 2)
        usage["peak_rss_mb"] = round(max(peak[0], _rss_mb()))
        if cuda:
            usage["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
