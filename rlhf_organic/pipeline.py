"""``rlhf-organic run``: the stages of a recipe, in order, into one run folder.

Run folder: ``recipe.yaml`` (resolved), ``simulation/`` (when the data is simulated), ``dataset/``
(the ingested tables) and ``report.txt``. Later stages add their own subfolders.
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
    """Run every stage the recipe declares; returns the inspect report of the dataset."""
    from .data.ingest import ingest
    from .data.inspect import format_report, inspect_dataset
    from .data.simulate import simulate

    out = recipe.output_dir()
    if out.exists() and any(out.iterdir()):
        if not recipe.output.overwrite:
            raise UserError(f"run folder {out} exists; pass output.overwrite=true or choose another output.dir")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")

    data = recipe.data
    if data.source == "simulate":
        log(f"[data] simulating preset {data.simulate.preset!r}")
        result = simulate(data.simulate.config(recipe.seed), out / "simulation", progress=progress)
        inputs = [str(result.out / "logs")]
    else:
        inputs = list(data.inputs)
    log("[data] ingesting")
    ingest(
        inputs, out / "dataset", fmt=data.format, strict=data.strict, chunk_bytes=data.chunk_mb << 20,
        max_context=data.max_context, progress=progress, log=log,
    )
    report = inspect_dataset(out / "dataset")
    text = format_report(report)
    (out / "report.txt").write_text(text + "\n", encoding="utf-8")
    echo(text)
    log(f"[done] run folder: {out}")
    return report
