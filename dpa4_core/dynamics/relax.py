"""Batched relaxation: many structures per model call, in-flight batching, ASE-equivalent results.

Each system follows exactly the path ASE's optimiser would take on ``FrechetCellFilter(atoms)`` (or on the atoms
alone with ``relax_cell=False``): convergence is tested before every step on the filter's generalised forces
(``fmax``), and a system stops at convergence or after ``max_steps`` steps. Converged systems leave the batch at
once and waiting ones take their place while the atom (and edge) budget allows.

ASE's filter options (``mask``, ``hydrostatic_strain``, ``scalar_pressure``: :mod:`cellfilter`) and ``FixSymmetry``
(``fix_symmetry``: :mod:`symmetry`) follow ASE too. Each input is admitted on its own (:mod:`inputs`): a bad one gets
an error result and the others run as if it were not there.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dpa4_core.dynamics import cellfilter
from dpa4_core.dynamics.inputs import admit
from dpa4_core.dynamics.optimizers import FIREState, LBFGSState, make_optimizer
from dpa4_core.dynamics.runner import BatchSetupError, ModelRunner
from dpa4_core.dynamics.snapshot import as_input_type, snapshot
from dpa4_core.dynamics.state import Packed, Rows, build_edges, make_batch, refresh_neighbors, rows
from dpa4_core.dynamics.symmetry import BatchSymmetry, SymmetryOps, refine_and_ops

logger = logging.getLogger(__name__)


@dataclass
class RelaxResult:
    """One relaxed structure, or the reason there is none.

    Attributes:
        structure: final structure, same type as the input (pymatgen ``Structure``/``Molecule`` or ASE ``Atoms``;
            Atoms carry a ``SinglePointCalculator`` with the final results); the input itself, unchanged, for a
            refused input.
        energy: final potential energy (eV; without the ``pV`` term of ``scalar_pressure``); None for a refused
            input, NaN for a structure that blew up.
        forces: ``[n_atoms, 3]`` Cartesian forces (eV/A; symmetrised with ``fix_symmetry``); None if refused.
        stress: ``[3, 3]`` stress (eV/A^3, ASE sign: tension positive); zeros for non-periodic structures; None if
            refused.
        steps: optimiser steps taken (ASE's ``opt.nsteps``; 0 if refused).
        converged: True if ``fmax`` was reached within ``max_steps``; always False with an error.
        fmax: final largest generalised force (eV/A; ASE's filter measure, cell rows included); NaN if refused.
        trajectory: one structure per evaluated geometry (if requested), else None.
        error: None, or why this structure has no valid answer: ``"<ErrorType>: <message>"`` for a refused input
            (``InvalidStructureError``, ``UntrainedElementError``, ...) or non-finite energy or forces mid-run.
    """

    structure: Any
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    steps: int
    converged: bool
    fmax: float
    trajectory: list | None = None
    error: str | None = None


@dataclass
class RelaxState(Rows):
    """Per-system state of a relaxation (FrechetCellFilter degrees of freedom, see :mod:`cellfilter`).

    Attributes:
        x: ``[N, 3]`` positions in the undeformed cell (A).
        index: ``[F]`` position of the system in the caller's input list (long).
        h0: ``[F, 3, 3]`` cell at the start (rows, A; zeros for molecules).
        c: ``[F, 3, 3]`` cell degrees of freedom, ``exp_cell_factor * log(F)``.
        exp_cell_factor: ``[F]``.
        cell_mask: ``[F]`` 1.0 where the cell relaxes, else 0.0.
        mask: ``[F, 3, 3]`` strain components that relax (the user's mask on the periodic directions).
        steps: ``[F]`` optimiser steps taken (long).
        optimizer: the optimiser's own state.
    """

    x: torch.Tensor = rows("atom")
    index: torch.Tensor = rows("system")
    h0: torch.Tensor = rows("system")
    c: torch.Tensor = rows("system")
    exp_cell_factor: torch.Tensor = rows("system")
    cell_mask: torch.Tensor = rows("system")
    mask: torch.Tensor = rows("system")
    steps: torch.Tensor = rows("system")
    optimizer: FIREState | LBFGSState


def _refused(structure, error: str) -> RelaxResult:
    return RelaxResult(structure=structure, energy=None, forces=None, stress=None, steps=0, converged=False,
                       fmax=float("nan"), error=error)


class _Relaxer:
    """The in-flight loop behind :func:`relax_batch` (one instance per call)."""

    def __init__(self, structures, runner: ModelRunner, optimizer, fmax, max_steps, cell: cellfilter.CellOptions,
                 max_atoms, max_edges, skin, prune, trajectory, allow_untrained_elements):
        self.inputs = list(structures)
        admitted = admit(self.inputs, runner.model, allow_untrained_elements)
        self.atoms, self.accepted = admitted.atoms, admitted.accepted
        self.runner, self.optimizer = runner, optimizer
        self.fmax, self.max_steps, self.cell = fmax, max_steps, cell
        self.symmetry: dict[int, SymmetryOps] = {}
        self._batch_symmetry: tuple[tuple[int, ...], BatchSymmetry] | None = None
        self.max_atoms, self.max_edges, self.skin, self.prune = max_atoms, max_edges, skin, prune
        self.want_trajectory = trajectory
        self.trajectories: dict[int, list] = {}
        self.results: list[RelaxResult | None] = [
            None if error is None else _refused(s, error) for s, error in zip(self.inputs, admitted.errors)
        ]
        self.device = runner.device
        self.cutoff = runner.cutoff

    def _pack_one(self, index: int) -> Packed:
        atoms = self.atoms[index]
        if self.cell.fix_symmetry:
            self.symmetry[index] = refine_and_ops(atoms, self.cell.symprec)
        n = len(atoms)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        periodic = bool(pbc.any())  # a slab or wire has a cell too; its open directions are masked
        cell = atoms.cell.array if periodic else np.zeros((3, 3))
        f64 = dict(dtype=torch.float64, device=self.device)
        positions = torch.as_tensor(atoms.positions, **f64)
        factor = float(n) if self.cell.exp_cell_factor is None else float(self.cell.exp_cell_factor)
        state = RelaxState(
            x=positions.clone(),
            index=torch.tensor([index], dtype=torch.long, device=self.device),
            h0=torch.as_tensor(cell[None], **f64),
            c=torch.zeros(1, 3, 3, **f64),
            exp_cell_factor=torch.tensor([factor], **f64),
            cell_mask=torch.tensor([1.0 if (self.cell.relax_cell and periodic) else 0.0], **f64),
            mask=torch.as_tensor(cellfilter.strain_mask(self.cell.mask, pbc)[None], **f64),
            steps=torch.zeros(1, dtype=torch.long, device=self.device),
            optimizer=self.optimizer.new_state(n, torch.float64, self.device),
        )
        return Packed(
            numbers=torch.as_tensor(atoms.numbers, dtype=torch.long, device=self.device),
            ref_pos=positions.clone(),
            n_atoms=torch.tensor([n], dtype=torch.long, device=self.device),
            pbc=torch.as_tensor(pbc[None], dtype=torch.bool, device=self.device),
            ref_cell=torch.as_tensor(cell[None], **f64),
            edges=[build_edges(atoms.positions, cell, pbc, self.cutoff + self.skin)],
            state=state,
        )

    def _admit(self, pack: Packed | None, pending: deque) -> Packed | None:
        n_atoms = pack.n_atoms_total if pack is not None else 0
        n_edges = int(pack.n_edges().sum()) if pack is not None else 0
        new = []
        while pending:
            index = pending[0]
            size = len(self.atoms[index])
            if (n_atoms or new) and n_atoms + size > self.max_atoms:
                break
            one = self._pack_one(index)
            edges = len(one.edges[0][0])
            if self.max_edges is not None and (n_atoms or new) and n_edges + edges > self.max_edges:
                break
            pending.popleft()
            new.append(one)
            n_atoms, n_edges = n_atoms + size, n_edges + edges
        if not new:
            return pack
        return Packed.concat([pack] + new if pack is not None else new)

    def _geometry(self, pack: Packed):
        st = pack.state
        log_f, deform = cellfilter.deformation(st.c, st.exp_cell_factor)
        positions, cell = cellfilter.apply_deformation(st.x, st.h0, deform, pack.frame)
        return log_f, deform, positions, cell

    def _symmetrize(self, pack: Packed, cell: torch.Tensor, out: dict) -> None:
        """ASE's FixSymmetry.adjust_forces / adjust_stress on the model's results, in place."""
        key = tuple(pack.state.index.tolist())
        if self._batch_symmetry is None or self._batch_symmetry[0] != key:
            ops = [self.symmetry[i] for i in key]
            self._batch_symmetry = (key, BatchSymmetry.build(ops, pack.starts(), torch.float64, self.device))
        sym = self._batch_symmetry[1]
        periodic = pack.pbc.all(dim=1)
        safe = torch.where(periodic[:, None, None], cell, torch.eye(3, dtype=cell.dtype, device=cell.device))
        out["forces"] = sym.forces(out["forces"], safe, pack.frame)
        out["stress"] = torch.where(periodic[:, None, None], sym.stress(out["stress"], safe), out["stress"])

    def run(self, progress: bool | None) -> list[RelaxResult]:
        pending = deque(self.accepted)
        pack: Packed | None = None
        quiet = None if progress is None else not progress
        bar = tqdm(total=len(self.accepted), desc="relax", unit="structure", disable=quiet)
        while pending or (pack is not None and pack.n_systems):
            pack = self._admit(pack, pending)
            log_f, deform, positions, cell = self._geometry(pack)
            refresh_neighbors(pack, positions, cell, self.cutoff, self.skin)
            batch = make_batch(pack, positions, cell, self.cutoff, self.skin, self.runner.dtype, self.prune)
            st = pack.state
            need_stress = bool(st.cell_mask.any()) or self.want_trajectory
            out = self.runner(batch, compute_stress=need_stress)
            if self.cell.fix_symmetry:
                self._symmetrize(pack, cell, out)
            volume = torch.linalg.det(cell).abs()
            f_atom, f_cell = cellfilter.filter_forces(
                out["forces"], out["stress"], volume, log_f, deform, st.exp_cell_factor, st.cell_mask, pack.frame,
                st.mask, self.cell.hydrostatic_strain, self.cell.scalar_pressure,
            )
            fmax = cellfilter.max_force(f_atom, f_cell, pack.frame)
            finite = torch.isfinite(out["energy"]) & torch.isfinite(fmax)
            done = (fmax < self.fmax) | (st.steps >= self.max_steps) | ~finite
            if self.want_trajectory:
                self._record(pack, positions, cell, out)
            if bool(done.any()):
                self._finish(pack, done, positions, cell, out, fmax, finite)
                bar.update(int(done.sum()))
                keep = ~done
                f_atom, f_cell = f_atom[keep[pack.frame]], f_cell[keep]
                pack = pack.select(keep)
            if pack.n_systems == 0:
                continue
            st = pack.state
            st.x, st.c = self.optimizer.step(st.optimizer, pack.frame, st.x, st.c, f_atom, f_cell)
            st.c = cellfilter.project_masked(st.c, st.exp_cell_factor, st.mask, st.cell_mask)
            st.steps = st.steps + 1
        bar.close()
        return self.results

    def _split(self, pack: Packed, positions: torch.Tensor, cell: torch.Tensor, out: dict, systems: list[int]):
        """Per-system numpy views of the current geometry and results."""
        starts = pack.starts()
        pos, cel = positions.cpu().numpy(), cell.cpu().numpy()
        forces, energy, stress = out["forces"].cpu().numpy(), out["energy"].cpu().numpy(), out["stress"].cpu().numpy()
        index = pack.state.index.tolist()
        for s in systems:
            a, b = starts[s], starts[s + 1]
            yield s, index[s], pos[a:b], cel[s], float(energy[s]), forces[a:b].copy(), stress[s].copy()

    def _record(self, pack: Packed, positions, cell, out) -> None:
        rows = self._split(pack, positions, cell, out, range(pack.n_systems))
        for _, index, pos, cel, energy, forces, stress in rows:
            frame = snapshot(self.atoms[index], pos, cel, energy, forces, stress)
            self.trajectories.setdefault(index, []).append(as_input_type(self.inputs[index], frame))

    def _finish(self, pack: Packed, done, positions, cell, out, fmax, finite) -> None:
        systems = torch.nonzero(done).flatten().tolist()
        fmax_np, finite_np = fmax.cpu().numpy(), finite.cpu().numpy()
        steps, converged_np = pack.state.steps.tolist(), (fmax < self.fmax).cpu().numpy()
        for s, index, pos, cel, energy, forces, stress in self._split(pack, positions, cell, out, systems):
            final = snapshot(self.atoms[index], pos, cel, energy, forces, stress)
            error = None
            if not finite_np[s]:
                error = f"non-finite energy or forces after {steps[s]} steps"
                logger.warning("structure %d (%s): %s", index, final.get_chemical_formula(), error)
            self.results[index] = RelaxResult(
                structure=as_input_type(self.inputs[index], final),
                energy=energy,
                forces=forces,
                stress=stress,
                steps=int(steps[s]),
                converged=bool(converged_np[s] and finite_np[s]),
                fmax=float(fmax_np[s]),
                trajectory=self.trajectories.pop(index, None) if self.want_trajectory else None,
                error=error,
            )


def relax_batch(
    structures: Sequence,
    model: Any,
    *,
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
    optimizer: str = "fire",
    optimizer_kwargs: dict | None = None,
    exp_cell_factor: float | None = None,
    mask: Any = None,
    hydrostatic_strain: bool = False,
    scalar_pressure: float = 0.0,
    fix_symmetry: bool = False,
    symprec: float = 0.01,
    allow_untrained_elements: bool = False,
    max_atoms: int = 2048,
    max_edges: int | None = None,
    skin: float = 1.0,
    prune: bool = True,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    compile: bool = False,
    trajectory: bool = False,
    progress: bool | None = None,
) -> list[RelaxResult]:
    """Relax many structures together, each exactly as ASE's optimiser on ``FrechetCellFilter`` would.

    Args:
        structures: ASE ``Atoms`` and/or pymatgen ``Structure``/``Molecule`` objects (never modified). An input
            that cannot be evaluated gets its own error result (:class:`RelaxResult` ``error``); the others run.
        model: a DPA4 model (or any model with its interface, DEVELOPING.md) or a checkpoint path.
        fmax: convergence threshold on ASE's filter measure (eV/A; atom rows and cell rows).
        max_steps: most optimiser steps per structure.
        relax_cell: relax the cell of periodic structures (FrechetCellFilter); molecules never relax a cell.
        optimizer: ``"fire"`` (ASE FIRE) or ``"lbfgs"`` (ASE LBFGS, no line search); ``optimizer_kwargs`` take
            ASE's parameter names (``maxstep``, ``dt``, ``memory``, ...).
        exp_cell_factor: FrechetCellFilter's scaling of the cell degrees of freedom; default (ASE) the number of
            atoms of each structure.
        mask: strain components that relax, as ``FrechetCellFilter(mask=...)``: 6 Voigt or 3x3 flags (e.g.
            ``[1, 1, 0, 0, 0, 1]``: in-plane only). Non-periodic directions (slabs: pbc T, T, F) are always masked.
        hydrostatic_strain: only hydrostatic cell deformation (ASE's option).
        scalar_pressure: external pressure (eV/A^3, as ASE; 1 GPa = 0.00624 eV/A^3); the relaxation minimises
            ``E + pV``; ``RelaxResult.energy`` stays ``E``.
        fix_symmetry: keep each periodic structure's space group, as ASE's ``FixSymmetry(atoms, symprec)``
            constraint (the structure is first refined to it with ``symprec``, in A).
        allow_untrained_elements: evaluate structures with elements outside the model's training set (with a
            warning) instead of giving them an ``UntrainedElementError`` result.
        max_atoms: atom budget of one batch; a structure larger than the budget runs alone.
        max_edges: optional edge budget (skin edges) of one batch.
        skin: extra neighbour-list radius (A); lists are rebuilt only for systems that may have a new pair.
        prune: drop skin edges beyond the model cutoff before each call (same result, less model work).
        dtype: model precision, "float32" (default) or "float64"; the optimiser state is always float64.
        device: torch device.
        compile: run the model through ``torch.compile`` (falls back to eager with one warning).
        trajectory: keep every evaluated geometry in ``RelaxResult.trajectory``.
        progress: tqdm bar over structures; None = only on a terminal.

    Returns:
        One :class:`RelaxResult` per input, in input order.
    """
    if not structures:
        return []
    if not (fmax > 0):
        raise BatchSetupError(f"fmax must be > 0 eV/A, got {fmax!r}")
    if int(max_steps) < 0:
        raise BatchSetupError(f"max_steps must be >= 0, got {max_steps!r}")
    if not (np.isfinite(skin) and skin >= 0):
        raise BatchSetupError(f"skin must be a finite number >= 0 A, got {skin!r}")
    if int(max_atoms) < 1 or (max_edges is not None and int(max_edges) < 1):
        raise BatchSetupError(f"max_atoms and max_edges must be >= 1, got {max_atoms!r}, {max_edges!r}")
    cell = cellfilter.CellOptions(bool(relax_cell), exp_cell_factor, mask, bool(hydrostatic_strain),
                                  scalar_pressure, bool(fix_symmetry), symprec)
    if isinstance(model, ModelRunner):
        runner = model
    else:
        runner = ModelRunner(model, device=device, dtype=dtype, compile=compile)
    opt = make_optimizer(optimizer, **(optimizer_kwargs or {}))
    relaxer = _Relaxer(structures, runner, opt, float(fmax), int(max_steps), cell, int(max_atoms), max_edges,
                       float(skin), bool(prune), bool(trajectory), bool(allow_untrained_elements))
    return relaxer.run(progress)
