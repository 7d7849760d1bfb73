"""Batched Langevin NVT for quick stability checks of many candidates at once.

Integrator: BAOAB Langevin (Leimkuhler and Matthews, 2013): half kick, half drift, exact Ornstein-Uhlenbeck
velocity update ``v <- c1 v + sqrt((1 - c1^2) kT / m) xi`` with ``c1 = exp(-friction dt)``, half drift, force call,
half kick. One force call per step for the whole batch; neighbour lists are reused within the skin. Units are
ASE's (eV, A, amu, time step in fs, friction in 1/fs).

The stability summary per structure: the largest displacement of any atom from its start (unwrapped, A), the
slope of the potential energy per atom over the second half of the run (eV/atom/ps; near zero once the
structure sits in a basin), the closest approach of two atoms, and ``intact``: everything finite, no atom moved
more than ``max_displacement`` and no pair came closer than ``min_distance_ratio`` times the initial closest pair.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ase import units
from tqdm.auto import tqdm

from dpa4_core.dynamics.relax import _output_like, _snapshot
from dpa4_core.dynamics.runner import BatchSetupError, ModelRunner
from dpa4_core.dynamics.state import Packed, build_edges, make_batch, refresh_neighbors
from dpa4_core.data.batch import to_atoms, validate_atoms

logger = logging.getLogger(__name__)


@dataclass
class MDResult:
    """Stability summary of one structure after :func:`md_batch` (see module docstring).

    Attributes:
        structure: final structure, same type as the input (positions wrapped back into the cell if periodic).
        max_displacement: largest displacement of an atom from its start (A).
        epot_initial, epot_final: potential energy per atom at the start and the end (eV/atom).
        epot_drift: slope of the potential energy per atom over the second half (eV/atom/ps).
        temperature: mean kinetic temperature over the second half (K).
        min_distance: closest approach of two atoms during the run (A; inf for a single isolated atom).
        intact: finite, displacement and distance criteria met.
        trajectory: structures every ``trajectory_interval`` steps, if requested.
    """

    structure: Any
    max_displacement: float
    epot_initial: float
    epot_final: float
    epot_drift: float
    temperature: float
    min_distance: float
    intact: bool
    trajectory: list | None = None


def _min_distance(batch, n_systems: int) -> torch.Tensor:
    """Closest pair per system from the model's edges ``[F]`` (inf where a system has no edge)."""
    dist = batch.edge_vectors().norm(dim=1).to(torch.float64)
    out = torch.full((n_systems,), float("inf"), dtype=torch.float64, device=dist.device)
    return out.scatter_reduce(0, batch.frame[batch.edge_dst], dist, reduce="amin", include_self=True)


def _all_atoms(flags: torch.Tensor, frame: torch.Tensor, n_systems: int) -> torch.Tensor:
    """``[F]`` True where every atom's flag ``[N]`` is True."""
    bad = torch.zeros(n_systems, dtype=torch.long, device=flags.device).index_add(0, frame, (~flags).long())
    return bad == 0


def _chunks(sizes: list[int], max_atoms: int) -> list[list[int]]:
    chunks, current, total = [], [], 0
    for i, n in enumerate(sizes):
        if current and total + n > max_atoms:
            chunks.append(current)
            current, total = [], 0
        current.append(i)
        total += n
    if current:
        chunks.append(current)
    return chunks


def md_batch(
    structures: Sequence,
    model: Any,
    *,
    temperature: float = 300.0,
    steps: int = 1000,
    timestep: float = 2.0,
    friction: float = 0.01,
    seed: int = 0,
    max_atoms: int = 2048,
    skin: float = 1.0,
    max_displacement: float = 2.0,
    min_distance_ratio: float = 0.5,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    compile: bool = False,
    trajectory_interval: int = 0,
    progress: bool | None = None,
) -> list[MDResult]:
    """Langevin NVT of many structures in one batched force call per step (fixed cells).

    Args:
        structures: ASE Atoms and/or pymatgen structures (never modified).
        model: a DPA4 model or a checkpoint path.
        temperature: target temperature (K). Initial velocities: the structure's own momenta if it has any
            (ASE Atoms), else Maxwell-Boltzmann at this temperature with zero total momentum.
        steps: MD steps; timestep: fs; friction: Langevin friction (1/fs).
        seed: seed of the private random generator (results are reproducible for the same batch).
        max_atoms: atom budget of one batch (structures are run in consecutive chunks).
        skin: neighbour-list skin (A).
        max_displacement, min_distance_ratio: the ``intact`` criteria (see module docstring).
        dtype, device, compile: as in :func:`dpa4_core.dynamics.relax_batch`.
        trajectory_interval: keep a snapshot every this many steps (0 = none).
        progress: tqdm bar over steps; None = only on a terminal.

    Returns:
        One :class:`MDResult` per input, in input order.
    """
    if not structures:
        return []
    if not (temperature >= 0 and timestep > 0 and friction >= 0 and int(steps) >= 1):
        raise BatchSetupError(
            f"need temperature >= 0 K, timestep > 0 fs, friction >= 0 1/fs and steps >= 1; got "
            f"{temperature!r}, {timestep!r}, {friction!r}, {steps!r}"
        )
    if isinstance(model, ModelRunner):
        runner = model
    else:
        runner = ModelRunner(model, device=device, dtype=dtype, compile=compile)
    atoms_list = [to_atoms(s) for s in structures]
    for i, atoms in enumerate(atoms_list):
        validate_atoms(atoms, label=f"structure {i}")
    generator = torch.Generator(device=runner.device).manual_seed(int(seed))
    results: list[MDResult | None] = [None] * len(atoms_list)
    quiet = None if progress is None else not progress
    bar = tqdm(total=int(steps) * len(atoms_list), desc="md", unit="structure-step", disable=quiet)
    for chunk in _chunks([len(a) for a in atoms_list], int(max_atoms)):
        out = _run_chunk([atoms_list[i] for i in chunk], runner, generator, float(temperature), int(steps),
                         float(timestep), float(friction), float(skin), int(trajectory_interval), bar)
        for local, index in enumerate(chunk):
            summary = out[local]
            finite, closest0 = summary.pop("finite"), summary.pop("min_distance_initial")
            summary["intact"] = bool(
                finite
                and summary["max_displacement"] < max_displacement
                and summary["min_distance"] >= min_distance_ratio * closest0
            )
            summary["structure"] = _output_like(structures[index], summary["structure"])
            if summary["trajectory"] is not None:
                summary["trajectory"] = [_output_like(structures[index], a) for a in summary["trajectory"]]
            results[index] = MDResult(**summary)
    bar.close()
    return results


def _run_chunk(atoms_list, runner: ModelRunner, generator, temperature, steps, timestep, friction, skin, interval, bar):
    device, f64 = runner.device, dict(dtype=torch.float64, device=runner.device)
    packs = []
    for atoms in atoms_list:
        periodic = bool(np.asarray(atoms.pbc).all())
        cell = atoms.cell.array if periodic else np.zeros((3, 3))
        pos = torch.as_tensor(atoms.positions, **f64)
        packs.append(Packed(
            atom={"numbers": torch.as_tensor(atoms.numbers, dtype=torch.long, device=device), "ref_pos": pos.clone(),
                  "mass": torch.as_tensor(atoms.get_masses(), **f64)},
            system={"n_atoms": torch.tensor([len(atoms)], device=device),
                    "pbc": torch.as_tensor(np.asarray(atoms.pbc, bool)[None], device=device),
                    "ref_cell": torch.as_tensor(cell[None], **f64)},
            edges=[build_edges(atoms.positions, cell, np.asarray(atoms.pbc, bool), runner.cutoff + skin)],
        ))
    pack = Packed.concat(packs)
    frame, n_sys = pack.frame, pack.n_systems
    cell = pack.system["ref_cell"].clone()
    mass = pack.atom["mass"][:, None]
    counts = pack.system["n_atoms"].to(torch.float64)
    x = pack.atom["ref_pos"].clone()
    start = x.clone()
    kt = units.kB * temperature
    # Maxwell-Boltzmann velocities, zero momentum per system (A / ASE time unit).
    v = torch.randn(x.shape, generator=generator, **f64) * torch.sqrt(kt / mass)
    momentum = torch.zeros(n_sys, 3, **f64).index_add(0, frame, mass * v)
    v = v - (momentum / torch.zeros(n_sys, **f64).index_add(0, frame, mass[:, 0])[:, None])[frame]
    given = [atoms.get_momenta() / atoms.get_masses()[:, None] for atoms in atoms_list]
    has_own = torch.as_tensor([bool(g.any()) for g in given], device=device)
    v = torch.where(has_own[frame, None], torch.as_tensor(np.concatenate(given), **f64), v)
    dt = timestep * units.fs
    c1 = float(np.exp(-friction * timestep))
    noise = torch.sqrt((1 - c1 * c1) * kt / mass)

    def forces_at(positions):
        refresh_neighbors(pack, positions, cell, runner.cutoff, skin)
        batch = make_batch(pack, positions, cell, runner.cutoff, skin, runner.dtype, prune=True)
        return runner(batch, compute_stress=False), _min_distance(batch, n_sys)

    out, closest = forces_at(x)
    min_initial, min_seen = closest.clone(), closest.clone()
    finite = torch.isfinite(out["energy"])
    epot = [out["energy"] / counts]
    kinetic = []
    snapshots = [[] for _ in range(n_sys)] if interval else None
    alive = finite.clone()
    for step in range(1, steps + 1):
        x_old = x
        v = v + 0.5 * dt * out["forces"] / mass
        x = x + 0.5 * dt * v
        v = c1 * v + noise * torch.randn(x.shape, generator=generator, **f64)
        x = x + 0.5 * dt * v
        # A system that blew up (non-finite positions) is frozen where it last was finite and reported broken.
        alive &= _all_atoms(torch.isfinite(x).all(dim=1), frame, n_sys)
        x = torch.where(alive[frame, None], x, x_old)
        v = torch.where(alive[frame, None], v, torch.zeros_like(v))
        out, closest = forces_at(x)
        alive &= torch.isfinite(out["energy"]) & _all_atoms(torch.isfinite(out["forces"]).all(dim=1), frame, n_sys)
        out["forces"] = torch.where(alive[frame, None], out["forces"], torch.zeros_like(out["forces"]))
        v = v + 0.5 * dt * out["forces"] / mass
        min_seen = torch.minimum(min_seen, closest)
        finite &= alive
        epot.append(out["energy"] / counts)
        ke = torch.zeros(n_sys, **f64).index_add(0, frame, 0.5 * (mass * v * v).sum(dim=1))
        kinetic.append(ke)
        if interval and step % interval == 0:
            _append_snapshots(snapshots, atoms_list, pack, x, cell)
        bar.update(n_sys)
    epot_t = torch.stack(epot).cpu().numpy()  # [steps + 1, F]
    ke_t = torch.stack(kinetic).cpu().numpy()
    disp = ((x - start) ** 2).sum(dim=1).sqrt()
    disp_max = torch.zeros(n_sys, **f64).scatter_reduce(0, frame, disp, reduce="amax", include_self=True).cpu().numpy()
    finite_np = finite.cpu().numpy() & np.isfinite(disp_max)
    half = steps // 2
    times_ps = np.arange(half, steps + 1) * timestep / 1000.0
    summaries = []
    starts = np.concatenate([[0], np.cumsum(pack.system["n_atoms"].tolist())]).astype(np.int64)
    x_np, cell_np = x.cpu().numpy(), cell.cpu().numpy()
    for s, atoms in enumerate(atoms_list):
        series = epot_t[half:, s]
        usable = len(series) > 1 and np.isfinite(series).all()
        slope = float(np.polyfit(times_ps, series, 1)[0]) if usable else float("nan")
        dof = max(3 * len(atoms) - 3, 1)
        final = _snapshot(atoms, x_np[starts[s]:starts[s + 1]], cell_np[s])
        if atoms.pbc.all():
            final.wrap()
        summaries.append({
            "structure": final,
            "max_displacement": float(disp_max[s]),
            "epot_initial": float(epot_t[0, s]),
            "epot_final": float(epot_t[-1, s]),
            "epot_drift": slope,
            "temperature": float(2 * ke_t[max(half - 1, 0):, s].mean() / (dof * units.kB)),
            "min_distance": float(min_seen[s]),
            "min_distance_initial": float(min_initial[s]),
            "finite": bool(finite_np[s] and np.isfinite(epot_t[:, s]).all()),
            "trajectory": snapshots[s] if snapshots is not None else None,
        })
    return summaries


def _append_snapshots(snapshots, atoms_list, pack, x, cell) -> None:
    starts = np.concatenate([[0], np.cumsum(pack.system["n_atoms"].tolist())]).astype(np.int64)
    x_np, cell_np = x.cpu().numpy(), cell.cpu().numpy()
    for s, atoms in enumerate(atoms_list):
        snapshots[s].append(_snapshot(atoms, x_np[starts[s]:starts[s + 1]], cell_np[s]))
