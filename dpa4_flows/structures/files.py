"""Candidate structures from files, folders and globs, one outcome per candidate.

Formats: CIF (every data block), POSCAR/CONTCAR/``.vasp``, extended XYZ (every frame), pymatgen JSON (a
Structure, a list or dict of them, or of ``{"structure": ..., "e_above_hull": ...}`` dicts, or computed
structure entries) and ASE databases (``.db``, every row). A file or entry that cannot be read does not stop
the others: it becomes a *rejected* candidate with its reason. DFT labels (``e_above_hull`` in a JSON dict, a
Structure's ``properties``, an extxyz frame's ``info`` or an ASE db row's key-value pairs) are kept per
candidate for the report's discovery metrics.
"""

from __future__ import annotations

import glob
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

SUFFIXES = {".cif": "cif", ".json": "json", ".vasp": "poscar", ".poscar": "poscar", ".extxyz": "extxyz",
            ".xyz": "extxyz", ".db": "db"}
POSCAR_NAMES = ("POSCAR", "CONTCAR")
LABELS = ("e_above_hull",)  # DFT labels carried to the report (eV/atom)


class CandidateFileError(ValueError):
    """A path names nothing (missing file, empty folder, glob without matches): a typo, not a bad candidate."""


@dataclass
class CandidateSet:
    """Readable candidates, rejected ones with their reasons, and DFT labels, all keyed by candidate id."""

    structures: dict[str, Structure] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    labels: dict[str, dict[str, float]] = field(default_factory=dict)
    formulas: dict[str, str] = field(default_factory=dict)  # of rejected candidates whose structure is known

    def _free_id(self, key: str, path: Path) -> str:
        taken = self.structures.keys() | self.rejected.keys()
        if key not in taken:
            return key
        key = f"{path.parent.name}/{key}"
        base, n = key, 2
        while key in taken:
            key, n = f"{base}-{n}", n + 1
        return key

    def add(self, key: str, path: Path, item: Any) -> None:
        """Add ``item`` (a Structure, or the reason string of a rejection) under a free id near ``key``."""
        key = self._free_id(str(key), path)
        if isinstance(item, Structure):
            self.structures[key] = item
            labels = {k: float(item.properties[k]) for k in LABELS if _number(item.properties.get(k))}
            if labels:
                self.labels[key] = labels
        else:
            self.rejected[key] = str(item)

    def __len__(self) -> int:
        return len(self.structures) + len(self.rejected)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kind(path: Path) -> str | None:
    if path.name.upper().startswith(POSCAR_NAMES):
        return "poscar"
    return SUFFIXES.get(path.suffix.lower())


def candidate_files(paths: list[str | Path]) -> list[Path]:
    """Files named by ``paths``: files as given, folders searched recursively, globs expanded (sorted, unique)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p))
            if not found:
                raise CandidateFileError(f"folder {path.resolve()} has no candidate files "
                                         f"({', '.join(sorted(SUFFIXES))}, POSCAR, CONTCAR)")
            files += found
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(str(raw)):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise CandidateFileError(f"no file matches {str(raw)!r}")
            files += found
        else:
            raise CandidateFileError(f"candidate file {str(raw)!r} does not exist")
    return list(dict.fromkeys(p.resolve() for p in files))


def _with_labels(structure: Structure, labels: dict) -> Structure:
    for key in LABELS:
        if _number(labels.get(key)):
            structure.properties[key] = float(labels[key])
    return structure


def _atoms_to_structure(atoms) -> Structure | str:
    from pymatgen.io.ase import AseAtomsAdaptor

    if not atoms.pbc.all():
        return f"not periodic in every direction (pbc={atoms.pbc.tolist()}): not a crystal"
    return _with_labels(AseAtomsAdaptor.get_structure(atoms), {**atoms.info, **getattr(atoms.calc, "results", {})})


def _json_item(item: Any) -> Structure | str:
    from monty.json import MontyDecoder

    item = MontyDecoder().process_decoded(item) if isinstance(item, dict | list) else item
    if isinstance(item, Structure):
        return item
    if hasattr(item, "structure") and isinstance(getattr(item, "structure"), Structure):  # ComputedStructureEntry
        return _with_labels(item.structure, getattr(item, "data", {}) or {})
    if isinstance(item, dict) and isinstance(item.get("structure"), Structure):
        return _with_labels(item["structure"], item)
    return f"entry is a {type(item).__name__}, not a pymatgen Structure or a dict with a 'structure'"


def _read_json(path: Path) -> list[tuple[str, Any]]:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and ("@class" in data or "structure" in data):
        return [(path.stem, _json_item(data))]
    if isinstance(data, dict):
        return [(f"{path.stem}:{k}" if len(data) > 1 else str(k), _json_item(v)) for k, v in data.items()]
    if isinstance(data, list):
        return [(f"{path.stem}-{i}", _json_item(v)) for i, v in enumerate(data)]
    return [(path.stem, f"JSON holds a {type(data).__name__}, not structures")]


def _read_extxyz(path: Path) -> list[tuple[str, Any]]:
    from ase.io import read

    frames = read(path, index=":")
    return [(str(a.info.get("name") or (path.stem if len(frames) == 1 else f"{path.stem}-{i}")),
             _atoms_to_structure(a)) for i, a in enumerate(frames)]


def _read_db(path: Path) -> list[tuple[str, Any]]:
    from ase.db import connect

    out = []
    for row in connect(str(path)).select():
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        out.append((str(row.key_value_pairs.get("name") or f"{path.stem}-{row.id}"), _atoms_to_structure(atoms)))
    return out


def _read_cif(path: Path) -> list[tuple[str, Any]]:
    import warnings

    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns per odd tag; a failure still raises below
        found = CifParser(path).parse_structures(primitive=False, on_error="raise")
    if not found:
        raise ValueError("no structure in the file")
    return [(path.stem if len(found) == 1 else f"{path.stem}-{i}", s) for i, s in enumerate(found)]


READERS = {"cif": _read_cif, "json": _read_json, "extxyz": _read_extxyz, "db": _read_db,
           "poscar": lambda p: [(p.parent.name if p.name.upper().startswith(POSCAR_NAMES) else p.stem,
                                 Structure.from_file(p))]}


def read_candidate_files(paths: list[str | Path]) -> CandidateSet:
    """Every candidate in ``paths`` (see the module doc), each either read or rejected with its reason.

    Raises:
        CandidateFileError: a path that names no file (missing, empty folder, glob without matches).
    """
    out = CandidateSet()
    for path in candidate_files(paths):
        kind = _kind(path)
        if kind is None:
            out.add(path.stem, path, f"unreadable file {path.name}: unknown format (suffix {path.suffix!r})")
            continue
        try:
            items = READERS[kind](path)
        except Exception as exc:  # noqa: BLE001 - parsers raise many types; the reason names the file
            items = [(path.stem, f"unreadable file {path.name}: {type(exc).__name__}: {str(exc)[:200]}")]
        if not items:
            items = [(path.stem, f"unreadable file {path.name}: no structure in it")]
        for key, item in items:
            if isinstance(item, str) and not item.startswith("unreadable"):
                item = f"unreadable entry in {path.name}: {item}"
            out.add(key, path, item)
    return out
