"""``trust.png``: the distribution of trust over users with feedback, by user type when known."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_trust(path: Path, trust: np.ndarray, groups: np.ndarray | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 21)
    if groups is None:
        ax.hist(trust, bins=bins, color="tab:blue")
    else:
        names = sorted(set(groups), key=lambda g: (g != "helper", g))
        ax.hist([trust[groups == g] for g in names], bins=bins, stacked=True, label=[f"{g} ({np.sum(groups == g)})" for g in names])
        ax.legend(fontsize=8, title="user type")
    ax.set_xlabel("trust")
    ax.set_ylabel("users")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
