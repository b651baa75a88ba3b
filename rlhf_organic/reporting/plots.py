"""Report plots (matplotlib, written as PNG files; never a window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_loss_curves(path: Path, history: list[dict], title: str) -> bool:
    """The training loss by step, raw and smoothed (a moving average over ~5% of the steps)."""
    rows = [row for row in history if "loss" in row and not row.get("skipped")]  # skipped: non-finite batches
    steps = [row["step"] for row in rows]
    losses = np.array([row["loss"] for row in rows], dtype=float)
    if len(losses) < 2:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="per step")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="tab:blue", linewidth=2, label=f"moving average ({window} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_before_after(path: Path, judge: dict) -> bool:
    """Base against tuned on the clean judge: p(good) and unsafe rate side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, (key, label) in zip(axes, (("good", "clean judge p(good)"), ("unsafe_rate", "unsafe rate"))):
        values = [judge[f"base_{key}"], judge[f"tuned_{key}"]]
        bars = ax.bar(["base", "tuned"], values, color=["tab:gray", "tab:green"])
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.set_title(label)
        ax.set_ylim(0, max(1.0 if key == "good" else 0.05, max(values) * 1.2))
    _save(fig, path)
    return True


def plot_metric_by_cell(path: Path, cells: list[str], means: list[float], spreads: list[float], title: str,
                        baseline: float | None = None) -> None:
    """One metric across ablation cells: mean with the spread over seeds as error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(cells) + 2), 3.4))
    x = np.arange(len(cells))
    ax.bar(x, means, yerr=spreads, capsize=4, color="tab:blue", alpha=0.85)
    if baseline is not None:
        ax.axhline(baseline, color="tab:gray", linestyle="--", linewidth=1, label="base model")
        ax.legend(fontsize=8)
    ax.set_xticks(x, cells, rotation=20 if len(cells) > 3 else 0, ha="right" if len(cells) > 3 else "center", fontsize=8)
    ax.set_title(title)
    finite = [m for m in means if np.isfinite(m)]
    if finite and 0 <= min(finite) and max(finite) <= 1:
        low = min(finite + ([baseline] if baseline is not None else []))
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
    _save(fig, path)
