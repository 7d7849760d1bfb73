"""The screening's committee step: how much the energies above the hull depend on the model.

The relaxations are made with the main model only; every committee member (a checkpoint path; other strings
are passed through to the model loader, so named models can come later) computes single-point energies of the
same relaxed structures: candidates, elemental references and competing phases. Each member's energies go
through the screening's own stability procedure (:func:`screening_stability_docs`, same flags and exclusions),
giving one energy above the hull per candidate and member. Per candidate: mean and spread (sample std, ddof=1;
0 for one member), and ``stability_uncertain`` where the stable/unstable call could flip within ``k`` std:
``mean - k std <= tol < mean + k std``, or the main model's call differs from the committee mean's.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from jobflow import job
from pydantic import BaseModel, Field

from dpa4_flows.jobs import calculators
from dpa4_flows.schemas import BatchRelaxDoc

logger = logging.getLogger(__name__)


class CommitteeDoc(BaseModel):
    """Committee energies above the hull of one candidate (eV/atom)."""

    candidate_id: str = Field(description="Identifier of the candidate.")
    e_above_hull: list[float] = Field(description="One value per committee member, in member order.")
    mean: float = Field(description="Mean over the members, eV/atom.")
    std: float = Field(description="Sample standard deviation over the members (0 for one member), eV/atom.")
    stability_uncertain: bool = Field(description="The stable/unstable call could flip within k * std.")


class CommitteeStep(BaseModel):
    """Output of the committee job."""

    members: list[str] = Field(description="The committee's models (checkpoint paths or names).")
    k: float = Field(description="Spread multiple used for stability_uncertain.")
    docs: list[CommitteeDoc] = Field(default_factory=list, description="One document per candidate with energies.")


def _docs(items: Any) -> list[BatchRelaxDoc]:
    return [d if isinstance(d, BatchRelaxDoc) else BatchRelaxDoc(**d) for d in (items or [])]


def single_points(structures: list, member: str, device: str = "cpu", dtype: str = "float32") -> list[float | None]:
    """Energies (eV) of ``structures`` with the member's model, batched (the relaxation engine with 0 steps)."""
    from dpa4_core.dynamics import relax_batch

    if not structures:
        return []
    model = calculators.get_model(member, device, dtype)
    results = relax_batch(structures, model, max_steps=0, relax_cell=False, dtype=dtype, device=device,
                          progress=False)
    return [None if r.error or r.energy is None or not np.isfinite(r.energy) else float(r.energy) for r in results]


def _with_energies(docs: list[BatchRelaxDoc], member: str, device: str, dtype: str) -> list[BatchRelaxDoc]:
    """Copies of ``docs`` whose relaxed structures carry the member's energies."""
    results = [r for d in docs for r in d.results if r.structure is not None and r.energy is not None]
    energies = iter(single_points([r.structure for r in results], member, device, dtype))
    out = []
    for d in docs:
        rows = []
        for r in d.results:
            if r.structure is not None and r.energy is not None:
                e = next(energies)
                r = r.model_copy(update={"energy": e, "energy_per_atom": None if e is None else e / len(r.structure)})
                if e is None:
                    r = r.model_copy(update={"error": f"committee member {member} gave no energy"})
            rows.append(r)
        out.append(d.model_copy(update={"results": rows}))
    return out


def committee_stats(values: list[float], main: float | None, k: float, tol: float = 1e-6) -> tuple[float, float, bool]:
    """(mean, std, stability_uncertain) of one candidate's energies above the hull."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    flips = mean - k * std <= tol < mean + k * std
    disagrees = main is not None and (main <= tol) != (mean <= tol)
    return mean, std, bool(flips or disagrees)


def committee_docs(relaxations: Any, references: Any, phases: Any, stability: Any, members: list[str], *,
                   k: float = 1.0, regime: dict | None = None, tolerance: float = 1e-6, device: str = "cpu",
                   dtype: str = "float32") -> CommitteeStep:
    """The work of :func:`committee_stability` outside jobflow."""
    from dpa4_flows.flows.stability_step import StabilityStep, screening_stability_docs

    main = stability if isinstance(stability, StabilityStep) else StabilityStep(**stability)
    main_hull = {d.candidate_id: d.e_above_hull for d in main.docs}
    per_member: list[dict[str, float]] = []
    for member in members:
        refs = references if isinstance(references, str) else _with_energies(_docs(references), member, device,
                                                                               dtype)
        step = screening_stability_docs(_with_energies(_docs(relaxations), member, device, dtype), refs,
                                        _with_energies(_docs(phases), member, device, dtype) if phases else None,
                                        regime=regime, tolerance=tolerance)
        per_member.append({d.candidate_id: d.e_above_hull for d in step.docs})
    docs = []
    for cid in main_hull:
        values = [m[cid] for m in per_member if cid in m]
        if len(values) != len(members):
            logger.warning("committee: %s has no energy from every member: no spread", cid)
            continue
        mean, std, uncertain = committee_stats(values, main_hull[cid], k, tolerance)
        docs.append(CommitteeDoc(candidate_id=cid, e_above_hull=values, mean=mean, std=std,
                                 stability_uncertain=uncertain))
    return CommitteeStep(members=[str(m) for m in members], k=k, docs=docs)


@job(output_schema=CommitteeStep)
def committee_stability(relaxations: Any, references: Any, phases: Any, stability: Any, members: list[str],
                        k: float = 1.0, regime: dict | None = None, tolerance: float = 1e-6, device: str = "cpu",
                        dtype: str = "float32") -> CommitteeStep:
    """Job: committee mean and spread of every candidate's energy above the hull (see the module doc)."""
    return committee_docs(relaxations, references, phases, stability, members, k=k, regime=regime,
                          tolerance=tolerance, device=device, dtype=dtype)
