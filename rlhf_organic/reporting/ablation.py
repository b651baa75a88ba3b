"""The ablation report: every metric by cell (mean ± standard deviation over seeds), the best cell of each
column in bold, plots of the key metrics, and the raw numbers per run (``results.json``, ``results.csv``)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from ..atomic import write_text
from .doc import Doc
from .plots import plot_metric_by_cell

# (section, label, where in the stage metrics, higher is better); a callable computes the value
METRICS = [
    ("Troll detection (trust vs ground truth)", "troll AUC (users)", ("trust", "user", "auc"), True),
    ("Troll detection (trust vs ground truth)", "corrupted-label AUC", ("trust", "example", "auc"), True),
    ("Troll detection (trust vs ground truth)", "helper weight kept", ("trust", "helper_weight_kept"), True),
    ("Troll detection (trust vs ground truth)", "troll weight kept", ("trust", "troll_weight_kept"), False),
    ("Trust", "mean trust", ("trust", "mean_trust"), None),
    ("Trust", "label weight kept", ("trust", "weight_kept"), None),
    ("Reward model", "clean-label AUC", ("reward", "eval", "clean_pointwise", "auc"), True),
    ("Reward model", "clean A/B accuracy", ("reward", "eval", "clean_pairwise", "accuracy"), True),
    ("Reward model", "held-out thumbs AUC", ("reward", "eval", "pointwise", "auc"), True),
    ("Policy", "clean judge p(good)", ("policy", "eval", "judge", "tuned_good"), True),
    ("Policy", "gain over base",
     lambda m: _get(m, ("policy", "eval", "judge", "tuned_good")) - _get(m, ("policy", "eval", "judge", "base_good")), True),
    ("Policy", "unsafe rate", ("policy", "eval", "judge", "tuned_unsafe_rate"), False),
    ("Policy", "win rate over base", ("policy", "eval", "judge", "win_rate"), True),
    ("Policy", "KL to base", ("policy", "eval", "kl_to_reference"), None),
    # each cell scores with its own reward model: not comparable across cells that train different ones
    ("Policy", "own reward model's score", ("policy", "eval", "reward", "tuned"), None),
    ("Cost", "compute (s)", lambda m: sum(v.get("seconds", 0.0) for v in m.values()), None),
]
PLOTTED = {"troll AUC (users)": "troll_auc", "clean-label AUC": "reward_clean_auc", "clean judge p(good)": "policy_p_good"}


def _get(markers: dict, path: tuple) -> float:
    node = markers.get(path[0], {}).get("metrics", {})
    for key in path[1:]:
        if not isinstance(node, dict) or node.get(key) is None:
            return math.nan
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else math.nan


def metric_value(markers: dict, where) -> float:
    try:
        value = where(markers) if callable(where) else _get(markers, where)
    except (TypeError, KeyError):
        return math.nan
    return float(value)


def summarise(results: list[dict]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """(cell labels in order, {metric label: {cell label: values over seeds}})."""
    cells = list(dict.fromkeys(r["cell"] for r in results))
    values = {label: {c: [] for c in cells} for _, label, _, _ in METRICS}
    for r in results:
        for _, label, where, _ in METRICS:
            value = metric_value(r["markers"], where)
            if not math.isnan(value):
                values[label][r["cell"]].append(value)
    return cells, values


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _format(values: list[float], bold: bool, label: str) -> str:
    if not values:
        return "–"
    mean, sd = _mean_sd(values)
    digits = 0 if label == "compute (s)" else 3
    text = f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if len(values) > 1 else "")
    return f"**{text}**" if bold else text


def build_ablation_report(out: Path, recipe, grid: dict, seeds: int, results: list[dict]) -> tuple[Doc, str]:
    cells, values = summarise(results)
    doc = Doc(f"rlhf_organic ablation: {recipe.name}")
    doc.text(f"Grid: {'; '.join(f'`{k}` in {v}' for k, v in grid.items())}. {len(cells)} cells x {seeds} "
             f"seed{'s' if seeds > 1 else ''} = {len(results)} runs in `{out}`. Each number is the mean over seeds "
             "± the standard deviation; the best cell of each column is in bold.")
    text_lines = []
    for section in dict.fromkeys(s for s, _, _, _ in METRICS):
        labels = [(label, better) for s, label, _, better in METRICS if s == section and any(values[label].values())]
        if not labels:
            continue
        doc.heading(section)
        rows = []
        best = {}
        for label, better in labels:
            means = {c: _mean_sd(values[label][c])[0] for c in cells}
            finite = {c: m for c, m in means.items() if not math.isnan(m)}
            if better is not None and len(finite) > 1 and len(set(finite.values())) > 1:
                best[label] = (max if better else min)(finite, key=finite.get)
        for c in cells:
            rows.append([c] + [_format(values[label][c], best.get(label) == c, label) for label, _ in labels])
        doc.table(["cell"] + [label + ("" if better is None else " ↑" if better else " ↓") for label, better in labels], rows)
        text_lines.append(section)
        text_lines += [f"  {r[0]:<40} " + "  ".join(f"{label}: {v.replace('**', '')}" for (label, _), v in zip(labels, r[1:]))
                       for r in rows]
    plots = out / "report"
    plots.mkdir(exist_ok=True)
    base_good = [metric_value(r["markers"], ("policy", "eval", "judge", "base_good")) for r in results]
    base_good = [b for b in base_good if not math.isnan(b)]
    for label, stem in PLOTTED.items():
        if not any(values[label].values()):
            continue
        stats = [_mean_sd(values[label][c]) for c in cells]
        plot_metric_by_cell(plots / f"{stem}.png", cells, [s[0] for s in stats], [s[1] for s in stats], label,
                            baseline=float(np.mean(base_good)) if stem == "policy_p_good" and base_good else None)
        doc.image(plots / f"{stem}.png", label)
    doc.heading("Runs")
    doc.table(["cell", "seed", "run folder", "stages reused"],
              [[r["cell"], r["seed"], f"`{r['folder']}/`", ", ".join(n for n, m in r["markers"].items() if m.get("reused")) or "none"]
               for r in results])
    doc.text("Each run folder has its own `report.md`. Raw numbers: `results.json`, `results.csv`.")
    return doc, "\n".join(text_lines)


def write_ablation_report(out: Path, recipe, grid: dict, seeds: int, results: list[dict]):
    doc, text = build_ablation_report(out, recipe, grid, seeds, results)
    md, html = doc.write(out, "report")
    rows = [{"cell": r["cell"], "seed": r["seed"], "folder": r["folder"],
             **{label: metric_value(r["markers"], where) for _, label, where, _ in METRICS}} for r in results]
    blank = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]
    write_text(out / "results.json", json.dumps(blank, indent=2) + "\n")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(blank)
    write_text(out / "results.csv", table.getvalue())
    return md, html, text
