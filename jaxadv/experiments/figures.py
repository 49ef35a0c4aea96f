"""The paper's Figures 1-3 as PNG files (matplotlib, headless).

matplotlib is imported inside the functions with the non-interactive Agg backend, so importing this
module costs nothing and no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import config as C


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def label_distribution(
    rows: Sequence[Mapping[str, Any]],
    attacks: Sequence[str],
    path: str | Path,
    labels: Sequence[str] = C.LABELS,
) -> Path:
    """Figure 1: how often each class is the adversarial label, one panel per attack.

    Counts successful untargeted examples over all models, by the index of the new label in
    ``labels`` (default ``config.LABELS``: the paper's x axis).
    """
    index = {lab: i for i, lab in enumerate(labels)}
    plt = _plt()
    fig, axes = plt.subplots(len(attacks), 1, figsize=(11, 2.6 * len(attacks)), squeeze=False)
    for ax, attack in zip(axes[:, 0], attacks, strict=True):
        counts = np.zeros(len(labels), int)
        for r in rows:
            if r["attack"] == attack and r["success"] and r["adversarial"] in index:
                counts[index[r["adversarial"]]] += 1
        ax.bar(np.arange(len(labels)), counts, color="tab:blue")
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels([f"{i}" for i in range(len(labels))], fontsize=7)
        ax.set_ylabel("count")
        top = int(counts.argmax()) if counts.any() else None
        peak = f"; peak {top}: {labels[top]}" if top is not None else ""
        ax.set_title(f"{attack}: adversarial labels ({counts.sum()} examples{peak})", fontsize=10)
    axes[-1, 0].set_xlabel(
        "adversarial label (index in the "
        + ("FSDKaggle2018 label list)" if tuple(labels) == C.LABELS else "models' label list)")
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def success_matrix(
    matrix: np.ndarray, labels: Sequence[str], title: str, path: str | Path, vmax: float = 100.0
) -> Path:
    """Figure 2: targeted success % as a source × target heat map (NaN cells are blank)."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2.5, 1.0 * n + 1.5))
    im = ax.imshow(matrix, vmin=0, vmax=vmax, cmap="viridis")
    short = [f"{C.LABEL_INDEX.get(lab, '?')}: {lab}" for lab in labels]
    ax.set_xticks(range(n))
    ax.set_xticklabels(short, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(n))
    ax.set_yticklabels(short, fontsize=8)
    ax.set_xlabel("target")
    ax.set_ylabel("source (true label)")
    for i in range(n):
        for j in range(n):
            v = matrix[i, j]
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if v < 0.6 * vmax else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, label="success %")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def spectrograms(
    panels: Sequence[tuple[str, np.ndarray]], path: str | Path, sample_rate: int = C.SAMPLE_RATE
) -> Path:
    """Figure 3: log-mel spectrograms of a clip and its adversarial versions, one panel each.

    Each panel is in dB relative to its own maximum (the Iqbal front-end's
    ``power_to_db(ref=max)``, as the models see it), all on one 0 to -100 dB colour scale (the
    colour bar); a perturbation shows where it adds energy to quiet bins.

    Args:
      panels: ``(title, waveform [N])`` pairs; put the SNR in the title, e.g. ``"C&W (52.1 dB)"``.
      path: PNG file to write.
    """
    import jax.numpy as jnp

    from jaxadv.frontend import IqbalFrontend

    plt = _plt()
    fe = IqbalFrontend()
    n = max(len(w) for _, w in panels)
    batch = np.stack([np.pad(np.asarray(w, np.float32), (0, n - len(w))) for _, w in panels])
    lens = jnp.asarray([len(w) for _, w in panels])
    feats = np.asarray(fe.logmel(batch, lens).values)
    # one colour scale for all panels; each panel relative to its own maximum (ref=max)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 0.8, 3.4), squeeze=False, layout="constrained"
    )
    for ax, (title, w), f in zip(axes[0], panels, feats, strict=True):
        t = 1 + len(w) // fe.hop
        im = ax.imshow(f[:t].T, origin="lower", aspect="auto", vmin=-100, vmax=0, cmap="magma",
                       extent=(0, len(w) / sample_rate, 0, fe.n_mels))  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("time (s)")
    axes[0, 0].set_ylabel("mel band")
    fig.colorbar(im, ax=list(axes[0]), label="dB re. the panel's maximum", pad=0.01)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
