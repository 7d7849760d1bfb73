"""``dpa4 relax STRUCTURE... --model CKPT``: relax every structure of the given files (positions and, for periodic
cells, the cell), write the relaxed structures as extxyz and print a table (energy per atom, fmax, steps,
converged, volume change).

The default engine is the batched one (:func:`dpa4_core.dynamics.relax_batch`: many structures per model call,
ASE's FIRE/L-BFGS + FrechetCellFilter step for step); ``--engine ase`` runs ASE's optimiser on one structure at a
time with :class:`~dpa4_core.calculator.DPA4Calculator`. A structure that cannot be relaxed (an untrained element,
atoms on top of each other, a blow-up) gets its error in the table and the others go on; the exit status is 1 if
any structure failed or did not converge. Unreadable or missing files are bad input (exit 2, nothing relaxed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dpa4_core.commands.common import (
    add_command,
    format_table,
    print_json,
    progress,
    read_structures,
    structure_labels,
)

_SINGLE_FILE = (".xyz", ".extxyz")
_VASP_NAMES = ("POSCAR", "CONTCAR", "CENTCAR", "OUTCAR", "XDATCAR")  # ase.io.read takes *POSCAR*.extxyz for VASP


def _ase_relax(structures, args) -> list:
    """ASE's optimiser on each structure in turn (FrechetCellFilter for periodic cells unless ``--no-cell``)."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE, LBFGS
    from tqdm.auto import tqdm

    from dpa4_core.calculator import DPA4Calculator
    from dpa4_core.dynamics import RelaxResult

    calc = DPA4Calculator(args.model, dtype=args.dtype, device=args.device,
                          allow_untrained_elements=args.allow_untrained_elements)
    optimizer = {"fire": FIRE, "lbfgs": LBFGS}[args.optimizer]
    results = []
    for atoms in tqdm(structures, desc="relax", unit="structure", disable=None if progress(args) is None else True):
        atoms = atoms.copy()
        atoms.calc = calc
        try:
            target = FrechetCellFilter(atoms) if args.cell and atoms.pbc.all() else atoms
            opt = optimizer(target, logfile=None)
            converged = bool(opt.run(fmax=args.fmax, steps=args.steps))
            fmax = float(np.sqrt((target.get_forces() ** 2).sum(axis=1)).max())
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            stress = atoms.get_stress(voigt=False) if atoms.pbc.any() else np.zeros((3, 3))
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces,
                                               **({"stress": stress} if atoms.pbc.any() else {}))
            results.append(RelaxResult(atoms, float(energy), forces, stress, int(opt.nsteps), converged, fmax))
        except Exception as exc:  # noqa: BLE001 - one failure must not stop the others (it is in the table)
            results.append(RelaxResult(atoms, None, None, None, 0, False, float("nan"),
                                       error=f"{type(exc).__name__}: {exc}"))
    return results


def _batched_relax(structures, args) -> list:
    from dpa4_core.dynamics import relax_batch

    return relax_batch(structures, args.model, fmax=args.fmax, max_steps=args.steps, relax_cell=args.cell,
                       optimizer=args.optimizer, dtype=args.dtype, device=args.device,
                       progress=progress(args),
                       allow_untrained_elements=args.allow_untrained_elements)


def rows(labels, inputs, results) -> list[dict]:
    """One record per structure: label, atoms, energy per atom, fmax, steps, converged, volume change, error."""
    records = []
    for label, atoms, result in zip(labels, inputs, results):
        ok = result.error is None
        change = None
        if ok and atoms.pbc.all():
            change = 100.0 * (result.structure.get_volume() / atoms.get_volume() - 1.0)
        records.append({
            "structure": label, "atoms": len(atoms),
            "energy_per_atom_ev": result.energy / len(atoms) if ok and result.energy is not None else None,
            "fmax_ev_per_a": result.fmax if ok else None, "steps": result.steps, "converged": result.converged,
            "volume_change_percent": change, "error": result.error,
        })
    return records


def _output_paths(out: Path, files: list[str]) -> list[Path]:
    """One extxyz per input file in the folder ``out`` (``<stem>_relaxed.extxyz``, numbered if stems repeat;
    VASP names in lower case, ``poscar_relaxed.extxyz``, which ``ase.io.read`` reads as extxyz)."""
    paths, seen = [], set()
    for index, file in enumerate(files):
        stem = Path(file).name.split(".")[0] or "structure"
        stem = stem.lower() if any(name in stem for name in _VASP_NAMES) else stem
        name = f"{stem}_relaxed.extxyz" if stem not in seen else f"{stem}_{index}_relaxed.extxyz"
        seen.add(stem)
        paths.append(out / name)
    return paths


def write_relaxed(out: Path, files: list[str], counts: list[int], labels, results) -> list[Path]:
    """Write the relaxed structures that have no error: all into ``out`` if it names an .xyz/.extxyz file,
    else one file per input into the folder ``out``. Each frame's info holds ``source``, ``converged``,
    ``steps`` and ``fmax``; energy, forces and stress are its calculator results."""
    import ase.io

    frames = []
    for label, result in zip(labels, results):
        atoms = None
        if result.error is None:
            atoms = result.structure
            atoms.info.update(source=label, converged=bool(result.converged), steps=int(result.steps),
                              fmax=float(result.fmax))
        frames.append(atoms)
    if out.suffix.lower() in _SINGLE_FILE:
        out.parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(out, [a for a in frames if a is not None], format="extxyz")
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    written, start = [], 0
    for path, count in zip(_output_paths(out, files), counts):
        chunk = [a for a in frames[start:start + count] if a is not None]
        start += count
        if chunk:
            ase.io.write(path, chunk, format="extxyz")
            written.append(path)
    return written


def _cmd_relax(args) -> int:
    files = [str(f) for f in args.structures]
    per_file = [read_structures(f) for f in files]  # StructureFileError (ValueError): exit 2 before any work
    inputs, labels = [], []
    for file, images in zip(files, per_file):
        for atoms in images:
            atoms.calc = None
        inputs.extend(images)
        labels.extend(structure_labels(file, len(images)))
    results = (_ase_relax if args.engine == "ase" else _batched_relax)(inputs, args)
    records = rows(labels, inputs, results)
    written = write_relaxed(Path(args.out), files, [len(i) for i in per_file], labels, results)
    if args.json:
        print_json({"structures": records, "written": [str(p) for p in written]})
    else:
        headers = ["structure", "atoms", "E/atom (eV)", "fmax (eV/A)", "steps", "converged", "dV (%)", "error"]
        print(format_table(headers, [list(r.values()) for r in records]))
    failed = sum(1 for r in records if r["error"] is not None or not r["converged"])
    if not args.quiet:
        where = ", ".join(str(p) for p in written) or "nothing"
        print(f"dpa4 relax: {len(records) - failed} of {len(records)} structures relaxed; wrote {where}",
              file=sys.stderr)
    return 1 if failed else 0


def register(sub) -> None:
    """Add ``relax``."""
    p = add_command(sub, "relax", "relax structures (positions and cell) and write them as extxyz", [
        "dpa4 relax POSCAR --model best.pt                      # -> relaxed.extxyz",
        "dpa4 relax cands/*.cif --model best.pt --out relaxed/  # one <name>_relaxed.extxyz per file",
        "dpa4 relax frames.extxyz --model best.pt --fmax 0.01 --steps 1000 --no-cell",
        "dpa4 relax mp-149.json --model best.pt --engine ase --json",
    ])
    p.add_argument("structures", nargs="+", metavar="STRUCTURE",
                   help="structure files: anything ase.io.read reads (every frame), or pymatgen JSON")
    p.add_argument("--model", required=True, help="DPA4 checkpoint (.pt)")
    p.add_argument("--fmax", type=float, default=0.05, help="force criterion, eV/A (default 0.05)")
    p.add_argument("--steps", type=int, default=500, help="most optimiser steps per structure (default 500)")
    p.add_argument("--no-cell", dest="cell", action="store_false", help="keep the cell fixed")
    p.add_argument("--out", default="relaxed.extxyz",
                   help="an .extxyz/.xyz file for all structures, or a folder for one file per input "
                        "(default relaxed.extxyz)")
    p.add_argument("--engine", choices=["batched", "ase"], default="batched",
                   help="batched engine (default) or ASE's optimiser one structure at a time")
    p.add_argument("--optimizer", choices=["fire", "lbfgs"], default="fire")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="default float64")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--allow-untrained-elements", action="store_true",
                   help="relax structures with elements the model was not trained on (refused by default)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=_cmd_relax)
