"""StabilityMaker: formation energy and e_above_hull of relaxed candidates as a jobflow job.

Candidates are the outputs of batch relaxation jobs (``BatchRelaxDoc``), atomate2 task documents, or
entries; references the same, or the path of a user-supplied entries JSON file. The work is done by
:func:`dpa4_flows.analysis.stability.compute_stability`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jobflow import Maker, job
from monty.json import MontyDecoder

from dpa4_flows.schemas import BatchRelaxDoc, RelaxedStructure, StabilityDoc
from dpa4_flows.analysis.stability import compute_stability

logger = logging.getLogger(__name__)


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict) and "@class" in obj:
        return MontyDecoder().process_decoded(obj)
    return obj


def relaxed_entries(items: Any, require_converged: bool = False) -> list[Any]:
    """Flatten relaxation outputs into inputs for ``compute_stability``.

    ``items`` is one or a list of ``BatchRelaxDoc`` / ``RelaxedStructure`` / task documents / entries (or
    their serialised dicts). Failed relaxations (no energy) are dropped, and unconverged ones too if
    ``require_converged``.
    """
    items = _decode(items)
    if not isinstance(items, list | tuple):
        items = [items]
    out = []
    for item in items:
        item = _decode(item)
        if isinstance(item, dict) and "results" in item and "engine" in item:
            item = BatchRelaxDoc(**item)
        if isinstance(item, BatchRelaxDoc):
            out.extend(relaxed_entries(item.results, require_converged))
            continue
        if isinstance(item, dict) and "candidate_id" in item and "formula" in item:
            item = RelaxedStructure(**item)
        if isinstance(item, RelaxedStructure):
            if item.energy is None or item.structure is None:
                continue
            if require_converged and not item.converged:
                logger.info("dropping unconverged %s", item.candidate_id)
                continue
            out.append({"structure": item.structure, "energy": item.energy, "entry_id": item.candidate_id})
        else:
            out.append(item)
    return out


@dataclass
class StabilityMaker(Maker):
    """Stability of relaxed candidates against references (see :func:`compute_stability`).

    Args:
        tolerance: ``is_stable`` if ``e_above_hull <= tolerance`` (eV/atom).
        include_candidates_in_hull: candidates compete with each other as well as with the references.
        method: "auto", "phase_diagram" or "patched" (PatchedPhaseDiagram).
        require_converged: leave out candidates whose relaxation did not converge.
    """

    name: str = "DPA4 stability"
    tolerance: float = 1e-6
    include_candidates_in_hull: bool = True
    method: Literal["auto", "phase_diagram", "patched"] = "auto"
    require_converged: bool = False

    @job
    def make(self, candidates: Any, references: Any, model_id: str | None = None) -> list[StabilityDoc]:
        """Job: ``candidates`` and ``references`` as accepted by :func:`relaxed_entries`; ``references``
        may also be the path of an entries JSON file."""
        return self.compute(candidates, references, model_id)

    def compute(self, candidates: Any, references: Any, model_id: str | None = None) -> list[StabilityDoc]:
        """The same outside jobflow."""
        cands = relaxed_entries(candidates, self.require_converged)
        refs = references if isinstance(references, str | Path) else relaxed_entries(references)
        return compute_stability(
            cands,
            refs,
            model_id=model_id,
            tolerance=self.tolerance,
            include_candidates_in_hull=self.include_candidates_in_hull,
            method=self.method,
        )
