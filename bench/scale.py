"""Benchmark: ingest and trust with ``engine: local`` against ``engine: ray`` on 1 and 2 workers, on a
BB3x-sized simulated corpus and on one 10 times larger.

What it measures
----------------
1. Two corpora in the BB3x release format (``bench/ingest.py`` makes them, the ``realistic`` preset):
   ``--utterances`` messages (default 6M, the size of the BB3x release) and 10 times as many, each split
   into ``--files`` and ``10 x --files`` release_data files (so a file, the unit of a Ray task, stays the
   same size as the corpus grows).
2. For each corpus, each in a fresh Python process: ``ingest`` with ``engine: local``, then with
   ``engine: ray`` on a Ray of this machine's with 1 and with 2 worker CPUs; then ``trust`` (the default
   ``combined`` scheme) on the local dataset the same three ways.
3. Seconds of the work itself (Ray start-up excluded, measured apart), the driver's peak RSS, and the
   peak RSS of every Ray worker process (sampled every 0.1 s with psutil; the largest is reported): the
   per-worker number must stay flat from the 1x corpus to the 10x one. Each Ray run is checked against
   the local one: the same row counts, rejects and weights (largest difference).

A Markdown table is printed and the numbers are written to ``bench/results/scale.json``
(``scale_quick.json`` with ``--quick``: a 20k-utterance corpus and a 200k one, for a smoke test).
All processes are pinned to at most 2 CPUs; the 1-minute load average before and after each run is
recorded, as other work on the machine slows a run.

Run (from the repository root)::

    .venv/bin/python bench/scale.py              # 6M and 60M utterances: hours on 2 CPUs
    .venv/bin/python bench/scale.py --quick      # 20k and 200k utterances: minutes
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

from child import limit_cpus, reply, run_child  # bench/child.py (bench/ is on sys.path when a bench runs)
from ingest import corpus_files, existing_corpus, make_corpus  # bench/ingest.py: the scale corpus
from machine import machine_info  # bench/machine.py

BENCH_DIR = Path(__file__).resolve().parent
PRESET = "realistic"
SEED = 0
MAX_CPUS = 2
WORKERS = (1, 2)


# ---- child processes ---------------------------------------------------------------------------


class WorkerPeaks:
    """Samples the resident memory of this process's Ray worker processes; the peak of each."""

    def __init__(self, every: float = 0.1):
        import psutil

        self.psutil, self.every, self.peaks = psutil, every, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for proc in self.psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if proc.info["memory_info"] is not None and cmd.startswith("ray::"):  # a worker (tasks, actors)
                    self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), proc.info["memory_info"].rss)
            self.stop.wait(self.every)

    def close(self) -> dict:
        self.stop.set()
        self.thread.join()
        busy = sorted(self.peaks.values(), reverse=True)
        return {"worker_peak_rss_mb": round(busy[0] / 2**20) if busy else None, "worker_processes": len(busy)}


def child(spec: dict) -> dict:
    """One run: ingest or trust, local or on a fresh local Ray with ``spec['workers']`` CPUs."""
    answer: dict = {}
    peaks = None
    if spec["engine"] == "ray":
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=spec["workers"], include_dashboard=False, logging_level="ERROR")
        answer["ray_start_seconds"] = round(time.perf_counter() - started, 2)
        peaks = WorkerPeaks()
    started = time.perf_counter()
    if spec["stage"] == "ingest":
        from rlhf_organic.data.ingest import ingest

        summary = ingest(spec["inputs"], spec["out"], overwrite=True, progress=False, log=lambda m: None,
                         engine=spec["engine"])
        answer.update({k: summary[k] for k in ("lines", "messages", "examples", "rejected", "users")})
    else:
        from rlhf_organic.trust.config import settings_from_cli
        from rlhf_organic.trust.stage import compute_trust

        settings = settings_from_cli("combined", []).model_copy(update={"engine": spec["engine"]})
        metrics = compute_trust(spec["dataset"], spec["out"], settings, overwrite=True, progress=False,
                                log=lambda m: None)
        answer.update(labels=metrics["examples"], mean_trust=metrics["mean_trust"])
    answer["seconds"] = round(time.perf_counter() - started, 2)
    if peaks is not None:
        answer.update(peaks.close())
    return answer


# ---- parent ------------------------------------------------------------------------------------


def largest_difference(a: Path, b: Path) -> float:
    """The largest difference between the weights of two trust folders (labels and A/B choices)."""
    import numpy as np
    import pyarrow.parquet as pq

    worst = 0.0
    for table, column in (("users", "trust"), ("examples", "weight"), ("preferences", "weight")):
        if (a / f"{table}.parquet").is_file():
            x = pq.read_table(a / f"{table}.parquet", columns=[column]).column(column).to_numpy()
            y = pq.read_table(b / f"{table}.parquet", columns=[column]).column(column).to_numpy()
            worst = max(worst, float(np.max(np.abs(x - y), initial=0.0)))
    return worst


def same_dataset(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    names = ("conversations", "messages", "examples", "feedback", "preferences", "users")
    return all(pq.read_table(a / f"{n}.parquet").equals(pq.read_table(b / f"{n}.parquet")) for n in names) and \
        (a / "rejects.jsonl").read_bytes() == (b / "rejects.jsonl").read_bytes()


def run(spec: dict) -> dict:
    return run_child(Path(__file__), ["--child", json.dumps(spec)])


def measure_corpus(label: str, corpus: Path, utterances: int, files: int, out_root: Path, log) -> list[dict]:
    settings = {"utterances": utterances, "files": files, "preset": PRESET, "seed": SEED}
    meta = existing_corpus(corpus, settings) or make_corpus(corpus, settings, log)
    inputs = [str(p) for p in corpus_files(corpus)]
    rows = []
    engines = [("local", None)] + [("ray", w) for w in WORKERS]
    for stage in ("ingest", "trust"):
        for engine, workers in engines:
            name = f"{engine}" + (f"_{workers}" if workers else "")
            out = out_root / f"{label}_{stage}_{name}"
            log(f"{label}: {stage} {name} ...")
            spec = {"stage": stage, "engine": engine, "workers": workers, "out": str(out), "inputs": inputs,
                    "dataset": str(out_root / f"{label}_ingest_local")}
            answer = run(spec)
            answer.update(corpus=label, utterances=meta["counts"]["messages"], files=len(inputs), stage=stage,
                          engine=engine, workers=workers)
            if engine == "ray" and stage == "ingest":
                answer["same_as_local"] = same_dataset(out, out_root / f"{label}_ingest_local")
            if engine == "ray" and stage == "trust":
                answer["max_weight_difference"] = largest_difference(out, out_root / f"{label}_trust_local")
            rows.append(answer)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| corpus | utterances | stage | engine | workers | seconds | driver peak MB | worker peak MB "
             "| same as local | load (1 min) |",
             "|---|---:|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        same = ("yes" if r.get("same_as_local") else "NO") if "same_as_local" in r else (
            f"max diff {r['max_weight_difference']:.1e}" if "max_weight_difference" in r else "")
        lines.append(f"| {r['corpus']} | {r['utterances']:,} | {r['stage']} | {r['engine']} | {r['workers'] or '-'} "
                     f"| {r['seconds']:.1f} | {r['peak_rss_mb']} | {r.get('worker_peak_rss_mb') or '-'} | {same} "
                     f"| {r['loadavg_1min'][0]} -> {r['loadavg_1min'][1]} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=6_000_000, help="size of the 1x corpus in messages")
    parser.add_argument("--files", type=int, default=20, help="release_data files of the 1x corpus (10x: ten times)")
    parser.add_argument("--quick", action="store_true", help="a 20k-utterance corpus (and 200k): a smoke test")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_scale"), help="corpora and outputs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    limit_cpus(MAX_CPUS)
    if args.child:
        reply(child(json.loads(args.child)))
        return
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    utterances, files = (20_000, 2) if args.quick else (args.utterances, args.files)
    out_root = args.workdir / "out"
    shutil.rmtree(out_root, ignore_errors=True)
    rows = []
    for label, factor in (("1x", 1), ("10x", 10)):
        rows += measure_corpus(label, args.workdir / f"corpus_{label}", utterances * factor, files * factor,
                               out_root, log)
    shutil.rmtree(out_root, ignore_errors=True)
    print(markdown(rows))
    results = BENCH_DIR / "results" / ("scale_quick.json" if args.quick else "scale.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info("pyarrow", "ray"), "runs": rows, "bench_seconds": round(time.perf_counter() - started, 1)}
    results.write_text(json.dumps(report, indent=2))
    log(f"wrote {results} (bench took {report['bench_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
