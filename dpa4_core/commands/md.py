"""``dpa4 md STRUCTURE --model CKPT``: molecular dynamics of one structure through ASE's integrators
(:func:`dpa4_core.dynamics.run_md`, every ensemble of :mod:`dpa4_core.dynamics.ensembles`), a progress bar on
stderr, an optional extxyz trajectory, and a final summary of temperature and energies. Exit 1 if the run blew up
(non-finite energies)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from dpa4_core.commands.common import (
    StructureFileError,
    add_command,
    format_table,
    print_json,
    progress,
    read_structures,
)


def summary(log, n_atoms: int, ensemble: str) -> dict:
    """Final and second-half-mean temperature, final potential and total energy per atom, total-energy drift."""
    data = log.as_arrays()
    half = data["temperature"][len(data["temperature"]) // 2:]
    etot = data["etot"] / n_atoms
    return {
        "ensemble": ensemble, "atoms": n_atoms, "time_fs": float(data["time"][-1]),
        "temperature_final_k": float(data["temperature"][-1]), "temperature_mean_k": float(half.mean()),
        "epot_final_ev_per_atom": float(data["epot"][-1] / n_atoms),
        "etot_initial_ev_per_atom": float(etot[0]), "etot_final_ev_per_atom": float(etot[-1]),
        "etot_drift_mev_per_atom": float(1000.0 * (etot[-1] - etot[0])),
        "volume_final_a3": float(data["volume"][-1]) or None,
    }


def _write_extxyz_trajectory(traj: Path, out: Path) -> None:
    import ase.io

    ase.io.write(out, ase.io.read(traj, index=":"), format="extxyz")


def _cmd_md(args) -> int:
    from dpa4_core.dynamics import parse_ensemble, run_md
    from dpa4_core.dynamics.ase_md import MDSetupError

    images = read_structures(args.structure)
    if not -len(images) <= args.index < len(images):
        raise StructureFileError(f"{args.structure}: has {len(images)} structure(s), no index {args.index}")
    atoms = images[args.index]
    atoms.calc = None
    ensemble = parse_ensemble(args.ensemble, MDSetupError)
    out = Path(args.traj) if args.traj else None
    ase_traj = out if out is not None and out.suffix == ".traj" else None
    scratch = None
    if out is not None and ase_traj is None:  # ASE writes .traj; converted to extxyz at the end
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(suffix=".traj", dir=out.parent)
        os.close(handle)
        ase_traj = Path(scratch)
    try:
        extra = {"friction": args.friction} if args.friction is not None else {}
        final, log = run_md(atoms, str(args.model), ensemble, args.steps, timestep=args.timestep,
                            temperature=args.temperature, seed=args.seed, loginterval=args.interval,
                            trajectory=None if ase_traj is None else str(ase_traj), dtype=args.dtype,
                            device=args.device, progress=progress(args), **extra)
        if scratch is not None:
            _write_extxyz_trajectory(ase_traj, out)
    finally:
        if scratch is not None:
            Path(scratch).unlink(missing_ok=True)
    result = summary(log, len(final), ensemble.value)
    if args.json:
        print_json(result)
    else:
        print(format_table(["quantity", "value"], [(k, v) for k, v in result.items() if v is not None], digits=4))
    finite = all(math.isfinite(v) for v in (result["epot_final_ev_per_atom"], result["etot_final_ev_per_atom"]))
    return 0 if finite and np.isfinite(final.positions).all() else 1


def register(sub) -> None:
    """Add ``md``."""
    from dpa4_core.dynamics.ensembles import ALIASES, ENSEMBLES

    p = add_command(sub, "md", "molecular dynamics of one structure (ASE integrators, DPA4 forces)", [
        "dpa4 md POSCAR --model best.pt --temperature 600 --steps 2000",
        "dpa4 md cell.extxyz --model best.pt --ensemble nve --timestep 1 --steps 500 --traj nve.extxyz",
        "dpa4 md mp-149.json --model best.pt --ensemble npt --temperature 300 --json",
    ])
    p.add_argument("structure", help="structure file: anything ase.io.read reads, or pymatgen JSON")
    p.add_argument("--model", required=True, help="DPA4 checkpoint (.pt)")
    p.add_argument("--index", type=int, default=0, help="which structure of a multi-frame file (default 0)")
    p.add_argument("--ensemble", default="nvt", choices=[*ENSEMBLES, *ALIASES],
                   help="default nvt (Langevin)")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300; also the initial "
                   "Maxwell-Boltzmann velocities)")
    p.add_argument("--steps", type=int, default=1000, help="MD steps (default 1000)")
    p.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    p.add_argument("--friction", type=float, default=None, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--interval", type=int, default=10, help="log and trajectory interval in steps (default 10)")
    p.add_argument("--traj", default=None, help="trajectory file: .extxyz (or .xyz), or ASE .traj")
    p.add_argument("--seed", type=int, default=0, help="seed of the velocities and the thermostat noise")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_md)
