"""``rlhf-organic ablate``: run a recipe over a grid of settings and seeds, and compare the cells.

The grid comes from the recipe's ``ablate`` section and/or ``--grid key=v1,v2`` options (any recipe
key). Every cell x seed is an ordinary run folder under ``ABLATION/cells/<cell>/seed<k>/``; a stage
whose fingerprint matches one completed in another cell (the simulation and the dataset for every
trust scheme, say) is linked, not recomputed. The ablation report (``report.md`` / ``report.html``,
plots, ``results.json`` and ``results.csv``) gives every metric by cell as mean ± spread over seeds.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import RecipeError, UserError
from .recipe import Recipe, load_recipe
from .safepath import confined


@dataclass(frozen=True)
class Cell:
    label: str                      # "trust.scheme=combined"
    overrides: tuple[str, ...]      # ("trust.scheme=combined",)
    seed: int
    folder: Path


def parse_grid(items: list[str]) -> dict[str, list]:
    """``key=v1,v2`` strings -> {key: [v1, v2]} (values typed as YAML: 0.5, true, [a, b] stay typed)."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise RecipeError(f"--grid {item!r} is not key=v1,v2,... (e.g. trust.scheme=uniform,combined)")
        values = [yaml.safe_load(v) for v in _split_values(raw)]
        if len(values) != len(set(map(str, values))):
            raise RecipeError(f"--grid {item!r}: a value is repeated")
        grid[key.strip()] = values
    return grid


def _split_values(raw: str) -> list[str]:
    """Split on commas outside brackets, so ``a=[x,y],[z]`` gives two list values."""
    parts, depth, current = [], 0, ""
    for ch in raw:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return parts + [current.strip()]


def _slug(text: str) -> str:
    """A folder name for a cell, from its grid values: no separators, never ``.`` or ``..``."""
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:120]
    return slug if slug.strip(".") else "cell"


def plan_cells(recipe_path: str | Path, overrides: list[str], grid: dict[str, list], seeds: int, out: Path) -> list[Cell]:
    """Every cell x seed, each validated as a complete recipe before anything runs."""
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys))) if keys else [()]
    base = load_recipe(recipe_path, overrides)
    cells = []
    names: dict[str, str] = {}  # folder name -> label: two cells never share a folder
    for combo in combos:
        sets = tuple(f"{k}={_yaml_value(v)}" for k, v in zip(keys, combo))
        label = ", ".join(sets) or "recipe as written"
        name = _slug("__".join(sets) or "recipe")
        if names.setdefault(name, label) != label:  # values that differ only in characters the slug replaces
            name = f"{name[:110]}_{hashlib.sha256(label.encode()).hexdigest()[:8]}"
            names[name] = label
        for k in range(seeds):
            folder = confined(out / "cells", name, f"seed{base.seed + k}", what="cell folder")
            cells.append(Cell(label, sets, base.seed + k, folder))
    for cell in cells:  # fail on a bad grid value now, not after hours of runs
        cell_recipe(recipe_path, overrides, cell)
    return cells


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def cell_recipe(recipe_path, overrides: list[str], cell: Cell) -> Recipe:
    return load_recipe(recipe_path, [*overrides, *cell.overrides, f"seed={cell.seed}", f"output.dir={cell.folder}",
                                     "output.overwrite=false", "output.report_to=none"])


def run_ablation(
    recipe_path: str | Path,
    overrides: list[str] = (),
    *,
    grid_items: list[str] = (),
    seeds: int | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    reuse_from: tuple[Path, ...] = (),
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run every cell of the grid (the recipe's ``ablate`` section, then ``grid_items``) and write the report.

    ``reuse_from``: run folders outside the ablation whose completed stages may be reused too.
    """
    from .pipeline import run_folder, run_inputs, run_recipe
    from .reporting.ablation import write_ablation_report

    recipe = load_recipe(recipe_path, list(overrides))
    section = recipe.ablate
    grid = {**(section.grid if section else {}), **parse_grid(list(grid_items))}
    if not grid:
        raise UserError("nothing to ablate: give --grid key=v1,v2 (e.g. trust.scheme=uniform,combined) or an "
                        "ablate.grid section in the recipe")
    seeds = seeds or (section.seeds if section else 1)
    out = Path(out) if out else recipe.output_dir()
    cells = plan_cells(recipe_path, list(overrides), grid, seeds, out)
    n_labels = len({c.label for c in cells})
    inputs = run_inputs(recipe, recipe_path, out)
    with run_folder(out, resume=resume, overwrite=recipe.output.overwrite, inputs=inputs, kind="ablation", log=log,
                    what="ablation folder", retry="--out"):
        log(f"[ablate] {n_labels} cells x {seeds} seeds = {len(cells)} runs into {out}")
        results = []
        done: list[Path] = list(reuse_from)
        for number, cell in enumerate(cells, 1):
            log(f"[ablate] run {number}/{len(cells)}: {cell.label}, seed {cell.seed}")
            markers = run_recipe(cell_recipe(recipe_path, list(overrides), cell), resume=True, reuse_from=tuple(done),
                                 progress=progress, log=lambda m: log("    " + m), echo=lambda m: None,
                                 recipe_path=recipe_path)
            done.append(cell.folder)
            results.append({"cell": cell.label, "overrides": list(cell.overrides), "seed": cell.seed,
                            "folder": str(cell.folder.relative_to(out)), "markers": markers})
        md, html, text = write_ablation_report(out, recipe, grid, seeds, results)
    echo(text)
    log(f"[done] ablation report: {md} (and {html.name})")
    return {"cells": results}
