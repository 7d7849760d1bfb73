"""Matbench Discovery's classification and regression metrics of predicted against DFT energies above the hull.

"Stable" means ``e_above_hull <= threshold`` (0 eV/atom, as in Matbench Discovery). Classification: precision,
recall, F1, accuracy, prevalence and the discovery acceleration factor (DAF = precision / prevalence);
regression on the energies: MAE, RMSE and R2 (eV/atom). Undefined ratios are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def discovery_metrics(e_hull_pred: Sequence[float], e_hull_true: Sequence[float], threshold: float = 0.0) -> dict:
    """Metrics of ``e_hull_pred`` against ``e_hull_true`` (eV/atom, 1-D, equal length), with the counts
    ``tp, fp, tn, fn`` and ``n``."""
    pred_e = np.asarray(e_hull_pred, dtype=float)
    true_e = np.asarray(e_hull_true, dtype=float)
    if pred_e.shape != true_e.shape or pred_e.ndim != 1:
        raise ValueError(f"e_hull_pred {pred_e.shape} and e_hull_true {true_e.shape} must be 1-D of equal length")
    pred, true = pred_e <= threshold, true_e <= threshold
    tp, fp = int(np.sum(pred & true)), int(np.sum(pred & ~true))
    tn, fn = int(np.sum(~pred & ~true)), int(np.sum(~pred & true))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    prevalence = _ratio(tp + fn, len(true))
    error = pred_e - true_e
    ss_tot = float(np.sum((true_e - true_e.mean()) ** 2)) if len(true_e) else 0.0
    return {
        "n": int(len(true)), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall) if tp else 0.0,
        "accuracy": _ratio(tp + tn, len(true)),
        "prevalence": prevalence,
        "daf": _ratio(precision, prevalence),
        "mae": float(np.mean(np.abs(error))) if len(error) else float("nan"),
        "rmse": float(np.sqrt(np.mean(error ** 2))) if len(error) else float("nan"),
        "r2": 1.0 - _ratio(float(np.sum(error ** 2)), ss_tot),
    }


def labelled_metrics(rows: Sequence, threshold: float = 0.0) -> dict | None:
    """Discovery metrics over the ranked screening rows that carry a DFT label ``e_above_hull_dft`` (None if
    none does). Unranked rows (flagged, unconverged, failed, rejected) have no trustworthy prediction: they are
    counted in ``n_labelled_unranked``, not scored. Undefined values are None (stores keep strict JSON)."""
    labelled = [r for r in rows if r.e_above_hull_dft is not None]
    pairs = [(r.e_above_hull, r.e_above_hull_dft) for r in labelled if r.status == "ranked"]
    if not labelled:
        return None
    metrics = discovery_metrics([p for p, _ in pairs], [t for _, t in pairs], threshold) if pairs else {"n": 0}
    metrics = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in metrics.items()}
    return {**metrics, "n_labelled_unranked": len(labelled) - len(pairs)}
