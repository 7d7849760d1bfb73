"""Pydantic task documents of dpa4_flows. Energies in eV, energies per atom in eV/atom.

Relaxations, statics and MD return atomate2's ``ForceFieldTaskDocument``; the documents here cover what
atomate2 has no schema for: thermodynamic stability, a screening report, and a fine-tuning run.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pymatgen.core import Structure


class DecompositionProduct(BaseModel):
    """One phase of the hull decomposition of a candidate."""

    formula: str = Field(description="Reduced formula of the product phase.")
    entry_id: str | None = Field(None, description="Identifier of the product's entry (candidate or reference).")
    fraction: float = Field(description="Fraction of the candidate's atoms that go to this product (sums to 1).")


class StabilityDoc(BaseModel):
    """Thermodynamic stability of one candidate against a convex hull."""

    candidate_id: str = Field(description="Identifier of the candidate entry.")
    formula: str = Field(description="Reduced formula of the candidate.")
    composition: dict[str, float] = Field(description="Element -> amount in the candidate cell.")
    n_atoms: int = Field(description="Number of atoms in the candidate cell.")
    energy_per_atom: float = Field(description="Total energy per atom of the candidate, eV/atom.")
    formation_energy_per_atom: float = Field(
        description="Energy per atom relative to the elemental references (lowest energy per element), eV/atom."
    )
    e_above_hull: float = Field(description="Energy above the convex hull, eV/atom (0 for stable phases).")
    decomposition: list[DecompositionProduct] = Field(
        description="Hull phases the candidate decomposes into, with atom fractions (itself if stable)."
    )
    is_stable: bool = Field(description="True if e_above_hull <= the stability tolerance.")
    stability_tolerance: float = Field(0.0, description="Tolerance used for is_stable, eV/atom.")
    model_id: str | None = Field(None, description="Model identifier, 'sha256:<hex>' of the checkpoint file.")
    reference_ids: list[str] = Field(
        default_factory=list, description="Identifiers of the elemental reference entries used for this candidate."
    )
    reference_set_id: str | None = Field(None, description="sha256 of the sorted reference ids and energies.")
    structure: Structure | None = Field(None, description="Relaxed structure of the candidate, if known.")


class MDCheck(BaseModel):
    """A short NVT run of one relaxed candidate at one temperature (see :mod:`dpa4_flows.analysis.md_verdict`)."""

    candidate_id: str = Field(description="Identifier of the candidate.")
    temperature: float = Field(description="Thermostat temperature, K.")
    steps: int = Field(description="MD steps run.")
    verdict: str = Field(description="'stable', 'melted' (MSD above the Lindemann bound), 'decomposed' (atoms "
                         "collapsed, or the space group changed without melting) or 'failed'.")
    reason: str | None = Field(None, description="Why the verdict is not 'stable'.")
    msd: float | None = Field(None, description="Mean square displacement over the second half, A^2.")
    msd_bound: float | None = Field(None, description="Lindemann bound (lindemann * d_nn)^2, A^2.")
    spacegroup_initial: str | None = Field(None, description="Space group of the relaxed structure.")
    spacegroup_final: str | None = Field(None, description="Space group of the second half's averaged structure.")
    spacegroup_kept: bool | None = Field(None, description="The space group survived the run.")
    max_displacement: float | None = Field(None, description="Largest displacement of an atom, A.")
    mean_temperature: float | None = Field(None, description="Mean kinetic temperature of the second half, K.")
    epot_drift: float | None = Field(None, description="Slope of the potential energy, eV/atom/ps.")


class ScreeningRow(BaseModel):
    """One row of the screening table."""

    candidate_id: str = Field(description="Identifier of the candidate.")
    formula: str = Field(description="Reduced formula.")
    n_atoms: int = Field(description="Atoms in the cell.")
    energy_per_atom: float | None = Field(None, description="Relaxed energy per atom, eV/atom.")
    formation_energy_per_atom: float | None = Field(None, description="Formation energy, eV/atom.")
    e_above_hull: float | None = Field(None, description="Energy above hull, eV/atom.")
    is_stable: bool | None = Field(None, description="On the hull within tolerance.")
    converged: bool | None = Field(None, description="Relaxation reached fmax within max_steps.")
    error: str | None = Field(None, description="Why the candidate has no result, if it failed.")
    status: str = Field("ranked", description="'ranked' (on or above the hull), 'flagged' (left the physical "
                        "regime), 'unconverged' (out of steps), 'failed' (relaxation failed or diverged) or "
                        "'rejected' (not screened: unreadable, overlapping atoms, untrained elements).")
    reason: str | None = Field(None, description="Why the candidate is not ranked (flag, failure or rejection).")
    n_steps: int | None = Field(None, description="Optimiser steps of the relaxation.")
    e_above_hull_dft: float | None = Field(None, description="DFT label carried by the candidate, eV/atom.")
    md: list[MDCheck] = Field(default_factory=list, description="Short NVT checks, one per temperature (if asked).")
    md_verdict: str | None = Field(None, description="The MD verdicts, e.g. '300K stable; 1500K melted'.")
    e_above_hull_mean: float | None = Field(None, description="Committee mean of e_above_hull, eV/atom.")
    e_above_hull_std: float | None = Field(None, description="Committee spread (std) of e_above_hull, eV/atom.")
    stability_uncertain: bool | None = Field(None, description="The stable/unstable call could flip within "
                                             "k * std of the committee (None without a committee).")


class ScreeningReport(BaseModel):
    """Final document of a screening flow."""

    model_id: str | None = Field(None, description="'sha256:<hex>' of the checkpoint, or the calculator import path.")
    reference_source: str = Field(description="'computed' (relaxed in the same flow) or 'user' (entries JSON).")
    n_candidates: int = Field(description="Number of candidates screened.")
    n_stable: int = Field(description="Candidates on the hull.")
    n_failed: int = Field(description="Candidates without a result (relaxation failed or not converged).")
    n_flagged: int = Field(0, description="Candidates whose relaxation left the physical regime (not ranked).")
    metrics: dict[str, Any] | None = Field(None, description="Discovery metrics against the candidates' DFT "
                                           "e_above_hull labels, if they carry any.")
    rows: list[ScreeningRow] = Field(description="One row per candidate, sorted by e_above_hull.")
    stability: list[StabilityDoc] = Field(default_factory=list, description="Full stability documents.")
    references: list[dict[str, Any]] = Field(
        default_factory=list, description="Reference entries used (id, formula, energy_per_atom in eV/atom)."
    )
    csv_path: str | None = Field(None, description="Absolute path of the CSV table, if written.")
    plot_path: str | None = Field(None, description="Absolute path of the hull plot PNG, if written.")


class FineTuneDoc(BaseModel):
    """Output of a fine-tuning job: where the new checkpoint is and how well it fits."""

    checkpoint_path: str = Field(description="Absolute path of the best checkpoint written by the trainer.")
    checkpoint_sha256: str = Field(description="sha256 hex digest of the checkpoint file.")
    last_checkpoint_path: str | None = Field(None, description="Absolute path of the last-epoch checkpoint.")
    base_model: str | None = Field(None, description="Absolute path of the starting checkpoint.")
    base_model_sha256: str | None = Field(None, description="sha256 of the starting checkpoint.")
    n_frames: int = Field(description="Number of labelled frames in the dataset (before the train/valid split).")
    dataset_source: str = Field(description="Path of the dataset, or 'store:<query>' for a store query.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Final metrics (energy eV/atom, forces eV/A).")
    training_log: str | None = Field(None, description="Text of the training log (kept in the data store).")
    plots: list[str] = Field(default_factory=list, description="Absolute paths of plots written by the trainer.")
    config: dict[str, Any] = Field(default_factory=dict, description="Trainer configuration that was run.")


class RelaxedStructure(BaseModel):
    """Result of relaxing one structure inside a batch job."""

    candidate_id: str = Field(description="Identifier of the input structure.")
    formula: str = Field(description="Reduced formula.")
    structure: Structure | None = Field(None, description="Relaxed structure (None if the relaxation failed).")
    energy: float | None = Field(None, description="Total energy of the relaxed structure, eV.")
    energy_per_atom: float | None = Field(None, description="Energy per atom, eV/atom.")
    max_force: float | None = Field(None, description="Largest force component norm at the end, eV/A.")
    n_steps: int | None = Field(None, description="Optimiser steps taken.")
    converged: bool = Field(False, description="Forces below fmax within max_steps.")
    error: str | None = Field(None, description="Exception type and message if this structure failed.")
    flags: list[str] = Field(default_factory=list, description="Ways the relaxation left the physical regime.")


class BatchRelaxDoc(BaseModel):
    """Output of one batched relaxation job (a chunk of a screening)."""

    results: list[RelaxedStructure] = Field(description="One result per input structure, in input order.")
    model_id: str | None = Field(None, description="'sha256:<hex>' of the checkpoint, or calculator import path.")
    engine: str = Field(description="'batched' (dpa4_core.dynamics.relax_batch) or 'ase' (one ASE relaxation each).")
    fmax: float = Field(description="Force convergence criterion, eV/A.")
    max_steps: int = Field(description="Maximum optimiser steps per structure.")
    relax_cell: bool = Field(description="Whether cell shape and volume were relaxed.")
    elapsed_time: float = Field(description="Wall time of the job, s.")
