"""Helpers shared by the subcommands: parsers with an Examples epilog, plain-text tables, JSON output, and
structure files read into ASE Atoms (anything ``ase.io.read`` reads, plus pymatgen JSON)."""

from __future__ import annotations

import argparse
import gzip
import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from ase import Atoms


class StructureFileError(ValueError):
    """A structure file that is missing or cannot be read (names the file; ``dpa4`` exits 2)."""


def add_command(sub, name: str, help: str, examples: Sequence[str], description: str | None = None):
    """A subparser with ``help``, a description and an ``Examples:`` epilog shown verbatim."""
    epilog = "Examples:\n" + "\n".join(f"  {line}" for line in examples)
    return sub.add_parser(name, help=help, description=textwrap.fill(description or help, 100), epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def progress(args) -> bool | None:
    """The engines' ``progress`` argument: None (bars on stderr when it is a terminal), False with ``-q``."""
    return False if getattr(args, "quiet", False) else None


def print_json(payload) -> None:
    print(json.dumps(payload, indent=2, default=str))


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence], digits: int = 4) -> str:
    """Rows under headers, columns aligned (text left, numbers right); None prints as ``-``."""
    cells = [[_cell(v, digits) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], int | float) and not isinstance(row[i], bool) or row[i] is None
                   for row in rows) if rows else False for i in range(len(headers))]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join((v.rjust(w) if num else v.ljust(w)) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def _pymatgen_json(path: Path) -> list[Atoms]:
    """A pymatgen ``Structure``/``Molecule`` dict, a list of them, or a list of records with a ``structure``."""
    from pymatgen.core import Molecule, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as stream:
        payload = json.load(stream)
    items = payload if isinstance(payload, list) else [payload]
    atoms = []
    for item in items:
        item = item.get("structure", item) if isinstance(item, dict) else item
        if not isinstance(item, dict) or "sites" not in item:
            raise ValueError("expected pymatgen Structure/Molecule dicts or records with a 'structure'")
        cls = Structure if "lattice" in item else Molecule
        atoms.append(AseAtomsAdaptor.get_atoms(cls.from_dict(item)))
    return atoms


def read_structures(path: str | Path) -> list[Atoms]:
    """Every structure in ``path`` as ASE Atoms (all frames of a trajectory or extxyz file).

    Raises:
        StructureFileError: the file does not exist, or neither ASE nor the pymatgen JSON reader can read it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise StructureFileError(f"{path}: structure file does not exist")
    try:
        if path.name.lower().removesuffix(".gz").endswith(".json"):
            images = _pymatgen_json(path)
        else:
            import ase.io

            images = ase.io.read(path, index=":")
    except Exception as exc:  # ASE and pymatgen raise many types for unreadable files; all mean the same here
        raise StructureFileError(f"{path}: cannot read structures ({type(exc).__name__}: {exc})") from exc
    images = [images] if isinstance(images, Atoms) else list(images)
    if not images:
        raise StructureFileError(f"{path}: holds no structure")
    return images


def structure_labels(path: str | Path, count: int) -> list[str]:
    """``file`` for a single structure, ``file:index`` for each of several."""
    return [str(path)] if count == 1 else [f"{path}:{i}" for i in range(count)]
