"""Batched MD (Langevin NVT, or NVE) for quick stability checks of many candidates at once.

The many-system member of the MD family: one system at a time through ASE's integrators is
:func:`dpa4_core.dynamics.ase_md.run_md`, the atomate2 job is ``dpa4_flows.jobs.md.DPA4MDMaker``; all three take
the ensemble names of :mod:`dpa4_core.dynamics.ensembles`. This engine runs ``nvt_langevin`` and ``nve`` (the
same integrator with zero friction, which is velocity Verlet).

Integrator: BAOAB Langevin (Leimkuhler and Matthews, 2013): half kick, half drift, exact Ornstein-Uhlenbeck
velocity update ``v <- c1 v + sqrt((1 - c1^2) kT / m) xi`` with ``c1 = exp(-friction dt)``, half drift, force call,
half kick. One force call per step for the whole batch; neighbour lists are reused within the skin. Units are
ASE's (eV, A, amu, time step in fs, friction in 1/fs).

The stability summary per structure: the largest displacement of any atom from its start (unwrapped, A), the
slope of the potential energy per atom over the second half of the run (eV/atom/ps; near zero once the
structure sits in a basin), the closest approach of two atoms, and ``intact``: everything finite, no atom moved
more than ``max_displacement`` and no pair came closer than ``min_distance_ratio`` times the initial closest pair.
An input the model cannot or must not evaluate gets its own error result (see :mod:`dpa4_core.dynamics.inputs`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from tqdm.auto import tqdm

from dpa4_core.dynamics.ensembles import BATCHED, Ensemble, parse_ensemble
from dpa4_core.dynamics.inputs import admit
from dpa4_core.dynamics.runner import BatchSetupError, ModelRunner
from dpa4_core.dynamics.snapshot import as_input_type, snapshot
from dpa4_core.dynamics.state import Packed, build_edges, make_batch, refresh_neighbors

logger = logging.getLogger(__name__)


@dataclass
class MDResult:
    """Stability summary of one structure after :func:`md_batch` (see module docstring).

    Attributes:
        structure: final structure, same type as the input (positions wrapped back into the cell if periodic); the
            input itself, unchanged, for a refused input.
        max_displacement: largest displacement of an atom from its start (A).
        epot_initial, epot_final: potential energy per atom at the start and the end (eV/atom).
        epot_drift: slope of the potential energy per atom over the second half (eV/atom/ps).
        temperature: mean kinetic temperature over the second half (K).
        min_distance: closest approach of two atoms during the run (A; inf for a single isolated atom).
        intact: finite, displacement and distance criteria met.
        trajectory: structures every ``trajectory_interval`` steps, if requested.
        error: None, or why the input was refused (``"<ErrorType>: <message>"``); then every number is NaN and
            ``intact`` is False.
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
    error: str | None = None


@dataclass(frozen=True)
class MDSettings:
    """The run parameters of :func:`md_batch`, checked (units: K, fs, 1/fs, A)."""

    temperature: float
    steps: int
    timestep: float
    friction: float
    skin: float
    max_displacement: float
    min_distance_ratio: float
    trajectory_interval: int


@dataclass
class MDState:
    """BAOAB state of the systems of one chunk (float64; ``N`` atoms, ``F`` systems).

    Attributes:
        x: ``[N, 3]`` positions (A, unwrapped). v: ``[N, 3]`` velocities (A per ASE time unit).
        start: ``[N, 3]`` positions at the start. mass: ``[N, 1]`` (amu).
        alive: ``[F]`` everything finite so far (a system that blew up is frozen where it last was finite).
        min_initial, min_seen: ``[F]`` closest pair at the start and over the run (A).
    """

    x: torch.Tensor
    v: torch.Tensor
    start: torch.Tensor
    mass: torch.Tensor
    alive: torch.Tensor
    min_initial: torch.Tensor
    min_seen: torch.Tensor


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
    ensemble: str | Ensemble = "nvt_langevin",
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
    allow_untrained_elements: bool = False,
) -> list[MDResult]:
    """MD of many structures in one batched force call per step (fixed cells).

    Args:
        structures: ASE Atoms and/or pymatgen structures (never modified).
        model: a DPA4 model or a checkpoint path.
        ensemble: ``"nvt_langevin"`` (default, alias ``"nvt"``) or ``"nve"`` (``friction`` is then 0); the other
            names of :mod:`dpa4_core.dynamics.ensembles` need :func:`dpa4_core.dynamics.run_md`.
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
        allow_untrained_elements: run structures with elements outside the model's training set (with a warning)
            instead of giving them an ``UntrainedElementError`` result.

    Returns:
        One :class:`MDResult` per input, in input order.
    """
    chosen = parse_ensemble(ensemble, BatchSetupError)
    if chosen not in BATCHED:
        raise BatchSetupError(
            f"md_batch runs the ensembles {', '.join(e.value for e in BATCHED)}, not {chosen.value!r}; "
            "use dpa4_core.dynamics.run_md for it"
        )
    if not structures:
        return []
    if not (temperature >= 0 and timestep > 0 and friction >= 0 and int(steps) >= 1):
        raise BatchSetupError(
            f"need temperature >= 0 K, timestep > 0 fs, friction >= 0 1/fs and steps >= 1; got "
            f"{temperature!r}, {timestep!r}, {friction!r}, {steps!r}"
        )
    settings = MDSettings(
        temperature=float(temperature), steps=int(steps), timestep=float(timestep),
        friction=0.0 if chosen is Ensemble.NVE else float(friction), skin=float(skin),
        max_displacement=float(max_displacement), min_distance_ratio=float(min_distance_ratio),
        trajectory_interval=int(trajectory_interval),
    )
    if isinstance(model, ModelRunner):
        runner = model
    else:
        runner = ModelRunner(model, device=device, dtype=dtype, compile=compile)
    admitted = admit(structures, runner.model, allow_untrained_elements)
    atoms_list, accepted = admitted.atoms, admitted.accepted
    nan = float("nan")
    results: list[MDResult | None] = [
        None if error is None else MDResult(structure=s, max_displacement=nan, epot_initial=nan, epot_final=nan,
                                            epot_drift=nan, temperature=nan, min_distance=nan, intact=False,
                                            error=error)
        for s, error in zip(structures, admitted.errors)
    ]
    generator = torch.Generator(device=runner.device).manual_seed(int(seed))
    quiet = None if progress is None else not progress
    bar = tqdm(total=settings.steps * len(accepted), desc="md", unit="structure-step", disable=quiet)
    for chunk in _chunks([len(atoms_list[i]) for i in accepted], int(max_atoms)):
        chunk = [accepted[k] for k in chunk]
        out = _run_chunk([atoms_list[i] for i in chunk], runner, generator, settings, bar)
        for local, index in enumerate(chunk):
            result = out[local]
            result.structure = as_input_type(structures[index], result.structure)
            if result.trajectory is not None:
                result.trajectory = [as_input_type(structures[index], a) for a in result.trajectory]
            results[index] = result
    bar.close()
    return results


def _pack(atoms_list: list[Atoms], runner: ModelRunner, skin: float) -> Packed:
    device, f64 = runner.device, dict(dtype=torch.float64, device=runner.device)
    packs = []
    for atoms in atoms_list:
        pbc = np.asarray(atoms.pbc, bool)
        cell = atoms.cell.array if pbc.any() else np.zeros((3, 3))
        packs.append(Packed(
            numbers=torch.as_tensor(atoms.numbers, dtype=torch.long, device=device),
            ref_pos=torch.as_tensor(atoms.positions, **f64),
            n_atoms=torch.tensor([len(atoms)], device=device),
            pbc=torch.as_tensor(pbc[None], device=device),
            ref_cell=torch.as_tensor(cell[None], **f64),
            edges=[build_edges(atoms.positions, cell, pbc, runner.cutoff + skin)],
        ))
    return Packed.concat(packs)


def _initial_velocities(atoms_list, pack: Packed, mass, kt: float, generator) -> torch.Tensor:
    """Maxwell-Boltzmann velocities with zero momentum per system, or a structure's own (A / ASE time unit)."""
    frame, n_sys, f64 = pack.frame, pack.n_systems, dict(dtype=torch.float64, device=mass.device)
    v = torch.randn(mass.shape[0], 3, generator=generator, **f64) * torch.sqrt(kt / mass)
    momentum = torch.zeros(n_sys, 3, **f64).index_add(0, frame, mass * v)
    v = v - (momentum / torch.zeros(n_sys, **f64).index_add(0, frame, mass[:, 0])[:, None])[frame]
    given = [atoms.get_momenta() / atoms.get_masses()[:, None] for atoms in atoms_list]
    has_own = torch.as_tensor([bool(g.any()) for g in given], device=mass.device)
    return torch.where(has_own[frame, None], torch.as_tensor(np.concatenate(given), **f64), v)


def _run_chunk(atoms_list, runner: ModelRunner, generator, cfg: MDSettings, bar) -> list[MDResult]:
    f64 = dict(dtype=torch.float64, device=runner.device)
    pack = _pack(atoms_list, runner, cfg.skin)
    frame, n_sys = pack.frame, pack.n_systems
    cell = pack.ref_cell.clone()
    mass = torch.as_tensor(np.concatenate([a.get_masses() for a in atoms_list]), **f64)[:, None]
    counts = pack.n_atoms.to(torch.float64)
    kt = units.kB * cfg.temperature
    x = pack.ref_pos.clone()
    v = _initial_velocities(atoms_list, pack, mass, kt, generator)
    dt = cfg.timestep * units.fs
    c1 = float(np.exp(-cfg.friction * cfg.timestep))
    noise = torch.sqrt((1 - c1 * c1) * kt / mass)

    def forces_at(positions):
        refresh_neighbors(pack, positions, cell, runner.cutoff, cfg.skin)
        batch = make_batch(pack, positions, cell, runner.cutoff, cfg.skin, runner.dtype, prune=True)
        return runner(batch, compute_stress=False), _min_distance(batch, n_sys)

    out, closest = forces_at(x)
    st = MDState(x=x, v=v, start=x.clone(), mass=mass, alive=torch.isfinite(out["energy"]),
                 min_initial=closest.clone(), min_seen=closest.clone())
    epot, kinetic = [out["energy"] / counts], []
    snapshots = [[] for _ in range(n_sys)] if cfg.trajectory_interval else None
    for step in range(1, cfg.steps + 1):
        x_old = st.x
        v = st.v + 0.5 * dt * out["forces"] / mass
        x = st.x + 0.5 * dt * v
        v = c1 * v + noise * torch.randn(x.shape, generator=generator, **f64)
        x = x + 0.5 * dt * v
        # A system that blew up (non-finite positions) is frozen where it last was finite and reported broken.
        st.alive &= _all_atoms(torch.isfinite(x).all(dim=1), frame, n_sys)
        st.x = torch.where(st.alive[frame, None], x, x_old)
        v = torch.where(st.alive[frame, None], v, torch.zeros_like(v))
        out, closest = forces_at(st.x)
        st.alive &= torch.isfinite(out["energy"]) & _all_atoms(torch.isfinite(out["forces"]).all(dim=1), frame, n_sys)
        out["forces"] = torch.where(st.alive[frame, None], out["forces"], torch.zeros_like(out["forces"]))
        st.v = v + 0.5 * dt * out["forces"] / mass
        st.min_seen = torch.minimum(st.min_seen, closest)
        epot.append(out["energy"] / counts)
        kinetic.append(torch.zeros(n_sys, **f64).index_add(0, frame, 0.5 * (mass * st.v * st.v).sum(dim=1)))
        if snapshots is not None and step % cfg.trajectory_interval == 0:
            _append_snapshots(snapshots, atoms_list, pack, st.x, cell)
        bar.update(n_sys)
    return _summaries(atoms_list, pack, st, cell, torch.stack(epot).cpu().numpy(),
                      torch.stack(kinetic).cpu().numpy(), snapshots, cfg)


def _summaries(atoms_list, pack: Packed, st: MDState, cell, epot_t, ke_t, snapshots, cfg: MDSettings):
    """One :class:`MDResult` (structure as ASE Atoms) per system; ``epot_t [steps + 1, F]``, ``ke_t [steps, F]``."""
    frame, n_sys = pack.frame, pack.n_systems
    disp = ((st.x - st.start) ** 2).sum(dim=1).sqrt()
    disp_max = torch.zeros(n_sys, dtype=torch.float64, device=disp.device)
    disp_max = disp_max.scatter_reduce(0, frame, disp, reduce="amax", include_self=True).cpu().numpy()
    finite_np = st.alive.cpu().numpy() & np.isfinite(disp_max)
    half = cfg.steps // 2
    times_ps = np.arange(half, cfg.steps + 1) * cfg.timestep / 1000.0
    starts = pack.starts()
    x_np, cell_np = st.x.cpu().numpy(), cell.cpu().numpy()
    results = []
    for s, atoms in enumerate(atoms_list):
        series = epot_t[half:, s]
        usable = len(series) > 1 and np.isfinite(series).all()
        slope = float(np.polyfit(times_ps, series, 1)[0]) if usable else float("nan")
        dof = max(3 * len(atoms) - 3, 1)
        final = snapshot(atoms, x_np[starts[s]:starts[s + 1]], cell_np[s])
        if atoms.pbc.any():
            final.wrap()
        finite = bool(finite_np[s] and np.isfinite(epot_t[:, s]).all())
        min_distance = float(st.min_seen[s])
        results.append(MDResult(
            structure=final,
            max_displacement=float(disp_max[s]),
            epot_initial=float(epot_t[0, s]),
            epot_final=float(epot_t[-1, s]),
            epot_drift=slope,
            temperature=float(2 * ke_t[max(half - 1, 0):, s].mean() / (dof * units.kB)),
            min_distance=min_distance,
            intact=bool(finite and float(disp_max[s]) < cfg.max_displacement
                        and min_distance >= cfg.min_distance_ratio * float(st.min_initial[s])),
            trajectory=snapshots[s] if snapshots is not None else None,
        ))
    return results


def _append_snapshots(snapshots, atoms_list, pack: Packed, x, cell) -> None:
    starts = pack.starts()
    x_np, cell_np = x.cpu().numpy(), cell.cpu().numpy()
    for s, atoms in enumerate(atoms_list):
        snapshots[s].append(snapshot(atoms, x_np[starts[s]:starts[s + 1]], cell_np[s]))
