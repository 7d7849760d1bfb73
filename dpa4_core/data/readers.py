"""Readers for labelled DFT data: every format ends as a stream of :class:`Frame` (ASE units and signs).

Supported sources (:func:`read_frames` picks the reader from the path):
    - pymatgen structure JSON records (``.json`` / ``.json.gz``), as in ``data/maml_MoNbTaW`` and ``data/mlearn``:
      ``{"structure": Structure.as_dict(), "outputs": {"energy", "forces", "stress" | "virial_stress"}}``.
      Their stress is in kbar with VASP's sign (compression positive), Voigt ``[xx, yy, zz, xy, yz, xz]``;
      converted with ``sigma = -raw * 0.1 GPa = -raw * KBAR_TO_EV_PER_A3`` (ASE: tension positive, eV/A^3).
    - DeePMD npy folders (``type.raw``, ``type_map.raw``, ``set.*/{coord,box,energy,force[,virial]}.npy``);
      DeePMD's virial is ``W = -sigma V`` (eV), so ``sigma = -W / V``.
    - anything ``ase.io.read`` understands (extxyz, VASP OUTCAR / vasprun.xml(.gz), ASE db, ...): labels from the
      attached calculator, else from ``info["energy"|"REF_energy"]``, ``arrays["forces"|"REF_forces"]``,
      ``info["stress"]`` (eV/A^3, ASE sign) or ``info["virial"]`` (eV); 6-vectors in ASE's Voigt order.
    - in-memory lists of ASE Atoms (labels as above) or of ``(structure, labels)`` pairs, see :func:`frames_from_objects`.

Bad data raises :class:`DataError` naming the file and the frame. :class:`Frame`, its checks and the stress units
live in :mod:`dpa4_core.data.labels`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from ase import Atoms

from dpa4_core.data.batch import to_atoms
from dpa4_core.data.labels import DataError, Frame, check_frame, stress_factor, voigt_to_matrix


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def read_pymatgen_json(
    path: str | Path, stress_unit: str = "kbar_vasp", group: str | None = None, weight: float = 1.0
) -> Iterator[Frame]:
    """Frames from a JSON list of pymatgen structure records (``maml``/``mlearn`` layout).

    Args:
        path: ``.json`` or ``.json.gz`` file holding a list of records.
        stress_unit: unit and sign of ``outputs.stress`` / ``outputs.virial_stress`` (see ``STRESS_UNITS``).
        group: group tag for every frame; default the file stem (e.g. ``"Mo_Elastic"``).
        weight: per-frame loss weight.
    """
    from pymatgen.core import Structure

    path = Path(path)
    factor = stress_factor(stress_unit, str(path))
    tag = group if group is not None else path.name.removesuffix(".gz").removesuffix(".json")
    with _open_text(path) as stream:
        try:
            records = json.load(stream)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if isinstance(records, Mapping):
        records = [records]
    for index, record in enumerate(records):
        where = f"{path}:frame {index}"
        try:
            structure = Structure.from_dict(record["structure"])
            outputs = record["outputs"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: not a pymatgen structure record ({exc!r})") from exc
        raw_stress = outputs.get("stress", outputs.get("virial_stress"))
        try:
            stress = None if raw_stress is None or len(raw_stress) == 0 else factor * voigt_to_matrix(raw_stress)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from exc
        forces = outputs.get("forces")
        yield check_frame(
            Frame(
                atoms=to_atoms(structure),
                energy=outputs.get("energy"),
                forces=None if forces is None else np.asarray(forces, dtype=np.float64),
                stress=stress,
                weight=weight,
                group=tag,
                source=where,
            )
        )


def _labels_from_atoms(atoms: Atoms, where: str, stress_unit: str) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy, forces and stress (ASE units) of an Atoms object: calculator first, then info/arrays."""
    energy = forces = stress = None
    calc = atoms.calc
    if calc is not None:
        results = getattr(calc, "results", {})
        energy = results.get("energy", results.get("free_energy"))
        forces = results.get("forces")
        stress = results.get("stress")  # ASE calculators store eV/A^3, ASE sign
        if stress is not None:
            stress = voigt_to_matrix(stress, order="ase")
    if energy is None:
        energy = atoms.info.get("energy", atoms.info.get("REF_energy"))
    if forces is None:
        forces = atoms.arrays.get("forces", atoms.arrays.get("REF_forces"))
    if stress is None and atoms.pbc.all():
        factor = stress_factor(stress_unit, where)
        if "stress" in atoms.info or "REF_stress" in atoms.info:
            stress = factor * voigt_to_matrix(atoms.info.get("stress", atoms.info.get("REF_stress")), order="ase")
        elif "virial" in atoms.info or "REF_virial" in atoms.info:
            virial = voigt_to_matrix(atoms.info.get("virial", atoms.info.get("REF_virial")), order="ase")
            stress = -virial / atoms.get_volume()
    return energy, (None if forces is None else np.asarray(forces, dtype=np.float64)), stress


def frames_from_atoms(
    atoms_list: Iterable[Atoms], source: str = "atoms", stress_unit: str = "ev/a^3", group: str | None = None,
    weight: float = 1.0,
) -> Iterator[Frame]:
    """Frames from ASE Atoms carrying labels (calculator results or ``info``/``arrays`` entries)."""
    for index, atoms in enumerate(atoms_list):
        where = f"{source}:frame {index}"
        energy, forces, stress = _labels_from_atoms(atoms, where, stress_unit)
        plain = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        tag = group if group is not None else str(atoms.info.get("config_type", source))
        yield check_frame(Frame(plain, energy, forces, stress, float(atoms.info.get("weight", weight)), tag, where))


def read_ase(
    path: str | Path, stress_unit: str = "ev/a^3", group: str | None = None, weight: float = 1.0,
    index: str = ":", format: str | None = None,
) -> Iterator[Frame]:
    """Frames from any file ``ase.io.read`` understands (extxyz, OUTCAR, vasprun.xml(.gz), ASE db, ...)."""
    import ase.io

    path = Path(path)
    try:
        images = ase.io.read(path, index=index, format=format)
    except Exception as exc:  # ase raises many types for unreadable files; all mean the same to the user
        raise DataError(f"{path}: ASE cannot read this file ({type(exc).__name__}: {exc})") from exc
    if isinstance(images, Atoms):
        images = [images]
    tag = group if group is not None else None
    yield from frames_from_atoms(images, source=str(path), stress_unit=stress_unit, group=tag, weight=weight)


def read_deepmd(path: str | Path, group: str | None = None, weight: float = 1.0) -> Iterator[Frame]:
    """Frames from a DeePMD npy folder (``type.raw``, ``type_map.raw``, ``set.*/``; ``nopbc`` marks molecules)."""
    from ase.data import atomic_numbers

    path = Path(path)
    try:
        types = np.loadtxt(path / "type.raw", dtype=np.int64, ndmin=1)
        type_map = (path / "type_map.raw").read_text().split()
    except OSError as exc:
        raise DataError(f"{path}: not a DeePMD folder (needs type.raw and type_map.raw): {exc}") from exc
    try:
        numbers = np.array([atomic_numbers[type_map[t]] for t in types])
    except (IndexError, KeyError) as exc:
        raise DataError(f"{path}: type.raw/type_map.raw do not name valid elements ({exc!r})") from exc
    periodic = not (path / "nopbc").exists()
    n = len(numbers)
    tag = group if group is not None else path.name
    sets = sorted(p for p in path.glob("set.*") if p.is_dir())
    if not sets:
        raise DataError(f"{path}: DeePMD folder has no set.* sub-folders")
    for set_dir in sets:
        arrays = {}
        for name in ("coord", "box", "energy", "force", "virial"):
            file = set_dir / f"{name}.npy"
            arrays[name] = np.load(file) if file.exists() else None
        for name in ("coord", "energy", "force"):
            if arrays[name] is None:
                raise DataError(f"{set_dir}: missing {name}.npy")
        n_frames = len(arrays["energy"])
        for index in range(n_frames):
            where = f"{set_dir}:frame {index}"
            coord = arrays["coord"][index]
            force = arrays["force"][index]
            if coord.size != 3 * n:
                raise DataError(f"{where}: coord has {coord.size} values, expected {3 * n} for {n} atoms")
            if force.size != 3 * n:
                raise DataError(f"{where}: force has {force.size} values, expected {3 * n} ({n} atoms x 3)")
            cell = arrays["box"][index].reshape(3, 3) if arrays["box"] is not None else np.zeros((3, 3))
            atoms = Atoms(numbers=numbers, positions=coord.reshape(n, 3), cell=cell, pbc=periodic)
            stress = None
            if arrays["virial"] is not None and periodic:
                stress = -arrays["virial"][index].reshape(3, 3) / atoms.get_volume()
            yield check_frame(
                Frame(atoms, float(arrays["energy"][index]), force.reshape(n, 3), stress, weight, tag, where)
            )


def frames_from_objects(
    items: Iterable, source: str = "objects", stress_unit: str = "ev/a^3", group: str | None = None,
    weight: float = 1.0,
) -> Iterator[Frame]:
    """Frames from ASE Atoms with labels, or ``(structure, labels)`` pairs where ``labels`` has ``energy``,
    ``forces`` and optionally ``stress`` (in ``stress_unit``; 3x3 or Voigt in ASE order ``[xx, yy, zz, yz, xz, xy]``),
    ``weight``, ``group``; structures may be pymatgen."""
    factor = stress_factor(stress_unit, source)
    for index, item in enumerate(items):
        where = f"{source}:frame {index}"
        if isinstance(item, Frame):
            yield check_frame(item)
            continue
        if isinstance(item, Atoms):
            yield from frames_from_atoms([item], source=where, stress_unit=stress_unit, group=group, weight=weight)
            continue
        try:
            structure, labels = item
            atoms = to_atoms(structure)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: expected Atoms or a (structure, labels) pair, got {type(item).__name__}") from exc
        stress = labels.get("stress")
        yield check_frame(
            Frame(
                atoms=atoms,
                energy=labels.get("energy"),
                forces=None if labels.get("forces") is None else np.asarray(labels["forces"], dtype=np.float64),
                stress=None if stress is None else factor * voigt_to_matrix(stress, order="ase"),
                weight=float(labels.get("weight", weight)),
                group=str(labels.get("group", group if group is not None else source)),
                source=where,
            )
        )


def read_frames(
    source: str | Path | Iterable, format: str | None = None, stress_unit: str | None = None,
    group: str | None = None, weight: float = 1.0,
) -> Iterator[Frame]:
    """Labelled frames from a file, a DeePMD folder, a folder of JSON files, or in-memory objects.

    Args:
        source: path or list of Atoms / ``(structure, labels)`` pairs.
        format: ``"pymatgen-json"``, ``"deepmd"``, ``"ase"`` or an ASE format name; guessed when None.
        stress_unit: unit of stored stresses (``STRESS_UNITS``); default per format (JSON: ``"kbar_vasp"``).
        group: group tag override; weight: per-frame loss weight.

    Raises:
        DataError: unreadable source or bad labels, naming the file and the frame.
    """
    if not isinstance(source, str | Path):
        yield from frames_from_objects(source, stress_unit=stress_unit or "ev/a^3", group=group, weight=weight)
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data file or folder does not exist")
    name = path.name.lower().removesuffix(".gz")
    if format == "deepmd" or (format is None and path.is_dir() and (path / "type.raw").exists()):
        yield from read_deepmd(path, group=group, weight=weight)
    elif format is None and path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".json", ".json.gz")))
        if not files:
            raise DataError(f"{path}: folder holds neither a DeePMD set nor JSON files")
        for file in files:
            yield from read_pymatgen_json(file, stress_unit or "kbar_vasp", group, weight)
    elif format == "pymatgen-json" or (format is None and name.endswith(".json")):
        yield from read_pymatgen_json(path, stress_unit or "kbar_vasp", group, weight)
    else:
        ase_format = None if format in (None, "ase") else format
        yield from read_ase(path, stress_unit or "ev/a^3", group, weight, format=ase_format)
