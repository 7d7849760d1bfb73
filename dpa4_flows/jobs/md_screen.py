"""The screening's MD step: short NVT on the batched engine for the candidates close to the hull.

One job per temperature runs ``dpa4_core.dynamics.md_batch`` (ensemble ``nvt_langevin``, fixed cell) on the relaxed
structures of the ranked candidates within ``threshold`` (eV/atom) of the hull and judges each run with
:func:`dpa4_flows.analysis.md_verdict.md_check` (MSD, space group, verdict).
"""

from __future__ import annotations

import logging
from typing import Any

from jobflow import job
from pydantic import BaseModel, Field
from pymatgen.core import Structure

from dpa4_flows.analysis.md_verdict import LINDEMANN, md_check
from dpa4_flows.jobs import calculators
from dpa4_flows.schemas import MDCheck, StabilityDoc

logger = logging.getLogger(__name__)
TIMESTEP_FS = 2.0
FRICTION = 0.02  # 1/fs: a 50 fs thermostat, fast enough for a short run
SNAPSHOTS = 20  # trajectory snapshots per run (the second half is averaged)


class MDStep(BaseModel):
    """Output of one MD job: one check per candidate run at ``temperature``."""

    temperature: float = Field(description="Thermostat temperature, K.")
    checks: list[MDCheck] = Field(default_factory=list, description="One check per candidate within the threshold.")


def md_candidates(stability: Any, threshold: float) -> dict[str, Structure]:
    """{id: relaxed structure} of the ranked candidates with e_above_hull <= ``threshold`` (eV/atom)."""
    from dpa4_flows.flows.stability_step import StabilityStep

    step = stability if isinstance(stability, StabilityStep) else StabilityStep(**stability)
    chosen = {}
    for doc in step.docs:
        doc = doc if isinstance(doc, StabilityDoc) else StabilityDoc(**doc)
        if doc.candidate_id not in step.excluded and doc.structure is not None and doc.e_above_hull <= threshold:
            chosen[doc.candidate_id] = doc.structure
    return chosen


def run_md_checks(structures: dict[str, Structure], temperature: float, steps: int, calculator_kwargs: dict,
                  seed: int = 0, lindemann: float = LINDEMANN) -> list[MDCheck]:
    """Run the NVT checks of ``structures`` at ``temperature`` (K) outside jobflow."""
    from dpa4_core.dynamics.md import md_batch

    if not structures:
        return []
    kwargs = calculator_kwargs
    model = calculators.get_model(kwargs["model"], kwargs.get("device", "cpu"), kwargs.get("dtype", "float32"))
    interval = max(1, int(steps) // SNAPSHOTS)
    results = md_batch(list(structures.values()), model, ensemble="nvt_langevin", temperature=temperature,
                       steps=int(steps), timestep=TIMESTEP_FS, friction=FRICTION, seed=seed,
                       trajectory_interval=interval, dtype=kwargs.get("dtype", "float32"),
                       device=kwargs.get("device", "cpu"), progress=False)
    checks = [md_check(cid, s, r, temperature, steps, lindemann)
              for (cid, s), r in zip(structures.items(), results, strict=True)]
    for c in checks:
        if c.verdict != "stable":
            logger.warning("MD at %g K: %s %s (%s)", temperature, c.candidate_id, c.verdict, c.reason)
    return checks


@job(output_schema=MDStep)
def md_stability(stability: Any, temperature: float, steps: int, threshold: float, calculator_kwargs: dict,
                 seed: int = 0) -> MDStep:
    """Job: NVT checks at ``temperature`` of the candidates within ``threshold`` eV/atom of the hull."""
    chosen = md_candidates(stability, threshold)
    return MDStep(temperature=temperature, checks=run_md_checks(chosen, temperature, steps, calculator_kwargs, seed))
