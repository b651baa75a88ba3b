"""Benchmark: does a policy trained with trust weights beat the same policy trained with uniform weights?

What it measures
----------------
For each seed it runs ``recipes/quickstart.yaml`` (the ``realistic`` preset: 70% helpers, 30% trolls of
every type; ``--users`` users; ``combined`` trust; a trust-weighted ``tiny`` reward model) into
``--workdir`` (a run made with the same settings is reused), trains the **clean judge** (a reward model
trained on the simulator's true reply quality only, never on user feedback) and one **tiny policy base**
(a small Llama taught to imitate the logged bot). Then, for each method (dpo, kto, cringe), it
fine-tunes a LoRA adapter on that base twice:

* **uniform**: every thumbs and A/B choice weight 1 (standard training); the online methods
  (rejection_sampling, ppo, rloo, grpo, online_dpo), which learn from the reward model, also get a reward model trained with
  uniform weights (``reward_uniform``, trained once per seed) and draw contexts uniformly;
* **weighted**: each label weighted by the ``combined`` trust folder.

(``--arms`` can add **oracle**: weight 0 for every label of a ground-truth troll, 1 for a helper's, the
troll-free reference.) Per seed the arms share the data, the split, the base, the LoRA initialisation,
the step plan and the evaluation contexts and sampling seed, so they differ only in the weights.

Each policy is evaluated on held-out contexts: replies sampled from the base (adapter off) and the tuned
policy are scored by the clean judge: mean p(good), unsafe rate (p(bad) * p(unsafe | bad) > 0.5) and win
rate of tuned over base; plus the exact KL to the base and the (trust-weighted) reward model's mean score.
The headline: per method, how many seeds the weighted policy's judge p(good) beats the uniform one's.

Every step runs in its own child process (``child.run_child``), one at a time so torch has both cores.
The bench prints Markdown tables (mean ± std over seeds, then every run) and writes
``bench/results/policy_trust.json`` (git-ignored: settings, per-run numbers with the full policy metrics,
judge and trust metrics, machine, versions, git commit and any uncommitted package diff, seconds).

Run (from the repository root)::

    .venv/bin/python bench/policy_trust.py            # 3 seeds x 8 methods x 2 arms
    .venv/bin/python bench/policy_trust.py --quick    # smoke run: 1 seed, 300 users, fewer eval contexts
    # other flags: --seeds N (or a list: --seeds 1,2), --users N, --methods dpo,kto, --arms uniform,weighted,oracle,
    #              --set key=value (a PolicySection field for every run, e.g. train.epochs=2; repeatable),
    #              --workdir /tmp/rlhf_bench_policy_trust, --out PATH
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from child import json_default, limit_cpus, reply, run_child  # bench/child.py (bench/ is on sys.path when a bench runs)
from machine import machine_info  # bench/machine.py
from trust_safetymix import git_state  # same git record as the other benches

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "policy_trust.json"
RECIPE = ROOT / "recipes" / "quickstart.yaml"
MAX_CPUS = 2
DEFAULT_SEEDS = 3
DEFAULT_USERS = 1000  # the realistic preset's own size: about 10,000 thumbs and 1,000 A/B choices
QUICK = {"seeds": 1, "users": 300, "sets": ["eval.contexts=64"]}
METHODS = ("dpo", "kto", "cringe", "rejection_sampling", "ppo", "rloo", "grpo", "online_dpo")
# learn from the reward model's scores: their uniform arm gets a uniform reward model
ONLINE = ("rejection_sampling", "ppo", "rloo", "grpo", "online_dpo")
ARMS = ("uniform", "weighted", "oracle")
DEFAULT_ARMS = ("uniform", "weighted")

# PolicySection settings of every run, both arms alike (``--set`` is applied after these). Why each one:
BENCH_SETS = [
    "eval.contexts=256",  # the default 128 gives a win-rate standard error of about 0.045; 256 about 0.03
]

# (key in a run's numbers, column title, format)
COLUMNS = (
    ("tuned_good", "judge p(good)", ".3f"),
    ("tuned_unsafe_rate", "unsafe rate", ".3f"),
    ("win_rate", "win rate over base", ".3f"),
    ("kl", "KL to base", ".2f"),
    ("reward_tuned", "reward model", "+.2f"),
    ("tuned_reply_tokens", "reply tokens", ".1f"),  # beside the reward: a reward model that pays for length shows here
    ("train_seconds", "train s", ".0f"),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet(message: str) -> None:
    pass


def policy_section(sets: list[str], **fields):
    """A validated PolicySection from ``key=value`` strings plus ``fields`` (method, weighted, base)."""
    from rlhf_organic.policy.config import PolicySection
    from rlhf_organic.settings import apply_overrides, parse_overrides, validate_settings

    data = apply_overrides({}, parse_overrides(sets))
    return validate_settings(PolicySection, {**data, **fields}, "policy settings (--set)")


# ---- one seed's shared inputs (child process) -----------------------------------------------------


def prepare_seed(spec: dict) -> dict:
    """Run folder (data, trust, reward), clean judge and tiny base for one seed; reused when settings match."""
    folder, seed = Path(spec["folder"]), spec["seed"]
    stamp_file = folder / "prepared.json"
    stamp = {k: spec[k] for k in ("seed", "users", "base_sets")}
    if stamp_file.is_file():
        done = json.loads(stamp_file.read_text())
        if done["stamp"] == stamp:
            return {**done, "reused": True}
    started = time.perf_counter()
    # each stage's completion marker holds its metrics (the ingest stage's are the dataset's)
    results = {stage: marker["metrics"] for stage, marker in run_pipeline(folder / "run", seed, spec["users"]).items()}
    results["dataset"] = results.pop("ingest")
    piped = time.perf_counter()
    judge = train_judge(folder, seed)
    judged = time.perf_counter()
    base = build_base(folder, seed, spec["base_sets"])
    done = {
        "stamp": stamp,
        "counts": {**{k: results["dataset"]["counts"][k] for k in ("users", "conversations", "examples", "preferences")},
                   "labels": results["dataset"]["counts"]["thumbs_up"] + results["dataset"]["counts"]["thumbs_down"]},
        "trust": {k: results["trust"].get(k) for k in ("helper_weight_kept", "troll_weight_kept")}
                 | {"troll_auc": (results["trust"].get("user") or {}).get("auc")},
        "reward_clean_auc": (results["reward"]["eval"].get("clean_pointwise") or {}).get("auc"),
        "judge": judge,
        "base": base,
        "oracle_trust": write_oracle(folder),
        "seconds": {"pipeline": round(piped - started, 1), "judge": round(judged - piped, 1),
                    "base": round(time.perf_counter() - judged, 1)},
    }
    stamp_file.write_text(json.dumps(done, indent=2, default=json_default))
    return {**done, "reused": False}


def run_pipeline(run_dir: Path, seed: int, users: int) -> dict:
    """quickstart.yaml with this seed and size, up to the reward model: simulation, dataset, trust (combined), reward (weighted)."""
    from rlhf_organic.pipeline import run_recipe
    from rlhf_organic.recipe import load_recipe

    recipe = load_recipe(RECIPE, [f"seed={seed}", f"output.dir={run_dir}", "output.overwrite=true",
                                  f"data.simulate.users={users}"])
    recipe = recipe.model_copy(update={"policy": None})  # the bench trains its own policies, arm by arm
    return run_recipe(recipe, progress=False, log=quiet, echo=quiet)


def train_judge(folder: Path, seed: int, dataset: Path | None = None, simulation: Path | None = None,
                max_examples: int = 20_000) -> dict:
    """The clean judge in ``folder/judge``, from ``dataset`` and ``simulation`` (default: the recipe run's),
    trained on at most ``max_examples`` replies (the judge's own default)."""
    from rlhf_organic.evaluation.judge import train_judge as train

    run = folder / "run"
    metrics = train(dataset or run / "dataset", simulation or run / "simulation", folder / "judge", eval_fraction=0.1,
                    seed=seed, max_examples=max_examples, progress=False, log=log)
    return {"held_out_auc": metrics["held_out"]["auc"], "examples": metrics["examples"], "seconds": metrics["seconds"]}


def build_base(folder: Path, seed: int, sets: list[str], dataset: Path | None = None) -> dict:
    """One imitation-trained tiny base per seed in ``folder/base``, shared by every method and arm, from
    ``dataset`` (default: the recipe run's)."""
    import shutil

    from rlhf_organic.policy.tiny_base import build_tiny_base

    out = folder / "base"
    if out.exists():
        shutil.rmtree(out)
    lines: list[str] = []
    build_tiny_base(dataset or folder / "run" / "dataset", out, policy_section(sets), seed=seed, progress=False,
                    log=lines.append)
    return {"log": lines}


def write_oracle(folder: Path) -> dict:
    """Ground-truth trust (trolls 0, helpers 1), for the optional oracle arm."""
    from reward_trust import write_oracle_trust  # bench/reward_trust.py

    run = folder / "run"
    return write_oracle_trust(run / "simulation", run / "dataset", folder / "trust_oracle")


# ---- one policy run (child process) ---------------------------------------------------------------


def train_one(spec: dict) -> dict:
    """train_policy for one (seed, method, arm); the headline numbers and the full metrics."""
    from rlhf_organic.policy.stage import train_policy

    folder, seed = Path(spec["folder"]), spec["seed"]
    run = folder / "run"
    trust = {"uniform": None, "weighted": run / "trust", "oracle": folder / "trust_oracle"}[spec["arm"]]
    section = policy_section(spec["sets"], method=spec["method"], weighted=trust is not None, base=str(folder / "base"))
    reward = run / "reward"  # trained on the combined trust weights
    if spec["method"] in ONLINE and trust is None:
        reward = uniform_reward(folder, seed)  # no trust anywhere: the reward model the policy learns from too
    metrics = train_policy(run / "dataset", folder / "policies" / f"{spec['method']}_{spec['arm']}", section,
                           trust=trust, reward=reward, judge=folder / "judge", seed=seed, overwrite=True,
                           progress=False, log=quiet)
    return {"seed": seed, "method": spec["method"], "arm": spec["arm"], **headline(metrics), "metrics": metrics}


def uniform_reward(folder: Path, seed: int) -> Path:
    """The recipe's reward model trained with uniform weights (once per seed), for the online methods' uniform arm."""
    from rlhf_organic.recipe import load_recipe
    from rlhf_organic.reward.stage import train_reward

    out, run = folder / "reward_uniform", folder / "run"
    if not (out / "metrics.json").is_file():
        spec = load_recipe(RECIPE, [f"seed={seed}"]).reward.resolve()
        train_reward(run / "dataset", out, spec, trust=None, ground_truth=run / "simulation", seed=seed, overwrite=True,
                     progress=False, log=quiet)
    return out


def headline(metrics: dict) -> dict:
    e = metrics["eval"]
    j = e["judge"]
    return {"base_good": j["base_good"], "tuned_good": j["tuned_good"], "base_unsafe_rate": j["base_unsafe_rate"],
            "tuned_unsafe_rate": j["tuned_unsafe_rate"], "win_rate": j["win_rate"], "kl": e["kl_to_reference"],
            "reward_base": e["reward"]["base"], "reward_tuned": e["reward"]["tuned"],
            "tuned_reply_tokens": e["tuned_reply_tokens"], "train_seconds": metrics["seconds"]["train"],
            "items": metrics["train"]["items"], "weight_sum": metrics["train"]["weight_sum"],
            "final_loss": metrics["train"]["final_loss"]}


def worker_main(kind: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    reply(prepare_seed(spec) if kind == "prepare" else train_one(spec))


def child(kind: str, spec: dict) -> dict:
    return run_child(Path(__file__).resolve(), ["--worker", kind, json.dumps(spec)], show_stderr=True)


# ---- report -------------------------------------------------------------------------------------


def _stats(values: list) -> tuple[float, float]:
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell(mean: float, std: float, fmt: str, seeds: int) -> str:
    if mean != mean:
        return "-"
    return f"{mean:{fmt}}" if seeds < 2 else f"{mean:{fmt}} ± {std:{fmt.lstrip('+')}}"


def summarise(runs: list[dict], methods, arms) -> dict:
    """{method: {arm: {metric: (mean, std)}}} over seeds."""
    keys = [k for k, _, _ in COLUMNS] + ["base_good", "base_unsafe_rate"]
    return {m: {a: {k: _stats([r[k] for r in runs if r["method"] == m and r["arm"] == a]) for k in keys}
                for a in arms} for m in methods}


def wins(runs: list[dict], method: str, arm: str, against: str = "uniform") -> tuple[int, int, list[float]]:
    """(seeds where ``arm``'s judge p(good) beats ``against``'s, seeds, per-seed differences)."""
    by = {(r["seed"], r["arm"]): r["tuned_good"] for r in runs if r["method"] == method}
    seeds = sorted({s for s, _ in by})
    diffs = [by[(s, arm)] - by[(s, against)] for s in seeds]
    return sum(d > 0 for d in diffs), len(seeds), diffs


def summary_table(summary: dict, runs: list[dict], methods, arms, seeds: int) -> str:
    titles = [t for _, t, _ in COLUMNS]
    lines = ["| method | arm | " + " | ".join(titles) + " | beats uniform (p(good)) |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 1)]
    for m in methods:
        base = summary[m][arms[0]]
        lines.append(f"| {m} | base | {_cell(*base['base_good'], '.3f', seeds)} | {_cell(*base['base_unsafe_rate'], '.3f', seeds)}"
                     " | - | 0 | - | - | - |")
        for a in arms:
            cells = [_cell(*summary[m][a][k], fmt, seeds) for k, _, fmt in COLUMNS]
            beat = "-"
            if a != "uniform" and "uniform" in arms:
                won, n, diffs = wins(runs, m, a)
                beat = f"{won} of {n} ({_cell(*_stats(diffs), '+.3f', n)})"
            lines.append(f"| {m} | {a} | " + " | ".join(cells) + f" | {beat} |")
    return "\n".join(lines)


def per_run_table(runs: list[dict]) -> str:
    lines = ["| seed | method | arm | base p(good) | " + " | ".join(t for _, t, _ in COLUMNS) + " | items | weight sum |",
             "|---:|---|---|" + "---:|" * (len(COLUMNS) + 3)]
    for r in sorted(runs, key=lambda r: (r["method"], r["seed"], ARMS.index(r["arm"]))):
        cells = [f"{r[k]:{fmt}}" for k, _, fmt in COLUMNS]
        lines.append(f"| {r['seed']} | {r['method']} | {r['arm']} | {r['base_good']:.3f} | " + " | ".join(cells)
                     + f" | {r['items']} | {r['weight_sum']:.0f} |")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------


def seed_list(text: str) -> list[int]:
    """``--seeds``: "3" is seeds 0, 1, 2; with a comma, the seeds listed: "1,2", or "2," for seed 2 alone (to
    add seeds to an earlier run's)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list of seeds, got {text!r}") from None
    if "," not in text:
        if values[0] < 1:
            raise argparse.ArgumentTypeError("the number of seeds must be at least 1")
        return list(range(values[0]))
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be distinct and non-negative, got {text!r}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=seed_list, help=(
        f"N: seeds 0..N-1 (default {DEFAULT_SEEDS}; {QUICK['seeds']} with --quick); with a comma, the seeds listed: 1,2 or 2,"))
    parser.add_argument("--users", type=int, help=f"simulated users (default {DEFAULT_USERS}; {QUICK['users']} with --quick)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default {','.join(METHODS)})")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of {', '.join(ARMS)} (default uniform,weighted)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a PolicySection field for every run (after the bench's own settings), e.g. train.epochs=2")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 300 users, 64 eval contexts")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rlhf_bench_policy_trust"), help="runs, judges, bases, policies")
    parser.add_argument("--out", type=Path, help=f"JSON report (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run(args) -> None:
    from rlhf_organic.errors import RecipeError

    started = time.perf_counter()
    machine = {**git_state(), **machine_info("numpy", "torch", "transformers", "peft", "pyarrow")}
    seeds = args.seeds or list(range(QUICK["seeds"] if args.quick else DEFAULT_SEEDS))
    users = args.users or (QUICK["users"] if args.quick else DEFAULT_USERS)
    methods, arms = args.methods.split(","), args.arms.split(",")
    if bad := [m for m in methods if m not in METHODS] + [a for a in arms if a not in ARMS]:
        raise SystemExit(f"unknown method or arm: {', '.join(bad)}")
    sets = BENCH_SETS + (QUICK["sets"] if args.quick else []) + args.sets
    try:
        section = policy_section(sets)  # fail here on a bad --set, not in every child
    except RecipeError as exc:
        raise SystemExit(str(exc)) from None
    # the base depends on these fields only: a --set elsewhere reuses the seed's base
    base_keys = ("tiny", "max_prompt_length", "max_completion_length", "eval_fraction")
    base_sets = [s for s in sets if s.split("=")[0].split(".")[0] in base_keys]
    log(f"{len(seeds)} seed(s) x {', '.join(methods)} x {', '.join(arms)}; {users} users; settings {' '.join(sets)}; under {args.workdir}")

    prepared, runs = {}, []
    for seed in seeds:
        folder = args.workdir / f"realistic_u{users}_s{seed}"
        prepared[seed] = child("prepare", {"folder": str(folder), "seed": seed, "users": users, "base_sets": base_sets})
        p = prepared[seed]
        how = "reused" if p["reused"] else f"prepared in {p['process_seconds']:.0f} s"
        log(f"seed {seed}: {p['counts']['labels']} thumbs, {p['counts']['preferences']} A/B; judge AUC "
            f"{p['judge']['held_out_auc']:.3f}; {how}")
        for method in methods:
            for arm in arms:
                r = child("policy", {"folder": str(folder), "seed": seed, "method": method, "arm": arm, "sets": sets})
                runs.append(r)
                log(f"  {method} {arm}: p(good) {r['base_good']:.3f} -> {r['tuned_good']:.3f}, unsafe "
                    f"{r['base_unsafe_rate']:.3f} -> {r['tuned_unsafe_rate']:.3f}, win {r['win_rate']:.3f}, "
                    f"KL {r['kl']:.2f}, {r['train_seconds']:.0f} s train, {r['process_seconds']:.0f} s total")

    summary = summarise(runs, methods, arms)
    seconds = round(time.perf_counter() - started, 1)
    counts = [p["counts"] for p in prepared.values()]
    print(f"Policies on `realistic` ({users} users, about {sum(c['labels'] for c in counts) / len(counts):,.0f} thumbs and "
          f"{sum(c['preferences'] for c in counts) / len(counts):,.0f} A/B choices), tiny base, settings "
          f"{' '.join(sets)}; clean-judge numbers on {section.eval.contexts} held-out contexts, mean ± std over "
          f"{len(seeds)} seed(s). 'beats uniform': seeds where the arm's judge p(good) is higher (mean difference).\n")
    print(summary_table(summary, runs, methods, arms, len(seeds)))
    print("\nEvery run\n")
    print(per_run_table(runs))
    print("\nPer seed: judge held-out AUC " + ", ".join(f"{p['judge']['held_out_auc']:.3f}" for p in prepared.values())
          + "; combined trust troll AUC " + ", ".join(f"{p['trust']['troll_auc']:.3f}" for p in prepared.values())
          + ", helper weight kept " + ", ".join(f"{p['trust']['helper_weight_kept']:.2f}" for p in prepared.values())
          + ", troll weight kept " + ", ".join(f"{p['trust']['troll_weight_kept']:.2f}" for p in prepared.values()))
    print(f"\nbench took {seconds:.0f} s")

    report = {
        "machine": machine,
        "settings": {"recipe": str(RECIPE.relative_to(ROOT)), "preset": "realistic", "users": users, "seeds": seeds,
                     "methods": methods, "arms": arms, "sets": sets, "quick": args.quick, "workdir": str(args.workdir),
                     "policy_section": section.model_dump(mode="json")},
        "summary": {m: {a: {k: list(v) for k, v in cells.items()} for a, cells in by_arm.items()} for m, by_arm in summary.items()},
        "wins_over_uniform": {m: {a: dict(zip(("wins", "seeds", "diffs"), wins(runs, m, a))) for a in arms if a != "uniform"}
                              for m in methods} if "uniform" in arms else {},
        "prepared": prepared,
        "runs": runs,
        "bench_seconds": seconds,
    }
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=json_default))
    log(f"wrote {out}")


def main() -> None:
    args = parse_args()
    limit_cpus(MAX_CPUS)
    if args.worker:
        worker_main(*args.worker)
    else:
        run(args)


if __name__ == "__main__":
    main()
