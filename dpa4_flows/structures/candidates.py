"""Candidate crystals for screening: bcc-derived orderings in a 16-site cell, random 32-site alloys, and
user files (CIF, POSCAR, pymatgen JSON).

The 16-site cell is the conventional bcc cube doubled (edge 2 a0). Its sites split into four fcc
sublattices: alpha (0,0,0), beta (1/2,0,0), gamma (1/4,1/4,1/4) and delta (3/4,3/4,3/4) plus fcc
translations. Decorations: B2 (AB: alpha+beta | gamma+delta), B32 (AB: alpha+gamma | beta+delta), D0_3 (A3B:
beta+gamma+delta | alpha), L2_1 (A2BC: gamma+delta | alpha | beta), and the quaternary Y-type (ABCD, one
element per sublattice). Lattice constants follow Vegard's law from the elemental bcc values.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from monty.json import MontyDecoder
from pymatgen.core import Lattice, Structure

#: Room-temperature bcc lattice constants (A) of the refractory metals the starter model knows.
BCC_LATTICE = {"Mo": 3.147, "Nb": 3.300, "Ta": 3.303, "W": 3.165}

_FCC = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
SUBLATTICES = {
    "alpha": _FCC,
    "beta": _FCC + [0.5, 0, 0],
    "gamma": _FCC + 0.25,
    "delta": _FCC + 0.75,
}
SUPPORTED_SUFFIXES = (".cif", ".json", ".vasp", ".poscar")


class CandidateFileError(ValueError):
    """A candidate file is missing, unreadable, or holds no crystal structure."""


def vegard_a0(composition: dict[str, float]) -> float:
    """Composition-weighted bcc lattice constant (A); unknown elements raise ``KeyError`` naming them."""
    total = sum(composition.values())
    # Sorted: a fixed summation order gives bit-identical cells in every process (resume compares inputs).
    return sum(composition[el] / total * BCC_LATTICE[el] for el in sorted(composition))


def decorate(occupation: dict[str, str]) -> Structure:
    """The 16-site bcc-derived cell with sublattice -> element ``occupation`` (all four sublattices)."""
    species, coords = [], []
    for name in ("alpha", "beta", "gamma", "delta"):
        species += [occupation[name]] * 4
        coords += (SUBLATTICES[name] % 1.0).tolist()
    counts = {el: species.count(el) for el in sorted(set(species))}
    return Structure(Lattice.cubic(2 * vegard_a0(counts)), species, coords)


def bcc_orderings(elements: list[str] | None = None) -> dict[str, Structure]:
    """Binary B2, B32, D0_3 (both ways), ternary L2_1 and quaternary Y-type cells, 16 atoms each."""
    elements = sorted(elements or BCC_LATTICE)
    out: dict[str, Structure] = {}
    for a, b in itertools.combinations(elements, 2):
        out[f"{a}{b}-B2"] = decorate({"alpha": a, "beta": a, "gamma": b, "delta": b})
        out[f"{a}{b}-B32"] = decorate({"alpha": a, "gamma": a, "beta": b, "delta": b})
        out[f"{a}3{b}-D03"] = decorate({"beta": a, "gamma": a, "delta": a, "alpha": b})
        out[f"{a}{b}3-D03"] = decorate({"beta": b, "gamma": b, "delta": b, "alpha": a})
    for triple in itertools.combinations(elements, 3):
        for a in triple:
            b, c = [x for x in triple if x != a]
            out[f"{a}2{b}{c}-L21"] = decorate({"gamma": a, "delta": a, "alpha": b, "beta": c})
    for quad in itertools.combinations(elements, 4):
        first = quad[0]
        # Up to symmetry, the Y-type cell is fixed by which element shares the alpha/beta pair with the first.
        for partner in quad[1:]:
            rest = [x for x in quad[1:] if x != partner]
            name = f"{''.join(quad)}-Y-{first}{partner}"
            out[name] = decorate({"alpha": first, "beta": partner, "gamma": rest[0], "delta": rest[1]})
    return out


def random_alloys(elements: list[str] | None = None, n: int = 2, seed: int = 0) -> dict[str, Structure]:
    """``n`` equiatomic random decorations of a 32-site bcc cell (2 x 2 x 4 conventional cubes), seeded."""
    elements = sorted(elements or BCC_LATTICE)
    rng = np.random.default_rng(seed)
    base = [[i / 2 + d, j / 2 + d, k / 4 + d / 2] for i in range(2) for j in range(2) for k in range(4)
            for d in (0.0, 0.25)]
    a0 = vegard_a0({el: 1.0 for el in elements})
    lattice = Lattice.orthorhombic(2 * a0, 2 * a0, 4 * a0)
    out = {}
    for index in range(n):
        species = [elements[i % len(elements)] for i in range(len(base))]
        rng.shuffle(species)
        out[f"{''.join(elements)}-random32-{index}"] = Structure(lattice, species, base)
    return out


def default_candidates(elements: list[str] | None = None, n_random: int = 2) -> dict[str, Structure]:
    """The demo set: every bcc ordering above plus ``n_random`` random 32-atom alloys."""
    return {**bcc_orderings(elements), **random_alloys(elements, n_random)}


def _read_json(path: Path) -> dict[str, Structure]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CandidateFileError(f"{path}: not valid JSON ({exc})") from exc
    decoded = MontyDecoder().process_decoded(data)
    if isinstance(decoded, Structure):
        return {path.stem: decoded}
    if isinstance(decoded, dict):
        items = list(decoded.items())
    elif isinstance(decoded, list):
        items = [(f"{path.stem}-{i}", s) for i, s in enumerate(decoded)]
    else:
        raise CandidateFileError(f"{path}: expected a Structure, a list or a dict of Structures")
    bad = [str(k) for k, s in items if not isinstance(s, Structure)]
    if bad:
        raise CandidateFileError(f"{path}: entries {bad[:5]} are not pymatgen Structures")
    return {str(k): s for k, s in items}


def read_candidates(paths: list[str | Path]) -> dict[str, Structure]:
    """Structures from files or folders (CIF, POSCAR/.vasp, pymatgen JSON), keyed by file stem.

    Raises :class:`CandidateFileError` naming the file for a missing or unreadable file, or duplicate ids.
    """
    out: dict[str, Structure] = {}
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES or p.name == "POSCAR")
            if not found:
                raise CandidateFileError(f"folder {path} has no {', '.join(SUPPORTED_SUFFIXES)} files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CandidateFileError(f"candidate file {str(raw)!r} does not exist")
    for path in files:
        if path.suffix.lower() == ".json":
            structures = _read_json(path)
        else:
            try:
                structures = {path.stem: Structure.from_file(path)}
            except Exception as exc:  # noqa: BLE001 - parsers raise many types; name the file instead
                reason = f"{type(exc).__name__}: {exc}"
                raise CandidateFileError(f"{path}: cannot read a crystal structure ({reason})") from exc
        for key, structure in structures.items():
            if key in out:
                raise CandidateFileError(f"duplicate candidate id {key!r} (from {path})")
            if len(structure) == 0 or not structure.is_ordered:
                raise CandidateFileError(f"{path}: candidate {key!r} is empty or has partial occupancies")
            out[key] = structure
    return out
