"""Screening results as a table and as hull plots (matplotlib, Agg backend: no display needed).

``results_dataframe`` turns a ``ScreeningReport`` (or its rows, or ``StabilityDoc``s) into a pandas DataFrame;
``plot_hull`` draws, for every pair of elements present, the binary formation-energy hull (stable phases
joined by the hull line), plus an overview of e_above_hull against formation energy for all candidates.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dpa4_flows.analysis.metrics import discovery_metrics  # noqa: F401 - its former home
from dpa4_flows.schemas import ScreeningReport, ScreeningRow, StabilityDoc

logger = logging.getLogger(__name__)

COLUMNS = [
    "candidate_id", "formula", "n_atoms", "energy_per_atom", "formation_energy_per_atom",
    "e_above_hull", "is_stable", "converged", "error", "status", "reason", "n_steps", "e_above_hull_dft",
    "md_verdict", "e_above_hull_mean", "e_above_hull_std", "stability_uncertain",
]
STATUS_ORDER = ("ranked", "flagged", "unconverged", "failed", "rejected")


def results_dataframe(results: ScreeningReport | Sequence[ScreeningRow | StabilityDoc | dict]) -> pd.DataFrame:
    """One row per candidate (columns :data:`COLUMNS`; energies eV/atom), sorted by e_above_hull."""
    if isinstance(results, ScreeningReport):
        results = results.rows
    if isinstance(results, dict) and "rows" in results:
        results = results["rows"]
    records = []
    for item in results:
        data = item.model_dump(exclude={"structure"}) if hasattr(item, "model_dump") else dict(item)
        records.append({col: data.get(col) for col in COLUMNS})
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    frame["status"] = frame["status"].fillna("ranked")
    order = frame["status"].map({s: i for i, s in enumerate(STATUS_ORDER)}).fillna(len(STATUS_ORDER))
    return (frame.assign(_order=order).sort_values(["_order", "e_above_hull", "formula"], na_position="last",
                                                   kind="stable").drop(columns="_order").reset_index(drop=True))


def format_table(frame: pd.DataFrame, max_rows: int | None = None) -> str:
    """A plain-text table: formula, E_form and e_above_hull in meV/atom, stable flag."""
    view = pd.DataFrame(
        {
            "id": frame["candidate_id"],
            "formula": frame["formula"],
            "atoms": frame["n_atoms"],
            "E_form (meV/at)": (frame["formation_energy_per_atom"] * 1000).round(1),
            "E_hull (meV/at)": (frame["e_above_hull"] * 1000).round(1),
            "stable": frame["is_stable"].map({True: "yes", False: "no"}).fillna("-"),
            "relaxed": frame["converged"].map({True: "yes", False: "no"}).fillna("-"),
            "status": frame["status"],
            "reason": frame["reason"].fillna("").str.slice(0, 70),
        }
    )
    if frame["md_verdict"].notna().any():
        view.insert(6, "MD", frame["md_verdict"].fillna("-"))
    if frame["e_above_hull_std"].notna().any():
        view.insert(5, "committee (meV/at)", [
            "-" if pd.isna(m) else f"{1000 * m:.1f}+-{1000 * s:.1f}{' ?' if u else ''}"
            for m, s, u in zip(frame["e_above_hull_mean"], frame["e_above_hull_std"], frame["stability_uncertain"])])
    if max_rows is not None and len(view) > max_rows:
        view = view.head(max_rows)
    return view.to_string(index=False)


def _lower_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Lower convex hull of 2-D points (monotone chain), sorted by x."""
    hull: list[tuple[float, float]] = []
    for p in sorted(set(points)):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def _binary_points(docs: Sequence[StabilityDoc], a: str, b: str) -> list[tuple[float, float, bool]]:
    points = [(0.0, 0.0, True), (1.0, 0.0, True)]
    for doc in docs:
        elements = {el for el, n in doc.composition.items() if n > 0}
        if elements <= {a, b} and len(elements) == 2:
            total = sum(doc.composition.values())
            points.append((doc.composition.get(b, 0.0) / total, doc.formation_energy_per_atom, doc.is_stable))
    return points


def plot_hull(docs: Sequence[StabilityDoc | dict], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG with one binary hull panel per element pair that has candidates, and an overview.

    Args:
        docs: stability documents (formation energies in eV/atom).
        path: output PNG path (made absolute; parent folders created).
        title: figure title.

    Returns:
        The absolute path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    docs = [d if isinstance(d, StabilityDoc) else StabilityDoc(**d) for d in docs]
    elements = sorted({el for d in docs for el, n in d.composition.items() if n > 0})
    pairs = [p for p in itertools.combinations(elements, 2) if len(_binary_points(docs, *p)) > 2]
    n_panels = len(pairs) + 1
    n_cols = min(4, n_panels)
    n_rows = -(-n_panels // n_cols)
    # A Figure on its own Agg canvas, not registered with pyplot: no global state, no leak when called many times.
    fig = Figure(figsize=(4 * n_cols, 3.4 * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (a, b) in zip(axes, pairs):
        points = _binary_points(docs, a, b)
        hull = _lower_hull([(x, y) for x, y, _ in points])
        ax.plot([x for x, _ in hull], [1000 * y for _, y in hull], "-", color="k", lw=1, zorder=1)
        for stable, marker, color in ((False, "x", "tab:red"), (True, "o", "tab:green")):
            sel = [(x, y) for x, y, s in points if s == stable]
            if sel:
                ax.scatter([x for x, _ in sel], [1000 * y for _, y in sel], marker=marker, color=color,
                           label="on hull" if stable else "above hull", zorder=2)
        ax.set_xlabel(f"x in {a}(1-x){b}(x)")
        ax.set_ylabel("E_form (meV/atom)")
        ax.set_title(f"{a}-{b}")
        ax.axhline(0.0, color="0.7", lw=0.5)
    overview = axes[len(pairs)]
    n_el = [sum(1 for n in d.composition.values() if n > 0) for d in docs]
    scatter = overview.scatter(
        [1000 * d.formation_energy_per_atom for d in docs], [1000 * d.e_above_hull for d in docs],
        c=n_el, cmap="viridis", vmin=1, vmax=max(4, max(n_el, default=1)),
    )
    fig.colorbar(scatter, ax=overview, label="number of elements")
    overview.set_xlabel("E_form (meV/atom)")
    overview.set_ylabel("E above hull (meV/atom)")
    overview.set_title("all candidates")
    for ax in axes[len(pairs) + 1:]:
        ax.set_visible(False)
    if pairs:
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the results table as CSV (energies in eV/atom); returns the absolute path."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def summary(report: ScreeningReport | dict[str, Any]) -> str:
    """One line: how many candidates, stable, failed, and the model."""
    if isinstance(report, dict):
        report = ScreeningReport(**report)
    line = (
        f"{report.n_candidates} candidates, {report.n_stable} on the hull, {report.n_flagged} flagged, "
        f"{report.n_failed} failed; model {report.model_id}; references {report.reference_source}"
    )
    if report.metrics:
        m = report.metrics

        def fmt(key: str, scale: float = 1.0, unit: str = "") -> str:
            value = m.get(key)
            return "n/a" if value is None else f"{scale * value:.3g}{unit}"

        line += (f"\nagainst DFT labels ({m['n']} ranked candidates): F1 {fmt('f1')}, DAF {fmt('daf')}, "
                 f"precision {fmt('precision')}, recall {fmt('recall')}, accuracy {fmt('accuracy')}, "
                 f"MAE {fmt('mae', 1000, ' meV/atom')}, RMSE {fmt('rmse', 1000, ' meV/atom')}, R2 {fmt('r2')}")
    return line
