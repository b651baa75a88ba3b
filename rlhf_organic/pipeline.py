"""``rlhf-organic run``: the stages of a recipe, in order, into one run folder.

Run folder: ``recipe.yaml`` (resolved), ``simulation/`` (when the data is simulated), ``dataset/``
(the ingested tables), ``trust/`` (users' trust and examples' weights), ``reward/`` (the reward
model, when the recipe has a ``reward`` section) and ``report.txt``. Later stages add their own
subfolders.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from .errors import UserError
from .recipe import Recipe, dump_recipe


def run_recipe(
    recipe: Recipe,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run every stage the recipe declares; returns the dataset report and each stage's metrics."""
    from .data.ingest import ingest
    from .data.inspect import format_report, inspect_dataset
    from .data.simulate import simulate
    from .trust.stage import compute_trust, format_metrics

    out = recipe.output_dir()
    if out.exists() and any(out.iterdir()):
        if not recipe.output.overwrite:
            raise UserError(f"run folder {out} exists; pass output.overwrite=true or choose another output.dir")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")

    data = recipe.data
    ground_truth = recipe.trust.ground_truth
    if data.source == "simulate":
        log(f"[data] simulating preset {data.simulate.preset!r}")
        result = simulate(data.simulate.config(recipe.seed), out / "simulation", progress=progress)
        inputs = [str(result.out / "logs")]
        ground_truth = ground_truth or str(result.out / "ground_truth.parquet")
    else:
        inputs = list(data.inputs)
    log("[data] ingesting")
    ingest(
        inputs, out / "dataset", fmt=data.format, strict=data.strict, chunk_bytes=data.chunk_mb << 20,
        max_context=data.max_context, progress=progress, log=log,
    )
    report = inspect_dataset(out / "dataset")
    log(f"[trust] scheme {recipe.trust.scheme!r}")
    metrics = compute_trust(
        out / "dataset", out / "trust", recipe.trust, seed=recipe.seed, ground_truth=ground_truth,
        progress=progress, log=log,
    )
    text = format_report(report) + "\n\nTrust\n" + format_metrics(metrics)
    results = {"dataset": report, "trust": metrics}
    if recipe.reward is not None:
        from .reward.stage import format_metrics as format_reward, train_reward

        spec = recipe.reward.resolve()
        log(f"[reward] spec {recipe.reward.spec!r}")
        results["reward"] = train_reward(
            out / "dataset", out / "reward", spec, trust=out / "trust" if recipe.reward.weighted else None,
            ground_truth=ground_truth, seed=recipe.seed, progress=progress, log=log,
        )
        text += "\n\nReward model\n" + format_reward(results["reward"])
    if recipe.policy is not None:
        from .policy.judge import train_judge
        from .policy.stage import format_metrics as format_policy, train_policy

        judge = None
        if data.source == "simulate":
            train_judge(out / "dataset", out / "simulation", out / "judge", eval_fraction=recipe.policy.eval_fraction,
                        seed=recipe.seed, progress=progress, log=log)
            judge = out / "judge"
        log(f"[policy] method {recipe.policy.method!r}")
        results["policy"] = train_policy(
            out / "dataset", out / "policy", recipe.policy, trust=out / "trust",
            reward=out / "reward" if recipe.reward is not None else None, judge=judge, seed=recipe.seed,
            progress=progress, log=log,
        )
        text += "\n\nPolicy\n" + format_policy(results["policy"])
    (out / "report.txt").write_text(text + "\n", encoding="utf-8")
    echo(text)
    log(f"[done] run folder: {out}")
    return results
