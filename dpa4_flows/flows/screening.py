"""Screening flow: candidates -> chunks -> batched relaxation -> references -> stability -> report.

Every job is known when the flow is built (no dynamic replace/addition), so the flow is easy to persist and
resume: each chunk of candidates is one job, the elemental reference phases (bcc, fcc and hcp of every
element, relaxed with the same model) are one more, then one stability job and one report job. With a
user-supplied entries JSON the reference job is left out. Optional, between stability and report: one short NVT
job per ``md_temperatures`` entry for the candidates within ``md_threshold`` of the hull
(:mod:`dpa4_flows.jobs.md_screen`), and one committee job (:mod:`dpa4_flows.jobs.committee`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobflow import Flow, Maker, job
from pymatgen.core import Element, Lattice, Structure

from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
from dpa4_flows.analysis.metrics import labelled_metrics
from dpa4_flows.analysis.report import plot_hull, results_dataframe, write_csv
from dpa4_flows.analysis.rows import attach_checks, screening_rows
from dpa4_flows.flows.stability_step import StabilityStep, screening_stability
from dpa4_flows.jobs.stability import StabilityMaker, relaxed_entries
from dpa4_flows.schemas import BatchRelaxDoc, ScreeningReport
from dpa4_flows.settings import get_settings

logger = logging.getLogger(__name__)

PROTOTYPES = ("bcc", "fcc", "hcp")


class ScreeningInputError(ValueError):
    """Bad screening input: no candidates, duplicate ids, non-structures, unknown prototype, bad chunk size."""


def elemental_prototype(element: str, prototype: str) -> Structure:
    """A bcc, fcc or ideal hcp cell of ``element`` with nearest-neighbour distance 2 x metallic radius."""
    el = Element(element)
    radius = el.metallic_radius or el.atomic_radius
    if not radius:
        raise ScreeningInputError(f"no metallic or atomic radius known for {element!r}")
    d = 2.0 * float(radius)  # nearest-neighbour distance, A
    if prototype == "bcc":
        return Structure(Lattice.cubic(2 * d / math.sqrt(3)), [element] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]])
    if prototype == "fcc":
        return Structure(Lattice.cubic(d * math.sqrt(2)), [element] * 4,
                         [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    if prototype == "hcp":
        return Structure(Lattice.hexagonal(d, d * math.sqrt(8 / 3)), [element] * 2,
                         [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    raise ScreeningInputError(f"prototype {prototype!r}; allowed: {', '.join(PROTOTYPES)}")


def reference_structures(elements: list[str], prototypes: tuple[str, ...] = PROTOTYPES) -> dict[str, Structure]:
    """``{"ref:Mo-bcc": Structure, ...}`` for every element and prototype."""
    return {f"ref:{el}-{p}": elemental_prototype(el, p) for el in sorted(elements) for p in prototypes}


@job(output_schema=ScreeningReport)
def screening_report(
    stability: Any,
    relaxations: list[BatchRelaxDoc],
    references: Any,
    reference_source: str,
    output_dir: str | None = None,
    rejected: dict[str, str] | None = None,
    labels: dict[str, dict] | None = None,
    formulas: dict[str, str] | None = None,
    phases: Any = None,
    md: Any = None,
    committee: Any = None,
) -> ScreeningReport:
    """One row per candidate (relaxed, flagged, failed or rejected); CSV and hull PNG into ``output_dir``."""
    step = stability if isinstance(stability, StabilityStep) else StabilityStep(**stability)
    relax_docs = [r if isinstance(r, BatchRelaxDoc) else BatchRelaxDoc(**r) for r in relaxations]
    rows = screening_rows((res for doc in relax_docs for res in doc.results), step.docs, step.excluded,
                          rejected, labels, formulas)
    attach_checks(rows, md, committee)
    ranked = [d for d in step.docs if d.candidate_id not in step.excluded]
    ref_entries = [] if isinstance(references, str) else relaxed_entries(references)
    phase_entries = relaxed_entries(phases) if phases else []
    report = ScreeningReport(
        model_id=relax_docs[0].model_id if relax_docs else None,
        reference_source=reference_source,
        n_candidates=len(rows),
        n_stable=sum(1 for r in rows if r.is_stable),
        n_failed=sum(1 for r in rows if r.status in ("failed", "rejected", "unconverged")),
        n_flagged=sum(1 for r in rows if r.status == "flagged"),
        metrics=labelled_metrics(rows),
        rows=rows,
        stability=step.docs,
        references=[
            {"entry_id": e["entry_id"], "formula": e["structure"].composition.reduced_formula,
             "energy_per_atom": e["energy"] / len(e["structure"])}
            for e in ref_entries if isinstance(e, dict)
        ] if ref_entries else [{"entries_file": references}],
    )
    report.references += [{"entry_id": e["entry_id"], "formula": e["structure"].composition.reduced_formula,
                           "energy_per_atom": e["energy"] / len(e["structure"]), "competing_phase": True}
                          for e in phase_entries]
    if output_dir is not None:
        out = Path(output_dir).expanduser().resolve()
        report.csv_path = str(write_csv(results_dataframe(report), out / "screening.csv"))
        report.plot_path = str(plot_hull(ranked, out / "hull.png", title=f"DPA4 screening ({len(rows)} candidates)"))
    return report


@dataclass
class ScreeningMaker(Maker):
    """Build the screening flow.

    Args:
        relax_maker: relaxes each chunk (and the elemental references) with the same model.
        stability_maker: builds the hull and the stability documents.
        chunk_size: candidates per relaxation job (default from settings).
        reference_entries: path of an entries JSON file to use as references instead of relaxing
            elemental phases in the flow (energies must come from the same model).
        prototypes: elemental phases relaxed as references when ``reference_entries`` is None.
        output_dir: folder for ``screening.csv`` and ``hull.png`` (absolute; None: no files).
        md_temperatures: K; a short NVT check per temperature of the candidates within ``md_threshold``
            (eV/atom) of the hull, ``md_steps`` steps of 2 fs (none by default).
        committee: checkpoints (or model names) computing single points of the relaxed structures: the mean
            and spread of e_above_hull, ``stability_uncertain`` within ``committee_k`` std.
    """

    name: str = "DPA4 screening"
    relax_maker: BatchRelaxMaker = field(default_factory=BatchRelaxMaker)
    stability_maker: StabilityMaker = field(default_factory=StabilityMaker)
    chunk_size: int = field(default_factory=lambda: get_settings().chunk_size)
    reference_entries: str | None = None
    prototypes: tuple[str, ...] = PROTOTYPES
    output_dir: str | None = None
    md_temperatures: tuple[float, ...] = ()
    md_threshold: float = 0.05
    md_steps: int = 1000
    committee: tuple[str, ...] = ()
    committee_k: float = 1.0

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ScreeningInputError(f"chunk_size={self.chunk_size} must be >= 1")
        unknown = [p for p in self.prototypes if p not in PROTOTYPES]
        if unknown:
            raise ScreeningInputError(f"prototypes {unknown}; allowed: {', '.join(PROTOTYPES)}")
        if self.reference_entries is not None:
            self.reference_entries = str(Path(self.reference_entries).expanduser().resolve())
        if self.output_dir is not None:
            self.output_dir = str(Path(self.output_dir).expanduser().resolve())
        if any(not t >= 0 for t in self.md_temperatures) or self.md_steps < 2:
            raise ScreeningInputError(f"MD needs temperatures >= 0 K and >= 2 steps; got {self.md_temperatures}, "
                                      f"{self.md_steps} steps")
        if self.committee_k < 0:
            raise ScreeningInputError(f"committee_k={self.committee_k} must be >= 0")

    def make(self, candidates: list[Structure], candidate_ids: list[str] | None = None, *,
             rejected: dict[str, str] | None = None, labels: dict[str, dict] | None = None,
             formulas: dict[str, str] | None = None, phases: dict[str, Structure] | None = None) -> Flow:
        """The flow for ``candidates`` (ids default to ``"cand-0"``, ...). Its output is the report.

        ``rejected`` ({id: reason}) are candidates not screened (their ``formulas`` optional), each still one row
        of the report; ``labels`` ({id: {"e_above_hull": eV/atom}}) are DFT labels for the report's metrics;
        ``phases`` ({id: Structure}) are competing phases relaxed with the same model and added to the hull as
        references (ids get the prefix ``phase:``), not ranked.
        """
        if not candidates:
            raise ScreeningInputError("no candidates to screen")
        for i, s in enumerate([*candidates, *(phases or {}).values()]):
            if not isinstance(s, Structure):
                raise ScreeningInputError(f"candidate {i} is a {type(s).__name__}, not a pymatgen Structure")
        ids = [f"cand-{i}" for i in range(len(candidates))] if candidate_ids is None else list(map(str, candidate_ids))
        if len(ids) != len(candidates):
            raise ScreeningInputError(f"{len(ids)} candidate_ids for {len(candidates)} candidates")
        counts = Counter([*ids, *(rejected or {})])
        duplicates = sorted(c for c, n in counts.items() if n > 1)
        if duplicates:
            raise ScreeningInputError(f"duplicate candidate ids {duplicates[:5]}")
        if any(c.startswith(("ref:", "phase:")) for c in counts):
            raise ScreeningInputError("candidate ids may not start with 'ref:' or 'phase:' (reserved for references)")

        relax_jobs = self._chunks(candidates, ids, self.relax_maker.name)
        phase_jobs = self._chunks(list(phases.values()), [f"phase:{k}" for k in phases],
                                  "DPA4 competing phases") if phases else []
        jobs = [*relax_jobs, *phase_jobs]
        if self.reference_entries is None:
            elements = sorted({el.symbol for s in [*candidates, *(phases or {}).values()]
                               for el in s.composition.elements})
            refs = reference_structures(elements, tuple(self.prototypes))
            ref_job = self.relax_maker.make(list(refs.values()), list(refs))
            ref_job.name = "DPA4 elemental references"
            jobs.append(ref_job)
            references, source = [ref_job.output], "computed"
        else:
            references, source = self.reference_entries, "user"

        stability = screening_stability(
            [j.output for j in relax_jobs], references, [j.output for j in phase_jobs] or None,
            regime=self.relax_maker.regime, tolerance=self.stability_maker.tolerance,
            method=self.stability_maker.method, model_id=relax_jobs[0].output.model_id,
        )
        stability.name = self.stability_maker.name
        checks = self._checks(stability, relax_jobs, references, phase_jobs)
        report = screening_report(
            stability.output, [j.output for j in relax_jobs], references, source, self.output_dir,
            rejected or None, labels or None, formulas or None, [j.output for j in phase_jobs] or None,
            [j.output for j in checks if j.name.startswith("DPA4 MD")] or None,
            next((j.output for j in checks if j.name == "DPA4 committee"), None),
        )
        report.name = "DPA4 screening report"
        jobs += [stability, *checks, report]
        return Flow(jobs, output=report.output, name=self.name)

    def _checks(self, stability, relax_jobs, references, phase_jobs) -> list:
        """The optional MD jobs (one per temperature) and committee job, on the stability job's output."""
        from dpa4_flows.jobs.committee import committee_stability
        from dpa4_flows.jobs.md_screen import md_stability

        kwargs = self.relax_maker.calculator_kwargs
        jobs = []
        for temperature in self.md_temperatures:
            md = md_stability(stability.output, float(temperature), self.md_steps, self.md_threshold, kwargs)
            md.name = f"DPA4 MD {temperature:g} K"
            jobs.append(md)
        if self.committee:
            members = [str(m) for m in self.committee]
            committee = committee_stability(
                [j.output for j in relax_jobs], references, [j.output for j in phase_jobs] or None,
                stability.output, members, k=self.committee_k, regime=self.relax_maker.regime,
                tolerance=self.stability_maker.tolerance, device=kwargs.get("device", "cpu"),
                dtype=kwargs.get("dtype", "float32"))
            committee.name = "DPA4 committee"
            jobs.append(committee)
        return jobs

    def _chunks(self, structures: list[Structure], ids: list[str], name: str) -> list:
        """One relaxation job per chunk of ``chunk_size`` structures, each logging its progress line."""
        jobs, size = [], self.chunk_size
        n = -(-len(structures) // size)
        for i, start in enumerate(range(0, len(structures), size)):
            job_ = self.relax_maker.make(structures[start:start + size], ids[start:start + size], chunk=(i + 1, n))
            job_.name = f"{name} {i + 1}"
            jobs.append(job_)
        return jobs
