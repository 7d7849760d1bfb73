"""The screening's stability job: one hull from the model's own references, flagged relaxations kept off it.

References are the relaxed elemental prototypes and competing phases (or a user entries JSON). Candidates whose
relaxation failed have no energy; those that left the physical regime (geometry flags from the relaxation, or a
formation energy below the plausible bound) or ran out of steps are *excluded*: they get an energy above the hull
built without them (which may be negative) but never ``is_stable``, and they do not push others off the hull.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from jobflow import job
from pydantic import BaseModel, Field

from dpa4_flows.analysis.regime import RegimeLimits, energy_flag
from dpa4_flows.analysis.stability import compute_stability, load_entries, to_entry
from dpa4_flows.jobs.stability import relaxed_entries
from dpa4_flows.schemas import BatchRelaxDoc, RelaxedStructure, StabilityDoc

logger = logging.getLogger(__name__)


class StabilityStep(BaseModel):
    """Output of the stability job: one document per relaxed candidate, and why some are not ranked."""

    docs: list[StabilityDoc] = Field(default_factory=list, description="Candidates with an energy, input order.")
    excluded: dict[str, str] = Field(default_factory=dict, description="Candidate id -> why it is not ranked.")


def _results(items: Any) -> list[RelaxedStructure]:
    docs = [BatchRelaxDoc(**d) if isinstance(d, dict) else d for d in (items or [])]
    return [r for doc in docs for r in doc.results]


def _references(references: Any, phases: Any) -> list:
    """Hull references: elemental prototypes (kept when flagged, with a warning: without them there is no hull)
    and competing phases (left out when their relaxation failed or was flagged)."""
    if isinstance(references, str):
        return load_entries(references)
    kept = []
    for r in _results(references):
        if r.flags:
            logger.warning("elemental reference %s left the physical regime (%s): energies against it are "
                           "unreliable", r.candidate_id, "; ".join(r.flags))
        kept.append(r)
    for r in _results(phases):
        if r.flags or r.error:
            logger.warning("competing phase %s left out of the hull: %s", r.candidate_id,
                           r.error or "; ".join(r.flags))
        else:
            kept.append(r)
    return [to_entry(e, e["entry_id"]) for e in relaxed_entries(kept)]


def formation_energies(entries: dict[str, Any], refs: list) -> dict[str, float]:
    """{id: formation energy per atom (eV/atom)} against the lowest-energy elemental reference of each element;
    candidates with an element that has no reference are left out (the hull then names that element)."""
    lowest: dict[str, float] = {}
    for ref in refs:
        if len(ref.composition.elements) == 1:
            el = str(ref.composition.elements[0])
            lowest[el] = min(lowest.get(el, float("inf")), ref.energy_per_atom)
    out = {}
    for key, entry in entries.items():
        amounts = {str(el): n for el, n in entry.composition.items()}
        if all(el in lowest for el in amounts):
            out[key] = (entry.energy - sum(n * lowest[el] for el, n in amounts.items())) / entry.composition.num_atoms
    return out


def split_candidates(results: list[RelaxedStructure], formation: dict[str, float],
                     limits: RegimeLimits) -> tuple[list[RelaxedStructure], dict[str, str]]:
    """(ranked results, {id: reason} of the excluded ones) among results with an energy."""
    ranked, excluded = [], {}
    for r in results:
        flag = energy_flag(formation.get(r.candidate_id), limits)
        reasons = [*r.flags, *([flag] if flag else [])]
        if reasons:
            excluded[r.candidate_id] = "flagged: " + "; ".join(reasons)
        elif not r.converged:
            excluded[r.candidate_id] = (f"unconverged: out of steps after {r.n_steps} steps "
                                        f"(max force {r.max_force if r.max_force is None else round(r.max_force, 3)} eV/A)")
        else:
            ranked.append(r)
    return ranked, excluded


def screening_stability_docs(relaxations: Any, references: Any, phases: Any = None, *, regime: dict | None = None,
                             tolerance: float = 1e-6, method: Literal["auto", "phase_diagram", "patched"] = "auto",
                             model_id: str | None = None) -> StabilityStep:
    """The work of :func:`screening_stability` outside jobflow."""
    limits = RegimeLimits(**(regime or {}))
    refs = _references(references, phases)
    results = [r for r in _results(relaxations) if r.energy is not None and r.structure is not None]
    if not results:
        return StabilityStep()
    entries = {e["entry_id"]: to_entry(e, e["entry_id"]) for e in relaxed_entries(results)}
    formation = formation_energies(entries, refs)
    ranked, excluded = split_candidates(results, formation, limits)
    ranked_entries = [entries[r.candidate_id] for r in ranked]
    docs = {d.candidate_id: d for d in compute_stability(ranked_entries, refs, model_id=model_id,
                                                         tolerance=tolerance, method=method)}
    others = [entries[k] for k in excluded]
    for doc in compute_stability(others, refs + ranked_entries, model_id=model_id, tolerance=tolerance,
                                 include_candidates_in_hull=False, method=method):
        doc.is_stable = False
        docs[doc.candidate_id] = doc
    return StabilityStep(docs=[docs[r.candidate_id] for r in results], excluded=excluded)


@job(output_schema=StabilityStep)
def screening_stability(relaxations: Any, references: Any, phases: Any = None, regime: dict | None = None,
                        tolerance: float = 1e-6, method: str = "auto", model_id: str | None = None) -> StabilityStep:
    """Job: stability of the relaxed candidates (``BatchRelaxDoc`` outputs) against ``references`` (relaxed
    elemental prototypes, or an entries JSON path) and relaxed competing ``phases``; see the module doc."""
    return screening_stability_docs(relaxations, references, phases, regime=regime, tolerance=tolerance,
                                    method=method, model_id=model_id)
