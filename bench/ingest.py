"""Benchmark: ``rlhf_organic`` ingest vs a naive per-line loader, on a simulated BB3x corpus.

What it measures
----------------
1. It simulates (or reuses) a BlenderBot 3x release-format corpus of at least ``--utterances``
   messages split into ``--files`` ``release_data_NN.jsonl`` files (the ``realistic`` preset).
2. It runs, each in its own fresh Python process so that peak memory is per run:

   * **ours**: ``rlhf_organic.data.ingest.ingest`` on the release_data files (streaming, pyarrow.json
     fast path, Parquet out);
   * **baseline**: the approach of the public ParlAI BB3x teacher (``projects/bb3x/tasks/agents.py``,
     bot teacher): read each file line by line, ``json.loads`` every line, build one Python dict
     row per bot message that has at least one message before it (context = earlier texts joined
     with ``"\\n"``, the label text, the label message's fields, user and chat ids), keep every row
     of every file in one list, then ``pandas.DataFrame(rows).to_parquet(...)``.

   Both run on all the files and on the first quarter of them, so the table shows whether peak
   memory grows with the input (it should for the baseline, it should not for ours).
3. It checks that both count the same number of examples, prints a Markdown table and writes the
   numbers (with machine info) to ``bench/results/ingest.json``.

Targets: ours >= 5x the baseline's utterances/s on all files; our peak RSS on all files
<= 1.15 x our peak RSS on the first quarter.

Peak RSS is each child's own ``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux), reported by the
child; seconds are the child's time for the work itself (imports excluded), and the parent also
records each child's process wall time. All processes are pinned to at most 2 CPUs.

Run (from the repository root)::

    .venv/bin/python bench/ingest.py [--utterances 1000000] [--files 20] [--workdir /tmp/rlhf_bench_ingest]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from child import limit_cpus  # bench/child.py (bench/ is on sys.path when a bench runs)
from machine import machine_info  # bench/machine.py

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "ingest.json"
PRESET = "realistic"
SEED = 0
MAX_CPUS = 2
PILOT_USERS = 200
THROUGHPUT_TARGET = 5.0
RSS_GROWTH_LIMIT = 1.15


# ---- child processes ---------------------------------------------------------------------------


def worker_simulate(spec: dict) -> dict:
    from rlhf_organic.simulator.simulate import preset_config, simulate

    started = time.perf_counter()
    result = simulate(
        preset_config(PRESET, users=spec["users"], files=spec["files"], seed=spec["seed"]),
        spec["out"],
        overwrite=True,
        progress=False,
    )
    return {"seconds": time.perf_counter() - started, "counts": result.counts}


def worker_ours(spec: dict) -> dict:
    from rlhf_organic.data.ingest import ingest

    started = time.perf_counter()
    summary = ingest(spec["files"], spec["out"], overwrite=True, progress=False, log=lambda m: None)
    return {
        "seconds": time.perf_counter() - started,
        "messages": summary["messages"],
        "conversations": summary["conversations"],
        "examples": summary["examples"],
        "rejected": summary["rejected"],
    }


def baseline_rows(conversation: dict) -> list[dict]:
    """Rows of one conversation, as the ParlAI BB3x bot teacher builds its examples."""
    history = conversation.get("message_history") or []
    adversarial = any(
        m.get("sender") == "human"
        and any(v != "__ok__" for v in (m.get("safety") or {}).values())
        for m in history
    )
    rows = []
    for i, msg in enumerate(history):
        if i == 0 or msg.get("sender") != "bot":
            continue
        safety = msg.get("safety") or {}
        mturk = msg.get("mturk")
        rows.append(
            {
                "user_pseudo_id": conversation.get("user_pseudo_id"),
                "chat_id": conversation.get("chat_id"),
                "turn": i,
                "context": "\n".join(m.get("text") or "" for m in history[:i]),
                "label": msg.get("text"),
                "isLiked": msg.get("isLiked"),
                "isDisliked": msg.get("isDisliked"),
                "dislike_type": msg.get("dislike_type"),
                "reward": msg.get("reward"),
                "isSafetyControlledResponse": msg.get("isSafetyControlledResponse"),
                "from_model_crash": msg.get("from_model_crash"),
                "duo_safety": safety.get("duo_safety"),
                "string_matcher": safety.get("string_matcher"),
                "mturk": json.dumps(mturk) if mturk is not None else None,
                "adversarial_human": adversarial,
            }
        )
    return rows


def worker_baseline(spec: dict) -> dict:
    import pandas as pd

    started = time.perf_counter()
    rows: list[dict] = []
    messages = conversations = 0
    for path in spec["files"]:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                conversation = json.loads(line)
                conversations += 1
                messages += len(conversation.get("message_history") or [])
                rows.extend(baseline_rows(conversation))
    frame = pd.DataFrame(rows)
    frame.to_parquet(spec["out"], engine="pyarrow", compression="zstd", index=False)
    return {
        "seconds": time.perf_counter() - started,
        "messages": messages,
        "conversations": conversations,
        "examples": len(frame),
        "rejected": 0,
    }


WORKERS = {"simulate": worker_simulate, "ours": worker_ours, "baseline": worker_baseline}


def run_worker(kind: str, spec: dict) -> dict:
    """Run one worker in a fresh Python process; its JSON answer plus peak RSS and wall time."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--spec", json.dumps(spec)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{kind} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    answer["process_seconds"] = wall
    return answer


def worker_main(kind: str, spec_json: str) -> None:
    answer = WORKERS[kind](json.loads(spec_json))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    answer["peak_rss_kib"] = usage.ru_maxrss
    answer["process_cpu_seconds"] = usage.ru_utime + usage.ru_stime  # imports included
    print(json.dumps(answer))


# ---- corpus ------------------------------------------------------------------------------------


def corpus_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "logs").glob("release_data_*.jsonl"))


def existing_corpus(corpus: Path, settings: dict) -> dict | None:
    """The recorded corpus if it was made with ``settings`` and its files are all there."""
    meta_path = corpus / "bench_corpus.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    files = corpus_files(corpus)
    if meta.get("settings") != settings or len(files) != settings["files"]:
        return None
    if sum(p.stat().st_size for p in files) != meta.get("bytes"):
        return None
    return meta


def make_corpus(corpus: Path, settings: dict, log) -> dict:
    """Simulate at least ``settings['utterances']`` messages: a pilot sizes the user count."""
    (corpus / "bench_corpus.json").unlink(missing_ok=True)
    pilot = run_worker("simulate", {"users": PILOT_USERS, "files": 1, "seed": SEED, "out": str(corpus)})
    per_user = pilot["counts"]["messages"] / PILOT_USERS
    users = math.ceil(settings["utterances"] / per_user * 1.06)  # margin: the pilot is noisy
    total_seconds = 0.0
    while True:
        log(f"simulating {users} users (~{per_user:.0f} messages each) into {settings['files']} files ...")
        sim = run_worker("simulate", {"users": users, "files": settings["files"], "seed": SEED, "out": str(corpus)})
        total_seconds += sim["process_seconds"]
        if sim["counts"]["messages"] >= settings["utterances"]:
            break
        users = math.ceil(users * settings["utterances"] / sim["counts"]["messages"] * 1.02)
    files = corpus_files(corpus)
    meta = {
        "settings": settings,
        "users": users,
        "counts": sim["counts"],
        "bytes": sum(p.stat().st_size for p in files),
        "simulate_seconds": round(total_seconds, 2),
        "simulate_peak_rss_mb": round(sim["peak_rss_kib"] / 1024, 1),
    }
    (corpus / "bench_corpus.json").write_text(json.dumps(meta, indent=2))
    return meta


# ---- measurements ------------------------------------------------------------------------------


def warm_page_cache(files: list[Path]) -> None:
    """Read every input once so that no run pays for the first read from disk."""
    for path in files:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


def measure(kind: str, files: list[Path], out_root: Path) -> dict:
    folder = out_root / f"{kind}_{len(files)}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    out = folder / "examples.parquet" if kind == "baseline" else folder / "dataset"
    answer = run_worker(kind, {"files": [str(p) for p in files], "out": str(out)})
    written = [p for p in folder.rglob("*") if p.is_file()]
    answer.update(
        output_bytes=sum(p.stat().st_size for p in written),
        run=kind,
        files=len(files),
        bytes=sum(p.stat().st_size for p in files),
        utterances_per_s=answer["messages"] / answer["seconds"],
        peak_rss_mb=answer["peak_rss_kib"] / 1024,
    )
    return answer


def verdicts(runs: dict) -> dict:
    ours_all, base_all = runs["ours_all"], runs["baseline_all"]
    throughput_ratio = ours_all["utterances_per_s"] / base_all["utterances_per_s"]
    rss_growth = ours_all["peak_rss_mb"] / runs["ours_quarter"]["peak_rss_mb"]
    return {
        "throughput_ratio": throughput_ratio,
        "throughput_pass": throughput_ratio >= THROUGHPUT_TARGET,
        "rss_ratio_ours_over_baseline": ours_all["peak_rss_mb"] / base_all["peak_rss_mb"],
        "ours_rss_growth": rss_growth,
        "baseline_rss_growth": base_all["peak_rss_mb"] / runs["baseline_quarter"]["peak_rss_mb"],
        "rss_pass": rss_growth <= RSS_GROWTH_LIMIT,
        "examples_agree": ours_all["examples"] == base_all["examples"]
        and runs["ours_quarter"]["examples"] == runs["baseline_quarter"]["examples"],
        "messages_agree": ours_all["messages"] == base_all["messages"],
    }


# ---- report ------------------------------------------------------------------------------------


def markdown(runs: dict, v: dict) -> str:
    lines = [
        "| run | files | utterances | examples | seconds | utterances/s | peak RSS (MB) | output (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs.values():
        lines.append(
            f"| {r['run']} | {r['files']} | {r['messages']:,} | {r['examples']:,} | {r['seconds']:.2f} "
            f"| {r['utterances_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['output_bytes'] / 2**20:,.0f} |"
        )
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    lines += [
        "",
        f"- throughput ours/baseline (all files): **{v['throughput_ratio']:.2f}x** "
        f"(target >= {THROUGHPUT_TARGET:g}x): {ok(v['throughput_pass'])}",
        f"- peak RSS ours/baseline (all files): {v['rss_ratio_ours_over_baseline']:.2f}",
        f"- peak RSS all/quarter: ours {v['ours_rss_growth']:.2f}x (target <= {RSS_GROWTH_LIMIT:g}x): "
        f"{ok(v['rss_pass'])}; baseline {v['baseline_rss_growth']:.2f}x",
        f"- example counts agree (ours summary vs baseline rows): {'yes' if v['examples_agree'] else 'NO'}; "
        f"utterance counts agree: {'yes' if v['messages_agree'] else 'NO'}",
    ]
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=1_000_000, help="minimum corpus size in messages")
    parser.add_argument("--files", type=int, default=20, help="number of release_data files")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_ingest"), help="corpus and outputs")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    return parser.parse_args(argv)



def main() -> None:
    args = parse_args()
    limit_cpus(MAX_CPUS)
    if args.worker:
        worker_main(args.worker, args.spec)
        return
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    bench_started = time.perf_counter()

    corpus = args.workdir / "corpus"
    settings = {"utterances": args.utterances, "files": args.files, "preset": PRESET, "seed": SEED}
    meta = existing_corpus(corpus, settings)
    if meta:
        log(f"reusing corpus in {corpus} ({meta['counts']['messages']:,} utterances)")
    else:
        meta = make_corpus(corpus, settings, log)
        log(f"simulated {meta['counts']['messages']:,} utterances in {meta['simulate_seconds']:.1f} s")
    files = corpus_files(corpus)
    quarter = files[: max(1, len(files) // 4)]
    warm_page_cache(files)

    out_root = args.workdir / "out"
    runs = {}
    for name, kind, subset in (
        ("ours_quarter", "ours", quarter),
        ("ours_all", "ours", files),
        ("baseline_quarter", "baseline", quarter),
        ("baseline_all", "baseline", files),
    ):
        log(f"running {kind} on {len(subset)} files ...")
        runs[name] = measure(kind, subset, out_root)
    shutil.rmtree(out_root, ignore_errors=True)

    v = verdicts(runs)
    print(markdown(runs, v))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine_info("pyarrow", "pandas"),
        "corpus": {"path": str(corpus), **meta},
        "runs": runs,
        "targets": {"throughput_ratio_min": THROUGHPUT_TARGET, "rss_growth_max": RSS_GROWTH_LIMIT},
        "verdicts": v,
        "bench_seconds": round(time.perf_counter() - bench_started, 1),
    }
    RESULTS.write_text(json.dumps(report, indent=2))
    log(f"wrote {RESULTS} (bench took {report['bench_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
