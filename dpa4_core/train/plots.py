"""Parity plots (prediction against DFT) for energies per atom and force components.

Each figure is a ``matplotlib.figure.Figure`` on its own Agg canvas: no pyplot, no global backend choice, no display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _parity(ax, ref: np.ndarray, pred: np.ndarray, unit: str, name: str) -> None:
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, zorder=0)
    ax.scatter(ref, pred, s=4, alpha=0.5)
    mae = float(np.abs(pred - ref).mean())
    ax.set_xlabel(f"DFT {name} ({unit})")
    ax.set_ylabel(f"DPA4 {name} ({unit})")
    ax.set_title(f"{name}: MAE {1000 * mae:.3g} m{unit}")
    ax.set_aspect("equal", adjustable="datalim")


def parity_plots(records: dict, folder: str | Path, title: str = "") -> list[Path]:
    """Write ``parity_energy.png`` (eV/atom) and ``parity_forces.png`` (eV/A) into ``folder``.

    Args:
        records: lists of tensors ``e_ref``, ``e_pred`` (per atom) and ``f_ref``, ``f_pred`` (components), as kept
            by :class:`dpa4_core.train.loss.MetricAccumulator` with ``keep=True``.

    Returns:
        The paths written (empty when there is nothing to plot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not records.get("e_ref"):
        return []
    folder = Path(folder)
    paths = []
    for key, unit, name in (("e", "eV/atom", "energy"), ("f", "eV/A", "forces")):
        ref = np.concatenate([np.asarray(t) for t in records[f"{key}_ref"]])
        pred = np.concatenate([np.asarray(t) for t in records[f"{key}_pred"]])
        fig = Figure(figsize=(4.5, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        _parity(ax, ref, pred, unit, name)
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = folder / f"parity_{name}.png"
        fig.savefig(path, dpi=120)
        paths.append(path.resolve())
    return paths
