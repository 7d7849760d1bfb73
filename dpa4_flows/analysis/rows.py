"""One screening row per candidate, whatever happened to it (no jobflow).

Status, in table order: ``ranked`` (on or above the hull), ``flagged`` (left the physical regime),
``unconverged`` (out of steps), ``failed`` (the relaxation failed or diverged), ``rejected`` (not screened:
unreadable, overlapping atoms, untrained elements). Only ranked rows can be stable.
"""

from __future__ import annotations

from collections.abc import Iterable

from dpa4_flows.analysis.report import STATUS_ORDER
from dpa4_flows.schemas import RelaxedStructure, ScreeningRow, StabilityDoc


def _failure(error: str) -> str:
    if "non-finite" in error:
        return f"relaxation diverged: {error}"
    return f"relaxation failed: {error}"


def screening_rows(results: Iterable[RelaxedStructure], stability: Iterable[StabilityDoc],
                   excluded: dict[str, str], rejected: dict[str, str] | None = None,
                   labels: dict[str, dict] | None = None, formulas: dict[str, str] | None = None) -> list[ScreeningRow]:
    """Rows for every relaxation result and every rejected candidate, sorted by status then e_above_hull."""
    by_id = {d.candidate_id: d for d in stability}
    labels = labels or {}
    rows = []
    for result in results:
        stab = by_id.get(result.candidate_id)
        if result.error or stab is None:
            status, reason = "failed", _failure(result.error or "no energy")
        elif result.candidate_id in excluded:
            reason = excluded[result.candidate_id]
            status = reason.split(":", 1)[0]
        else:
            status, reason = "ranked", None
        rows.append(ScreeningRow(
            candidate_id=result.candidate_id, formula=result.formula,
            n_atoms=stab.n_atoms if stab else (len(result.structure) if result.structure else 0),
            energy_per_atom=result.energy_per_atom,
            formation_energy_per_atom=stab.formation_energy_per_atom if stab else None,
            e_above_hull=stab.e_above_hull if stab else None,
            is_stable=(stab.is_stable and status == "ranked") if stab else None,
            converged=result.converged, error=result.error, status=status, reason=reason, n_steps=result.n_steps,
            e_above_hull_dft=labels.get(result.candidate_id, {}).get("e_above_hull"),
        ))
    for candidate_id, reason in (rejected or {}).items():
        rows.append(ScreeningRow(candidate_id=candidate_id, formula=(formulas or {}).get(candidate_id, "?"), n_atoms=0, error=reason,
                                 status="rejected", reason=reason,
                                 e_above_hull_dft=labels.get(candidate_id, {}).get("e_above_hull")))
    rows.sort(key=lambda r: (STATUS_ORDER.index(r.status), r.e_above_hull is None, r.e_above_hull or 0.0,
                             r.formula, r.candidate_id))
    return rows



def attach_checks(rows: list[ScreeningRow], md=None, committee=None) -> None:
    """Put the MD checks (outputs of the MD jobs) and committee statistics (output of the committee job) on the
    rows of their candidates."""
    from dpa4_flows.analysis.md_verdict import md_summary
    from dpa4_flows.schemas import MDCheck

    by_id = {r.candidate_id: r for r in rows}
    for step in md or []:
        for check in (step.checks if hasattr(step, "checks") else step["checks"]):
            check = check if isinstance(check, MDCheck) else MDCheck(**check)
            if check.candidate_id in by_id:
                by_id[check.candidate_id].md.append(check)
    for row in rows:
        row.md_verdict = md_summary(row.md)
    if committee:
        docs = committee.docs if hasattr(committee, "docs") else committee["docs"]
        for doc in docs:
            doc = doc if isinstance(doc, dict) else doc.model_dump()
            row = by_id.get(doc["candidate_id"])
            if row is not None:
                row.e_above_hull_mean, row.e_above_hull_std = doc["mean"], doc["std"]
                row.stability_uncertain = doc["stability_uncertain"]
