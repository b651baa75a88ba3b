"""Benchmark: trust schemes on SafetyMix-style simulated data (helpers and trolls), and trust at BB3x scale.

What it measures
----------------
**SafetyMix part** (the default). It reproduces the shape of the helpers/trolls study's table (Ju et al.
2022, arXiv 2208.03295; ``/work/shared/design/FACTS.md`` section 2) on simulator data:

1. For every preset (helpers only, each troll type at 50%, the realistic mix) and every seed it
   simulates a corpus (``rlhf_organic.simulator.simulate``, seed = the bench seed) and ingests it
   (``rlhf_organic.data.ingest``) under ``--workdir``; a dataset made with the same settings is reused.
2. In one child process per dataset (``--jobs`` at a time) it loads the feedback (``load_feedback``)
   and runs every scheme through ``run_scheme`` with one shared ``TrustContext(ReferenceConfig(),
   seed)``, so the k-fold reference is trained once per set of training examples and shared.
3. The downstream task is the same for every row: the hashed n-gram logistic regression
   (``NgramClassifier()``) learns "is this bot reply good" from the users' thumbs, each label
   weighted by the scheme. Rows besides the schemes: **oracle** (weight 0 for every label of a
   ground-truth troll, 1 otherwise) and **uniform** (standard training; it is also a scheme).
4. Error is measured on clean held-out labels: bot replies of the same simulation that nobody gave
   a thumbs, that have no gold label (``select_on_gold`` tunes thresholds on those) and that are not
   canned safety replies (which no user can rate), with the simulator's true ``is_good``; at most
   ``--test-cap`` of them, sampled with the seed. Error % = 100 (1 - accuracy).
5. Per scheme it also records, against the ground truth, the user-level troll AUC (of 1 - trust),
   the share of helper and troll label weight kept, the corrupted-label AUC, mean trust per
   user type and the config actually used (thresholds chosen by ``select_on_gold``).

It prints Markdown tables (error mean +- std over seeds; troll AUC; helper weight kept; thresholds
used), checks the targets and writes ``bench/results/trust_safetymix.json`` (machine, versions, git
commit and uncommitted package diff, settings, per-seed numbers). ``--variant`` adds rows with other
scheme settings, ``--select-on-gold on|off`` overrides that setting for every scheme.

Targets (from the issue):

* every agreement-based scheme beats uniform on the flip-type trolls (troll_50, master_troll_50);
* per_user_example and combined land within 3 points of oracle on troll, master, safe, unsafe and lazy;
* combined is within 3 points of oracle on gaslight.

**Scale part** (``--scale``). Trust for a BB3x-sized dataset: it simulates (or reuses) a corpus of
about ``--scale-replies`` bot replies from ``--scale-users`` users with sparse feedback (realistic mix,
1 or 2 labels per user), ingests it, then runs ``compute_trust`` (scheme combined, then
per_user_example) in fresh child processes, each reporting its own wall seconds and peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``); the progress bars go to the terminal. Inside the trust
child the bench wraps the k-fold runs and ``NgramClassifier`` calls to count and time them (where the
time goes); a child still running after ``--scale-timeout`` seconds is stopped and reported as such.
It writes ``bench/results/trust_safetymix_scale.json``.

Run (from the repository root)::

    .venv/bin/python bench/trust_safetymix.py [--seeds 3] [--users 400] [--jobs 2] [--quick]
    .venv/bin/python bench/trust_safetymix.py --scale [--scale-users 260000] [--scale-replies 2700000]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from child import json_default, limit_cpus, reply, run_child  # bench/child.py (bench/ is on sys.path when a bench runs)
from machine import machine_info  # bench/machine.py

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "trust_safetymix.json"
SCALE_RESULTS = BENCH_DIR / "results" / "trust_safetymix_scale.json"
MAX_CPUS = 2

PRESETS = (
    "helpers_only", "troll_50", "master_troll_50", "lazy_troll_50", "safe_troll_50", "unsafe_troll_50",
    "gaslight_troll_50", "realistic",
)
SHORT = {
    "helpers_only": "helpers", "troll_50": "troll", "master_troll_50": "master", "lazy_troll_50": "lazy",
    "safe_troll_50": "safe", "unsafe_troll_50": "unsafe", "gaslight_troll_50": "gaslight", "realistic": "realistic",
}
DEFAULT_USERS = 400  # about 4,000 labels per SafetyMix dataset (10 labels per user)
QUICK = {"users": 120, "realistic_users": 300, "seeds": 1}
DEFAULT_TEST_CAP = 5000

# Targets.
AGREEMENT_SCHEMES = ("per_example", "per_user", "per_user_example", "soft_purr", "bayesian", "crowd", "combined")
FLIP_PRESETS = ("troll_50", "master_troll_50")
NEAR_ORACLE_SCHEMES = ("per_user_example", "combined")
NEAR_ORACLE_PRESETS = ("troll_50", "master_troll_50", "safe_troll_50", "unsafe_troll_50", "lazy_troll_50")
NEAR_ORACLE_POINTS = 3.0

# Scale part.
SCALE_PRESET = "realistic"
SCALE_SETTINGS = {"labels_per_user_mean": 1.5, "labels_per_user_std": 1.0, "preferences_per_user": 0.0}
SCALE_PILOT_USERS = 4000
SCALE_FEEDBACK_RATE = 0.15  # the pilot's; rescaled so the corpus has about --scale-replies bot replies


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- datasets ----------------------------------------------------------------------------------


def dataset_dir(workdir: Path, preset: str, seed: int, users: int | None) -> Path:
    return Path(workdir) / "datasets" / f"{preset}_u{users or 'preset'}_s{seed}"


def ensure_dataset(folder: Path, preset: str, seed: int, users: int | None, files: int = 1,
                   progress: bool = False, **overrides) -> dict:
    """Simulate + ingest into ``folder`` (``sim/``, ``ds/``) unless it already holds the same settings."""
    from rlhf_organic.data.ingest import ingest
    from rlhf_organic.simulator.simulate import preset_config, simulate

    cfg = preset_config(preset, users=users, seed=seed, files=files, **overrides)
    settings = {"preset": preset, "sim": cfg.model_dump()}
    meta_path = folder / "bench_dataset.json"
    if meta_path.is_file() and (folder / "ds" / "summary.json").is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings:
            meta["reused"] = True
            return meta
    meta_path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sim = simulate(cfg, folder / "sim", overwrite=True, progress=progress)
    simulated = time.perf_counter()
    summary = ingest([str(folder / "sim" / "logs")], folder / "ds", overwrite=True, progress=progress,
                     log=lambda m: None)
    meta = {
        "settings": settings,
        "counts": sim.counts,
        "ingest": {k: summary[k] for k in ("conversations", "messages", "examples", "thumbs_up", "thumbs_down", "rejected")},
        "simulate_seconds": round(simulated - started, 2),
        "ingest_seconds": round(time.perf_counter() - simulated, 2),
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["reused"] = False
    return meta


def clean_test_set(folder: Path, exclude_ids, cap: int, seed: int) -> tuple[list[str], object]:
    """(texts, is_good) of bot replies not in ``exclude_ids`` (the rated ones and the gold-labelled ones,
    which ``select_on_gold`` tunes on) and not canned safety replies, at most ``cap``, sampled with ``seed``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    truth = pq.read_table(folder / "sim" / "ground_truth_examples.parquet", columns=["example_id", "is_good", "is_canned"])
    truth = truth.filter(pc.and_(
        pc.invert(truth.column("is_canned")),
        pc.invert(pc.is_in(truth.column("example_id"), value_set=pa.array(list(exclude_ids), pa.string()))),
    ))
    examples = pq.read_table(folder / "ds" / "examples.parquet", columns=["example_id", "response"])
    joined = truth.join(examples, "example_id", join_type="inner")
    if joined.num_rows != truth.num_rows:
        raise RuntimeError(f"{folder}: {truth.num_rows - joined.num_rows} ground-truth replies missing from examples.parquet")
    joined = joined.sort_by("example_id")  # join order is not deterministic
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(joined.num_rows, size=min(cap, joined.num_rows), replace=False))
    sample = joined.take(pa.array(rows, pa.int64()))
    return sample.column("response").to_pylist(), sample.column("is_good").to_numpy(zero_copy_only=False).astype(np.int8)


# ---- one dataset (child process) ---------------------------------------------------------------


def worker_dataset(spec: dict) -> dict:
    import numpy as np

    from rlhf_organic.trust.config import TrustSection, settings_from_cli
    from rlhf_organic.trust.data import load_feedback
    from rlhf_organic.trust.metrics import trust_metrics
    from rlhf_organic.trust.reference import NgramClassifier, ReferenceConfig
    from rlhf_organic.trust.scheme import TrustContext
    from rlhf_organic.trust.stage import load_ground_truth, run_scheme

    folder, preset, seed = Path(spec["folder"]), spec["preset"], spec["seed"]
    started = time.perf_counter()
    meta = ensure_dataset(folder, preset, seed, spec["users"])
    prepared = time.perf_counter()
    data = load_feedback(folder / "ds")
    truth = load_ground_truth(folder / "sim", data)
    is_troll = truth["is_troll"]
    if np.isnan(is_troll).any():
        raise RuntimeError(f"{folder}: users without ground truth")
    test_text, test_good = clean_test_set(
        folder, [*data.example_ids.tolist(), *data.gold_example_ids.tolist()], spec["test_cap"], seed
    )

    clf = NgramClassifier()
    x_train, x_test = clf.features(data.text), clf.features(test_text)

    def downstream(weight) -> float:
        pred = clf.fit(x_train, data.label, weight).predict_proba(x_test) >= 0.5
        return float(100.0 * (1.0 - np.mean(pred == test_good)))

    n_labels = data.per_user_count()
    example_troll = is_troll[data.user]
    types = truth["user_type"]

    def describe(trust, weight, cut) -> dict:
        m = trust_metrics(trust, weight, n_labels, cut, user_is_troll=is_troll, example_user_is_troll=example_troll,
                          example_corrupted=truth["corrupted"])
        has = n_labels > 0
        return {
            "troll_auc": (m.get("user") or {}).get("auc"),
            "troll_precision": (m.get("user") or {}).get("precision"),
            "troll_recall": (m.get("user") or {}).get("recall"),
            "corrupted_auc": (m.get("example") or {}).get("auc"),
            "weight_kept": m["weight_kept"],
            "helper_weight_kept": m.get("helper_weight_kept"),
            "troll_weight_kept": m.get("troll_weight_kept"),
            "mean_trust_by_type": {str(t): float(np.mean(trust[has & (types == t)])) for t in sorted(set(types[has]))},
        }

    rows: dict[str, dict] = {}
    t0 = time.perf_counter()
    oracle_weight = 1.0 - example_troll
    rows["oracle"] = {"error": downstream(oracle_weight), "seconds": 0.0, "downstream_seconds": time.perf_counter() - t0,
                      **describe(1.0 - is_troll, oracle_weight, 0.5)}

    ctx = TrustContext(ReferenceConfig(), seed=seed)
    notes: list[str] = []
    gold = {} if spec["select_on_gold"] is None else {"select_on_gold": spec["select_on_gold"]}
    runs = [(name, TrustSection(scheme=name, **gold)) for name in spec["schemes"]]
    runs += [(label, settings_from_cli(scheme, [*sets, *(f"{k}={str(v).lower()}" for k, v in gold.items())]))
             for label, scheme, sets in spec["variants"]]
    for label, settings in runs:
        t0 = time.perf_counter()
        result, cfg = run_scheme(data, settings, ctx, log=notes.append)
        t1 = time.perf_counter()
        rows[label] = {"scheme": settings.scheme, "config": cfg, "select_on_gold": settings.select_on_gold,
                       "error": downstream(result.weight),
                       "seconds": t1 - t0, "downstream_seconds": time.perf_counter() - t1,
                       "notes": result.notes, **describe(result.trust, result.weight, cfg["cut"])}
    return {
        "preset": preset,
        "seed": seed,
        "dataset": {"folder": str(folder), "reused": meta["reused"], "counts": meta["counts"],
                    "simulate_seconds": meta["simulate_seconds"], "ingest_seconds": meta["ingest_seconds"]},
        "labels": int(data.n_examples),
        "users": int(data.n_users),
        "troll_label_share": float(example_troll.mean()),
        "corrupted_label_share": float(np.nanmean(truth["corrupted"])),
        "test_examples": len(test_text),
        "test_good_share": float(np.mean(test_good)),
        "rows": rows,
        "log": notes,
        "seconds": {"prepare": round(prepared - started, 2), "total": round(time.perf_counter() - started, 2)},
    }


# ---- scale part (child processes) --------------------------------------------------------------


def worker_scale_simulate(spec: dict) -> dict:
    from rlhf_organic.simulator.simulate import preset_config, simulate

    started = time.perf_counter()
    cfg = preset_config(SCALE_PRESET, **spec["sim"])
    result = simulate(cfg, spec["out"], overwrite=True, progress=spec.get("progress", False))
    return {"seconds": time.perf_counter() - started, "counts": result.counts}


def worker_scale_ingest(spec: dict) -> dict:
    from rlhf_organic.data.ingest import ingest

    started = time.perf_counter()
    summary = ingest([spec["logs"]], spec["out"], overwrite=True, progress=True, log=log)
    return {"seconds": time.perf_counter() - started, "summary": summary}


def instrument() -> dict:
    """Count and time the expensive calls inside compute_trust (k-fold runs, fits, featurising), by
    wrapping them in this child process only; the package itself is not changed."""
    from rlhf_organic.trust import base, reference

    spent: dict = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                entry = spent.setdefault(name, {"calls": 0, "seconds": 0.0})
                entry["calls"] += 1
                entry["seconds"] += time.perf_counter() - t0
        return wrapper

    base.held_out_probabilities = timed("k-fold reference runs", base.held_out_probabilities)
    for method in ("fit", "predict_proba", "features"):
        setattr(reference.NgramClassifier, method, timed(f"NgramClassifier.{method}", getattr(reference.NgramClassifier, method)))
    return spent


def worker_scale_trust(spec: dict) -> dict:
    from rlhf_organic.trust.config import TrustSection
    from rlhf_organic.trust.stage import compute_trust

    spent = instrument()
    started = time.perf_counter()
    gold = {} if spec.get("select_on_gold") is None else {"select_on_gold": spec["select_on_gold"]}
    metrics = compute_trust(spec["dataset"], spec["out"], TrustSection(scheme=spec["scheme"], **gold), seed=0,
                            overwrite=True, progress=True, log=log)
    return {"seconds": time.perf_counter() - started, "metrics": metrics,
            "where_time_goes": {k: {"calls": v["calls"], "seconds": round(v["seconds"], 1)} for k, v in spent.items()}}


WORKERS = {
    "dataset": worker_dataset,
    "scale_simulate": worker_scale_simulate,
    "scale_ingest": worker_scale_ingest,
    "scale_trust": worker_scale_trust,
}


def run_worker(kind: str, spec: dict, *, threads: int | None = None, show_stderr: bool = False,
               timeout: float | None = None) -> dict:
    """Run one worker in a fresh Python process (``child.run_child``)."""
    return run_child(Path(__file__).resolve(), ["--worker", kind, "--spec", json.dumps(spec)], threads=threads,
                     timeout=timeout, show_stderr=show_stderr)


def worker_main(kind: str, spec_json: str) -> None:
    reply(WORKERS[kind](json.loads(spec_json)))


# ---- report ------------------------------------------------------------------------------------


def _stats(values: list[float]) -> tuple[float, float]:
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(results: list[dict], row_names: list[str], presets: list[str]) -> dict:
    """{row: {preset: {metric: (mean, std)}}} over seeds."""
    out: dict = {}
    for row in row_names:
        out[row] = {}
        for preset in presets:
            runs = [r["rows"][row] for r in results if r["preset"] == preset and row in r["rows"]]
            out[row][preset] = {
                metric: _stats([run.get(metric) for run in runs])
                for metric in ("error", "troll_auc", "helper_weight_kept", "troll_weight_kept", "seconds")
            }
            out[row][preset]["seeds"] = len(runs)
    return out


def markdown_table(summary: dict, row_names: list[str], presets: list[str], metric: str, fmt: str,
                   with_std: bool = True) -> str:
    header = "| " + metric_title(metric) + " | " + " | ".join(SHORT.get(p, p) for p in presets) + " |"
    lines = [header, "|---|" + "---:|" * len(presets)]
    for row in row_names:
        cells = []
        for preset in presets:
            mean, std = summary[row][preset][metric]
            if math.isnan(mean):
                cells.append("-")
            else:
                seeds = summary[row][preset]["seeds"]
                cells.append(f"{mean:{fmt}} ± {std:{fmt}}" if with_std and seeds > 1 else f"{mean:{fmt}}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_title(metric: str) -> str:
    return {"error": "error %", "troll_auc": "user troll AUC", "helper_weight_kept": "helper weight kept",
            "troll_weight_kept": "troll weight kept"}.get(metric, metric)


def tuned_table(results: list[dict], row_names: list[str], presets: list[str]) -> str:
    """The value of each tunable scheme's TUNE setting that each run used, seeds joined by '/'."""
    from rlhf_organic.trust.schemes import SCHEMES

    lines = []
    for row in row_names:
        cells, field = [], None
        for preset in presets:
            runs = [r["rows"].get(row) for r in results if r["preset"] == preset]
            runs = [x for x in runs if x and "scheme" in x]
            tune = getattr(SCHEMES[runs[0]["scheme"]], "TUNE", None) if runs else None
            if not tune:
                break
            field = tune[0]
            cells.append("/".join(f"{x['config'][field]:g}" for x in runs))
        if field and cells:
            lines.append(f"| {row} | {field} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    return "\n".join(["| scheme | setting | " + " | ".join(SHORT.get(p, p) for p in presets) + " |",
                      "|---|---|" + "---:|" * len(presets), *lines])


def target_checks(summary: dict, presets: list[str], schemes: list[str]) -> list[dict]:
    checks = []

    def err(row, preset):
        cell = summary.get(row, {}).get(preset)
        return None if cell is None or math.isnan(cell["error"][0]) else cell["error"][0]

    for preset in FLIP_PRESETS:
        for scheme in AGREEMENT_SCHEMES:
            if preset in presets and scheme in schemes:
                e, u = err(scheme, preset), err("uniform", preset)
                checks.append({"target": "beats uniform on flip trolls", "scheme": scheme, "preset": preset,
                               "error": e, "reference": u, "reference_row": "uniform",
                               "pass": e is not None and u is not None and e < u})
    for scheme in NEAR_ORACLE_SCHEMES:
        for preset in NEAR_ORACLE_PRESETS + ("gaslight_troll_50",):
            if preset == "gaslight_troll_50" and scheme != "combined":
                continue
            if preset in presets and scheme in schemes:
                e, o = err(scheme, preset), err("oracle", preset)
                checks.append({"target": f"within {NEAR_ORACLE_POINTS:g} points of oracle", "scheme": scheme,
                               "preset": preset, "error": e, "reference": o, "reference_row": "oracle",
                               "pass": e is not None and o is not None and e - o <= NEAR_ORACLE_POINTS})
    return checks


def format_checks(checks: list[dict]) -> str:
    lines = []
    for c in checks:
        verdict = "PASS" if c["pass"] else "FAIL"
        gap = c["error"] - c["reference"] if c["error"] is not None and c["reference"] is not None else float("nan")
        lines.append(f"- {verdict}: {c['target']}: {c['scheme']} on {SHORT[c['preset']]}: {c['error']:.2f} vs "
                     f"{c['reference_row']} {c['reference']:.2f} ({gap:+.2f})")
    passed = sum(c["pass"] for c in checks)
    lines.append(f"- {passed} of {len(checks)} checks pass")
    return "\n".join(lines)


def git_state() -> dict:
    """The commit the package was measured at, and whether rlhf_organic/ had uncommitted changes (read only)."""
    root = BENCH_DIR.parent

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--", "rlhf_organic")
    return {"git_commit": git("rev-parse", "HEAD"),
            "package_uncommitted": dirty.splitlines() if dirty else [],
            "package_diff": git("diff", "HEAD", "--", "rlhf_organic") or None}


# ---- main: SafetyMix ---------------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """``LABEL=SCHEME:key=value,key=value`` -> (label, scheme, ["key=value", ...])."""
    label, sep, rest = text.partition("=")
    scheme, _, sets = rest.partition(":")
    if not sep or not label or not scheme:
        raise SystemExit(f"--variant {text!r}: expected LABEL=SCHEME[:key=value,...], e.g. cb_flag05=combined:flag_ok=0.05")
    return label, scheme, [s for s in sets.split(",") if s]


def run_safetymix(args) -> None:
    from rlhf_organic.trust.schemes import SCHEMES

    bench_started = time.perf_counter()
    # recorded before the runs: the package state they import
    machine = {**git_state(), **machine_info("numpy", "scipy", "sklearn", "pyarrow")}
    seeds = list(range(QUICK["seeds"] if args.quick and args.seeds is None else (args.seeds or 3)))
    presets = args.presets or list(PRESETS)
    schemes = args.schemes or list(SCHEMES)
    for name in presets:
        if name not in PRESETS:
            raise SystemExit(f"unknown preset {name}; choose from {', '.join(PRESETS)}")
    for name in schemes:
        if name not in SCHEMES:
            raise SystemExit(f"unknown scheme {name}; choose from {', '.join(SCHEMES)}")
    if "uniform" not in schemes:
        schemes = ["uniform", *schemes]
    variants = [parse_variant(v) for v in args.variant]

    def users_for(preset: str) -> int | None:
        if args.users is not None:
            return args.users
        if preset == "realistic":
            return QUICK["realistic_users"] if args.quick else None  # None: the preset's own (1000)
        return QUICK["users"] if args.quick else DEFAULT_USERS

    specs = [
        {"folder": str(dataset_dir(args.workdir, p, s, users_for(p))), "preset": p, "seed": s, "users": users_for(p),
         "schemes": schemes, "variants": variants, "test_cap": args.test_cap, "select_on_gold": args.select_on_gold}
        for s in seeds for p in presets
    ]
    specs.sort(key=lambda sp: sp["preset"] != "realistic")  # the biggest first, for a better packing
    log(f"{len(specs)} datasets ({len(presets)} presets x {len(seeds)} seeds), {len(schemes) + len(variants)} schemes, "
        f"{args.jobs} at a time, under {args.workdir}")
    threads = 1 if args.jobs > 1 else None

    def one(spec):
        answer = run_worker("dataset", spec, threads=threads)
        log(f"  {spec['preset']} seed {spec['seed']}: {answer['labels']} labels, {answer['test_examples']} test, "
            f"{answer['process_seconds']:.0f} s ({'reused' if answer['dataset']['reused'] else 'simulated'}), "
            f"peak RSS {answer['peak_rss_mb']:,} MB")
        return answer

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, specs))
    results.sort(key=lambda r: (presets.index(r["preset"]), r["seed"]))

    row_names = ["oracle", *schemes, *[v[0] for v in variants]]
    summary = summarise(results, row_names, presets)
    checks = target_checks(summary, presets, schemes)
    labels = {p: _stats([r["labels"] for r in results if r["preset"] == p])[0] for p in presets}
    print(f"Downstream error on clean held-out labels (%, lower is better; {len(seeds)} seeds; "
          f"labels per dataset: " + ", ".join(f"{SHORT[p]} {labels[p]:,.0f}" for p in presets) + ")\n")
    print(markdown_table(summary, row_names, presets, "error", ".1f"))
    print("\nUser-level troll AUC (1 - trust; mean over seeds)\n")
    print(markdown_table(summary, [r for r in row_names if r not in ("uniform",)],
                         [p for p in presets if p != "helpers_only"], "troll_auc", ".3f", with_std=False))
    print("\nHelper label weight kept (mean over seeds)\n")
    print(markdown_table(summary, row_names, presets, "helper_weight_kept", ".2f", with_std=False))
    tuned = tuned_table(results, row_names, presets)
    if tuned:
        print("\nThresholds used (select_on_gold picks them on the gold labels; seeds 0/1/2...)\n")
        print(tuned)
    print("\nTargets\n")
    print(format_checks(checks))
    bench_seconds = round(time.perf_counter() - bench_started, 1)
    print(f"\nbench took {bench_seconds:.0f} s")

    report = {
        "machine": machine,
        "settings": {"presets": presets, "seeds": seeds, "schemes": schemes, "variants": variants,
                     "users": {p: users_for(p) for p in presets}, "test_cap": args.test_cap, "jobs": args.jobs,
                     "quick": args.quick, "workdir": str(args.workdir), "select_on_gold": args.select_on_gold,
                     "reference": "ReferenceConfig() defaults", "downstream": "NgramClassifier() defaults"},
        "targets": {"agreement_schemes": AGREEMENT_SCHEMES, "flip_presets": FLIP_PRESETS,
                    "near_oracle_schemes": NEAR_ORACLE_SCHEMES, "near_oracle_presets": NEAR_ORACLE_PRESETS,
                    "near_oracle_points": NEAR_ORACLE_POINTS},
        "summary": {row: {p: {m: list(v) if isinstance(v, tuple) else v for m, v in cells.items()}
                          for p, cells in per.items()} for row, per in summary.items()},
        "checks": checks,
        "runs": results,
        "bench_seconds": bench_seconds,
    }
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=json_default))
    log(f"wrote {out}")


# ---- main: scale -------------------------------------------------------------------------------


def scale_corpus(workdir: Path, users: int, replies: int, files: int) -> dict:
    """Simulate (or reuse) the scale corpus; a pilot sets the feedback rate that gives ~``replies`` replies."""
    folder = workdir / "scale"
    meta_path = folder / "scale_corpus.json"
    wanted = {"users": users, "replies": replies, "files": files, "preset": SCALE_PRESET, **SCALE_SETTINGS}
    if meta_path.is_file() and (folder / "sim" / "simulation.json").is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("wanted") == wanted:
            log(f"reusing scale corpus in {folder / 'sim'} ({meta['simulate']['counts']['bot_replies']:,} bot replies)")
            meta["reused"] = True
            return meta
    meta_path.unlink(missing_ok=True)
    base = {**SCALE_SETTINGS, "seed": 0}
    pilot_users = min(SCALE_PILOT_USERS, users)
    pilot = run_worker("scale_simulate", {"out": str(folder / "pilot"), "sim": {
        **base, "users": pilot_users, "feedback_rate": SCALE_FEEDBACK_RATE, "files": 1}})
    shutil.rmtree(folder / "pilot", ignore_errors=True)
    per_user = pilot["counts"]["bot_replies"] / pilot_users
    # Replies per user scale roughly as 1 / feedback_rate (users chat until they have enough replies).
    rate = min(1.0, SCALE_FEEDBACK_RATE * per_user * users / replies)
    sim_settings = {**base, "users": users, "feedback_rate": round(rate, 4), "files": files}
    log(f"pilot: {per_user:.1f} bot replies per user at feedback_rate {SCALE_FEEDBACK_RATE}; simulating {users:,} users "
        f"at feedback_rate {rate:.4f} into {files} files ...")
    sim = run_worker("scale_simulate", {"out": str(folder / "sim"), "sim": sim_settings, "progress": True},
                     show_stderr=True)
    meta = {"wanted": wanted, "sim_settings": sim_settings, "pilot": pilot["counts"],
            "simulate": {"seconds": round(sim["seconds"], 1), "process_seconds": sim["process_seconds"],
                         "peak_rss_mb": sim["peak_rss_mb"], "counts": sim["counts"]}}
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["reused"] = False
    return meta


def tuned_note(metrics: dict) -> str:
    from rlhf_organic.trust.schemes import SCHEMES

    tune = getattr(SCHEMES[metrics["scheme"]], "TUNE", None)
    return f"{tune[0]}={metrics['config'][tune[0]]}" if tune else "nothing tuned"


def user_auc_from_trust_folder(trust_dir: Path, sim_dir: Path) -> dict:
    """Troll AUC and mean trust by type, from the written users.parquet and the simulation's ground truth."""
    import numpy as np
    import pyarrow.parquet as pq

    from rlhf_organic.trust.metrics import roc_auc

    users = pq.read_table(trust_dir / "users.parquet", columns=["user_id", "trust", "n_labels"]).to_pandas()
    truth = pq.read_table(sim_dir / "ground_truth.parquet", columns=["user_id", "user_type", "is_troll"]).to_pandas()
    merged = users.merge(truth, on="user_id", how="inner")
    merged = merged[merged["n_labels"] > 0]
    return {
        "users_scored": int(len(merged)),
        "troll_auc": roc_auc(1 - merged["trust"].to_numpy(), merged["is_troll"].to_numpy()),
        "mean_trust_by_type": {str(k): float(v) for k, v in merged.groupby("user_type")["trust"].mean().items()},
        "share_distrusted_by_type": {str(k): float(v) for k, v in
                                     merged.assign(d=merged["trust"] < 0.5).groupby("user_type")["d"].mean().items()},
        "helper_trust_below_0.5": float(np.mean(merged.loc[~merged["is_troll"], "trust"] < 0.5)),
    }


def run_scale(args) -> None:
    bench_started = time.perf_counter()
    # recorded before the runs: the package state they import
    machine = {**git_state(), **machine_info("numpy", "scipy", "sklearn", "pyarrow")}
    corpus = scale_corpus(args.workdir, args.scale_users, args.scale_replies, args.scale_files)
    folder = args.workdir / "scale"
    dataset = folder / "ds"
    if corpus["reused"] and (folder / "ingest.json").is_file() and (dataset / "summary.json").is_file():
        ingest_run = json.loads((folder / "ingest.json").read_text())
        log(f"reusing ingested dataset {dataset}")
    else:
        log("ingesting ...")
        ingest_run = run_worker("scale_ingest", {"logs": str(folder / "sim" / "logs"), "out": str(dataset)},
                                show_stderr=True)
        (folder / "ingest.json").write_text(json.dumps(ingest_run, indent=2))
    runs = {}
    for scheme in args.scale_schemes:
        log(f"compute_trust ({scheme}) ...")
        answer = run_worker("scale_trust", {"dataset": str(dataset), "out": str(folder / f"trust_{scheme}"),
                                            "scheme": scheme, "select_on_gold": args.select_on_gold}, show_stderr=True,
                            timeout=args.scale_timeout)
        if answer.get("timed_out"):
            log(f"  {scheme}: stopped after {answer['process_seconds']:.0f} s (--scale-timeout {args.scale_timeout:g})")
            runs[scheme] = answer
            continue
        answer["quality"] = user_auc_from_trust_folder(folder / f"trust_{scheme}", folder / "sim")
        runs[scheme] = answer
        log(f"  {scheme}: {answer['seconds']:.1f} s, peak RSS {answer['peak_rss_mb']:,} MB")

    counts = corpus["simulate"]["counts"]
    summary = ingest_run["summary"]
    lines = [
        f"Corpus: {counts['users']:,} users, {counts['conversations']:,} conversations, {counts['messages']:,} utterances, "
        f"{counts['bot_replies']:,} bot replies, {counts['labels']:,} thumbs "
        f"(feedback_rate {corpus['sim_settings']['feedback_rate']}, labels per user ~ N(1.5, 1), at least 1).",
        "",
        "| step | seconds | process seconds | peak RSS (MB) | notes |",
        "|---|---:|---:|---:|---|",
        f"| simulate | {corpus['simulate']['seconds']:.1f} | {corpus['simulate']['process_seconds']:.1f} | "
        f"{corpus['simulate']['peak_rss_mb']:,} | {'(reused)' if corpus['reused'] else ''} |",
        f"| ingest | {ingest_run['seconds']:.1f} | {ingest_run['process_seconds']:.1f} | {ingest_run['peak_rss_mb']:,} | "
        f"{summary['examples']:,} examples, {summary['thumbs_up'] + summary['thumbs_down']:,} thumbs |",
    ]
    for scheme, r in runs.items():
        if r.get("timed_out"):
            lines.append(f"| trust {scheme} | > {r['timeout_seconds']:g} | {r['process_seconds']:.1f} | - | "
                         f"stopped by --scale-timeout (not finished) |")
            continue
        m, q = r["metrics"], r["quality"]
        lines.append(
            f"| trust {scheme} | {r['seconds']:.1f} | {r['process_seconds']:.1f} | {r['peak_rss_mb']:,} | "
            f"load {m['seconds']['load']:.1f} s, scheme {m['seconds']['scheme']:.1f} s; {m['examples']:,} labels from "
            f"{m['users_with_feedback']:,} users; troll AUC {q['troll_auc']:.3f}; {tuned_note(m)} |"
        )
    for scheme, r in runs.items():
        if "where_time_goes" in r:
            lines.append(f"\nWhere trust {scheme} spends its time: " + "; ".join(
                f"{k}: {v['calls']} calls, {v['seconds']:.1f} s" for k, v in r["where_time_goes"].items()))
    print("\n".join(lines))
    report = {
        "machine": machine,
        "corpus": {"path": str(folder / "sim"), **corpus},
        "ingest": ingest_run,
        "trust": runs,
        "bench_seconds": round(time.perf_counter() - bench_started, 1),
    }
    SCALE_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    SCALE_RESULTS.write_text(json.dumps(report, indent=2, default=json_default))
    log(f"wrote {SCALE_RESULTS}")


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", help=f"default: {' '.join(PRESETS)}")
    parser.add_argument("--schemes", nargs="+", help="default: every scheme in SCHEMES (uniform is always run)")
    parser.add_argument("--seeds", type=int, help="number of seeds, 0..N-1 (default 3; 1 with --quick)")
    parser.add_argument("--users", type=int,
                        help=f"users per dataset (default {DEFAULT_USERS}; realistic keeps its preset's 1000 unless given)")
    parser.add_argument("--test-cap", type=int, default=DEFAULT_TEST_CAP, help="clean held-out replies per dataset")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=SCHEME:key=value,...",
                        help="an extra row: a scheme with other settings, e.g. cb_flag05=combined:flag_ok=0.05")
    parser.add_argument("--select-on-gold", choices=("on", "off"),
                        help="override TrustSection.select_on_gold for every scheme (default: the package's default)")
    parser.add_argument("--jobs", type=int, default=MAX_CPUS, help="datasets processed at once (one process each)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['seeds']} seed, {QUICK['users']} users ({QUICK['realistic_users']} realistic)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_trust"), help="datasets and outputs")
    parser.add_argument("--out", type=Path, help=f"JSON report (default {RESULTS.relative_to(BENCH_DIR.parent)})")
    parser.add_argument("--scale", action="store_true", help="run the BB3x-scale timing instead")
    parser.add_argument("--scale-users", type=int, default=260_000)
    parser.add_argument("--scale-replies", type=int, default=2_700_000, help="bot replies to aim for")
    parser.add_argument("--scale-files", type=int, default=20)
    parser.add_argument("--scale-schemes", nargs="+", default=["combined", "per_user_example"])
    parser.add_argument("--scale-timeout", type=float, default=1800, help="stop a compute_trust child after this many s")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    return parser.parse_args(argv)



def main() -> None:
    args = parse_args()
    args.select_on_gold = None if args.select_on_gold is None else args.select_on_gold == "on"
    limit_cpus(MAX_CPUS)
    if args.worker:
        worker_main(args.worker, args.spec)
    elif args.scale:
        run_scale(args)
    else:
        run_safetymix(args)


if __name__ == "__main__":
    main()
