"""Benchmark: does trust weighting bring a reward model closer to one trained without trolls?

What it measures
----------------
For each seed it simulates the ``realistic`` preset (70% helpers, 30% trolls of every type, sparse
thumbs and some A/B choices; ``--users`` users) and ingests it under ``--workdir`` (a dataset made
with the same settings is reused), then trains three reward models with the same spec and seed:

* **oracle**: the troll-free reference. Its trust folder is built here from the simulator's ground
  truth: every thumbs and A/B choice of a troll gets weight 0, every helper's weight 1.
* **uniform**: standard training, every label weight 1 (``trust=None``).
* **combined**: weighted by ``compute_trust`` with the ``combined`` scheme, shipped defaults.

All three see the same data, the same evaluation split (held-out conversations, chosen by a seeded
hash) and the same initialisation, so per seed their differences come from the weights alone. Per
model it records the clean-label AUC and accuracy (held-out replies scored against the simulator's
true ``is_good``), the clean A/B accuracy (held-out choices, the truly better reply against the
worse), the held-out thumbs AUC (against the users' own thumbs, trolls' included) and the training
seconds. The headline is the **gap to oracle**: oracle's clean AUC minus the model's, per seed; the
trust weights do their job when combined's gap is smaller than uniform's.

Each seed runs in its own child process (``--jobs`` at a time; the default 1 lets torch use both
cores). The bench prints Markdown tables (mean ± std over seeds, then every seed) and writes
``bench/results/reward_trust.json`` (git-ignored: settings, per-seed numbers with the full reward and
trust metrics, machine, versions, git commit and any uncommitted package diff, total seconds).

Run (from the repository root)::

    .venv/bin/python bench/reward_trust.py            # 3 seeds x 1000 users, tiny spec
    .venv/bin/python bench/reward_trust.py --quick    # smoke run: 1 seed, 300 users
    # other flags: --seeds N, --users N, --spec NAME, --set key=value (repeatable, e.g. train.epochs=3),
    #              --jobs N, --workdir /tmp/rlhf_bench_reward_trust, --out PATH
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from child import json_default, limit_cpus, reply, run_child  # bench/child.py (bench/ is on sys.path when a bench runs)
from machine import machine_info  # bench/machine.py
from trust_safetymix import ensure_dataset, git_state  # same dataset layout and git record as the trust bench

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "reward_trust.json"
MAX_CPUS = 2
PRESET = "realistic"
DEFAULT_SEEDS = 3
DEFAULT_USERS = 1000
QUICK = {"seeds": 1, "users": 300}
MODELS = ("oracle", "uniform", "combined")

# (key in a model's numbers, column title, format)
COLUMNS = (
    ("clean_auc", "clean AUC", ".3f"),
    ("gap_to_oracle", "gap to oracle", "+.3f"),
    ("clean_accuracy", "clean acc", ".3f"),
    ("clean_ab_accuracy", "clean A/B acc", ".3f"),
    ("thumbs_auc", "held-out thumbs AUC", ".3f"),
    ("train_seconds", "train s", ".1f"),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- one seed (child process) ------------------------------------------------------------------


def write_oracle_trust(sim_dir: Path, ds_dir: Path, out: Path) -> dict:
    """A trust folder from the ground truth: weight 0 for every label of a troll, 1 for a helper's.

    Same files and columns ``train_reward`` reads from a ``compute_trust`` folder, plus
    ``users.parquet`` (user_id, trust) so the per-group metrics (trusted / distrusted) work too."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    truth = pq.read_table(sim_dir / "ground_truth.parquet", columns=["user_id", "is_troll"]).to_pandas()
    troll = dict(zip(truth["user_id"], truth["is_troll"].astype(bool)))

    def weights(user_ids) -> list[float]:
        missing = [u for u in user_ids if u not in troll]
        if missing:  # a label we cannot attribute would silently count as a helper's
            raise RuntimeError(f"{sim_dir}: {len(missing)} labels from users without ground truth (first {missing[0]!r})")
        return [0.0 if troll[u] else 1.0 for u in user_ids]

    out.mkdir(parents=True, exist_ok=True)
    examples = pq.read_table(ds_dir / "examples.parquet", columns=["example_id", "user_id", "thumbs"])
    examples = examples.filter(pc.is_valid(examples.column("thumbs")))  # the thumbs-bearing ones, as compute_trust
    ex_users = examples.column("user_id").to_pylist()
    pq.write_table(pa.table({"example_id": examples.column("example_id"), "user_id": examples.column("user_id"),
                             "weight": pa.array(weights(ex_users), pa.float64())}), out / "examples.parquet")
    pref_users: list[str] = []
    if (ds_dir / "preferences.parquet").is_file():
        prefs = pq.read_table(ds_dir / "preferences.parquet", columns=["preference_id", "user_id"])
        pref_users = prefs.column("user_id").to_pylist()
        pq.write_table(pa.table({"preference_id": prefs.column("preference_id"), "user_id": prefs.column("user_id"),
                                 "weight": pa.array(weights(pref_users), pa.float64())}), out / "preferences.parquet")
    pq.write_table(pa.table({"user_id": pa.array(list(troll), pa.string()),
                             "trust": pa.array([0.0 if t else 1.0 for t in troll.values()], pa.float64())}),
                   out / "users.parquet")
    return {"labels": len(ex_users), "troll_labels": sum(troll[u] for u in ex_users),
            "preferences": len(pref_users), "troll_preferences": sum(troll[u] for u in pref_users)}


def helper_mistake_weight(sim_dir: Path, trust_dir: Path) -> float | None:
    """Mean weight a trust folder gives to the helpers' own mistaken labels (``corrupted`` in the
    ground truth). The oracle keeps them all (weight 1); a scheme that drops them can beat it."""
    import pyarrow.parquet as pq

    weight = pq.read_table(trust_dir / "examples.parquet", columns=["example_id", "weight"]).to_pandas()
    truth = pq.read_table(sim_dir / "ground_truth_examples.parquet", columns=["example_id", "user_id", "corrupted"]).to_pandas()
    users = pq.read_table(sim_dir / "ground_truth.parquet", columns=["user_id", "is_troll"]).to_pandas()
    rows = weight.merge(truth, on="example_id").merge(users, on="user_id")
    mistakes = rows[~rows["is_troll"].astype(bool) & rows["corrupted"].astype(bool)]
    return float(mistakes["weight"].mean()) if len(mistakes) else None


def headline(metrics: dict) -> dict:
    """The numbers the bench reports, out of ``train_reward``'s metrics."""
    e = metrics["eval"]
    clean, thumbs = e.get("clean_pointwise", {}), e.get("pointwise", {})
    return {
        "clean_auc": clean.get("auc"),
        "clean_accuracy": clean.get("accuracy"),
        "clean_n": clean.get("n"),
        "clean_ab_accuracy": (e.get("clean_pairwise") or {}).get("accuracy"),
        "clean_ab_n": (e.get("clean_pairwise") or {}).get("n"),
        "thumbs_auc": thumbs.get("auc"),
        "thumbs_n": thumbs.get("n"),
        # the held-out thumbs of helpers only: a noisy but troll-free second opinion
        "helper_thumbs_auc": (e.get("pointwise_by_user_type", {}).get("helper") or {}).get("auc"),
        "train_seconds": metrics["seconds"]["train"],
        "weight_sum": metrics["train"]["weight_sum"],
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_seed(spec: dict) -> dict:
    from rlhf_organic.reward.spec import load_spec
    from rlhf_organic.reward.stage import train_reward
    from rlhf_organic.trust.config import TrustSection
    from rlhf_organic.trust.stage import compute_trust

    folder, seed = Path(spec["folder"]), spec["seed"]
    sim, ds = folder / "sim", folder / "ds"
    started = time.perf_counter()
    dataset = ensure_dataset(folder, PRESET, seed, spec["users"])
    prepared = time.perf_counter()

    trust_metrics = compute_trust(ds, folder / "trust_combined", TrustSection(scheme="combined"), seed=seed,
                                  ground_truth=sim, overwrite=True, progress=False, log=lambda m: None)
    trusted = time.perf_counter()
    oracle = write_oracle_trust(sim, ds, folder / "trust_oracle")

    reward_spec = load_spec(spec["spec"], sets=spec["sets"])
    trust_dirs = {"oracle": folder / "trust_oracle", "uniform": None, "combined": folder / "trust_combined"}
    models = {}
    for name in MODELS:
        load_before, cpu_before = os.getloadavg()[0], _cpu_seconds()
        metrics = train_reward(ds, folder / f"reward_{name}", reward_spec, trust=trust_dirs[name], ground_truth=sim,
                               seed=seed, overwrite=True, progress=False, log=lambda m: None)
        # Other work on the machine slows torch's threads a lot (they wait on each other): the load
        # average around each model says whether its seconds can be trusted.
        models[name] = {**headline(metrics), "process_cpu_seconds": round(_cpu_seconds() - cpu_before, 2),
                        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "metrics": metrics}
        log(f"  seed {seed} {name}: clean AUC {models[name]['clean_auc']:.3f}, {metrics['seconds']['train']:.0f} s")
    for name in MODELS:  # paired per seed: same data, split and initialisation
        models[name]["gap_to_oracle"] = models["oracle"]["clean_auc"] - models[name]["clean_auc"]
    return {
        "seed": seed,
        "dataset": {"folder": str(folder), "reused": dataset["reused"], "counts": dataset["counts"],
                    "simulate_seconds": dataset["simulate_seconds"], "ingest_seconds": dataset["ingest_seconds"]},
        "spec": reward_spec.model_dump(mode="json"),
        "oracle_trust": oracle,
        "trust": {"troll_auc": (trust_metrics.get("user") or {}).get("auc"),
                  "helper_weight_kept": trust_metrics.get("helper_weight_kept"),
                  "troll_weight_kept": trust_metrics.get("troll_weight_kept"),
                  "helper_mistake_weight_kept": helper_mistake_weight(sim, folder / "trust_combined"),
                  "seconds": round(trusted - prepared, 2), "metrics": trust_metrics},
        "models": models,
        "seconds": {"prepare": round(prepared - started, 2), "total": round(time.perf_counter() - started, 2)},
    }


def run_worker(spec: dict, threads: int | None) -> dict:
    """Run one seed in a fresh Python process (``child.run_child``); progress lines go to the terminal."""
    return run_child(Path(__file__).resolve(), ["--worker", json.dumps(spec)], threads=threads, show_stderr=True)


def worker_main(spec_json: str) -> None:
    reply(worker_seed(json.loads(spec_json)))


# ---- report ------------------------------------------------------------------------------------


def _stats(values: list) -> tuple[float, float]:
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(results: list[dict]) -> dict:
    """{model: {metric: (mean, std)}} over seeds."""
    keys = [k for k, _, _ in COLUMNS] + ["helper_thumbs_auc"]
    return {m: {k: _stats([r["models"][m].get(k) for r in results]) for k in keys} for m in MODELS}


def _cell(mean: float, std: float | None, fmt: str) -> str:
    if mean != mean:  # NaN: the metric was not there
        return "-"
    return f"{mean:{fmt}}" if std is None else f"{mean:{fmt}} ± {std:{fmt.lstrip('+')}}"


def summary_table(summary: dict, seeds: int) -> str:
    lines = ["| model | " + " | ".join(t for _, t, _ in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for model in MODELS:
        cells = []
        for key, _, fmt in COLUMNS:
            mean, std = summary[model][key]
            if key == "gap_to_oracle" and model == "oracle":
                cells.append("-")
            else:
                cells.append(_cell(mean, std if seeds > 1 else None, fmt))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(results: list[dict]) -> str:
    lines = ["| seed | model | " + " | ".join(t for _, t, _ in COLUMNS) + " |", "|---:|---|" + "---:|" * len(COLUMNS)]
    for r in results:
        for model in MODELS:
            row = r["models"][model]
            cells = ["-" if (key == "gap_to_oracle" and model == "oracle") or row.get(key) is None
                     else f"{row[key]:{fmt}}" for key, _, fmt in COLUMNS]
            lines.append(f"| {r['seed']} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(results: list[dict], summary: dict) -> dict:
    uniform, combined = summary["uniform"]["gap_to_oracle"][0], summary["combined"]["gap_to_oracle"][0]
    wins = sum(r["models"]["combined"]["gap_to_oracle"] < r["models"]["uniform"]["gap_to_oracle"] for r in results)
    return {"uniform_gap": uniform, "combined_gap": combined, "combined_closer": combined < uniform,
            "seeds_combined_closer": wins, "seeds": len(results)}


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, help=f"number of seeds, 0..N-1 (default {DEFAULT_SEEDS}; "
                                                  f"{QUICK['seeds']} with --quick)")
    parser.add_argument("--users", type=int, help=f"users per simulated dataset (default {DEFAULT_USERS}; "
                                                  f"{QUICK['users']} with --quick)")
    parser.add_argument("--spec", default="tiny", help="reward-model spec for all three models (default tiny)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field for all three models, e.g. train.epochs=3 (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, one process each (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['seeds']} seed, {QUICK['users']} users")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_reward_trust"),
                        help="datasets, trust folders and reward models")
    parser.add_argument("--out", type=Path, help=f"JSON report (default {RESULTS.relative_to(BENCH_DIR.parent)})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)



def run(args) -> None:
    from rlhf_organic.errors import RecipeError
    from rlhf_organic.reward.spec import load_spec

    bench_started = time.perf_counter()
    # recorded before the runs: the package state they import
    machine = {**git_state(), **machine_info("numpy", "torch", "transformers", "peft", "sklearn", "pyarrow")}
    seeds = list(range(args.seeds or (QUICK["seeds"] if args.quick else DEFAULT_SEEDS)))
    users = args.users or (QUICK["users"] if args.quick else DEFAULT_USERS)
    try:
        load_spec(args.spec, sets=args.sets)  # fail here on a bad --spec / --set, not in every child
    except RecipeError as exc:
        raise SystemExit(str(exc)) from None
    specs = [{"folder": str(args.workdir / "datasets" / f"{PRESET}_u{users}_s{s}"), "seed": s, "users": users,
              "spec": args.spec, "sets": args.sets} for s in seeds]
    log(f"{len(seeds)} seeds x {len(MODELS)} reward models ({args.spec}{', ' + ' '.join(args.sets) if args.sets else ''}), "
        f"{PRESET} with {users} users, {args.jobs} at a time, under {args.workdir}")
    threads = 1 if args.jobs > 1 else None
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda sp: run_worker(sp, threads), specs))

    summary = summarise(results)
    result = verdict(results, summary)
    counts = [r["dataset"]["counts"] for r in results]
    mean_labels = sum(c["labels"] for c in counts) / len(counts)
    mean_prefs = sum(c["preferences"] for c in counts) / len(counts)
    troll_share = sum(r["oracle_trust"]["troll_labels"] / r["oracle_trust"]["labels"] for r in results) / len(results)
    trust = {k: _stats([r["trust"][k] for r in results])
             for k in ("troll_auc", "helper_weight_kept", "troll_weight_kept", "helper_mistake_weight_kept")}
    bench_seconds = round(time.perf_counter() - bench_started, 1)

    print(f"Reward models on `{PRESET}` ({users} users, about {mean_labels:,.0f} thumbs and {mean_prefs:,.0f} A/B choices, "
          f"{100 * troll_share:.0f}% of the thumbs from trolls), spec `{args.spec}`"
          f"{' with ' + ', '.join(args.sets) if args.sets else ''}; mean ± std over {len(seeds)} seed(s). "
          "Gap to oracle = oracle's clean AUC - the model's, per seed.\n")
    print(summary_table(summary, len(seeds)))
    print("\nEvery seed\n")
    print(per_seed_table(results))
    print(f"\nCombined trust: user-level troll AUC {trust['troll_auc'][0]:.3f}, helper label weight kept "
          f"{trust['helper_weight_kept'][0]:.2f}, troll label weight kept {trust['troll_weight_kept'][0]:.2f}, weight kept on "
          f"helpers' own mistaken labels {trust['helper_mistake_weight_kept'][0]:.2f} (means; per seed "
          + "/".join(f"{r['trust']['helper_mistake_weight_kept']:.2f}" for r in results) + "; the oracle keeps them all)")
    print(f"\nGap to oracle (clean AUC): uniform {result['uniform_gap']:+.3f}, combined {result['combined_gap']:+.3f}: "
          f"combined is {'closer' if result['combined_closer'] else 'NOT closer'} to the troll-free model "
          f"(closer in {result['seeds_combined_closer']} of {result['seeds']} seeds)")
    print(f"\nbench took {bench_seconds:.0f} s")

    report = {
        "machine": machine,
        "settings": {"preset": PRESET, "users": users, "seeds": seeds, "spec": args.spec, "sets": args.sets,
                     "jobs": args.jobs, "quick": args.quick, "workdir": str(args.workdir),
                     "trust": "TrustSection(scheme='combined') defaults",
                     "oracle": "weight 0 for every thumbs / A/B choice of a ground-truth troll, 1 otherwise"},
        "summary": {m: {k: list(v) for k, v in cells.items()} for m, cells in summary.items()},
        "trust_summary": {k: list(v) for k, v in trust.items()},
        "verdict": result,
        "runs": results,
        "bench_seconds": bench_seconds,
    }
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=json_default))
    log(f"wrote {out}")


def main() -> None:
    args = parse_args()
    limit_cpus(MAX_CPUS)
    if args.worker:
        worker_main(args.worker)
    else:
        run(args)


if __name__ == "__main__":
    main()
