"""Candidate crystals for screening: bcc-derived orderings in a 16-site cell, random 32-site alloys, and
user files (:mod:`dpa4_flows.structures.files`).

The 16-site cell is the conventional bcc cube doubled (edge 2 a0). Its sites split into four fcc
sublattices: alpha (0,0,0), beta (1/2,0,0), gamma (1/4,1/4,1/4) and delta (3/4,3/4,3/4) plus fcc
translations. Decorations: B2 (AB: alpha+beta | gamma+delta), B32 (AB: alpha+gamma | beta+delta), D0_3 (A3B:
beta+gamma+delta | alpha), L2_1 (A2BC: gamma+delta | alpha | beta), and the quaternary Y-type (ABCD, one
element per sublattice). Lattice constants follow Vegard's law from the elemental bcc values.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from dpa4_flows.structures.files import CandidateFileError, read_candidate_files  # noqa: F401 - public here too

#: Room-temperature bcc lattice constants (A) of the refractory metals the starter model knows.
BCC_LATTICE = {"Mo": 3.147, "Nb": 3.300, "Ta": 3.303, "W": 3.165}

_FCC = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
SUBLATTICES = {
    "alpha": _FCC,
    "beta": _FCC + [0.5, 0, 0],
    "gamma": _FCC + 0.25,
    "delta": _FCC + 0.75,
}


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


def read_candidates(paths: list[str | Path]) -> dict[str, Structure]:
    """Structures from files, folders and globs (see :func:`dpa4_flows.structures.files.read_candidate_files`),
    keyed by candidate id; strict: raises :class:`CandidateFileError` naming the first unreadable candidate
    (``dpa4 screen`` instead keeps every readable one and records why the others were not screened)."""
    found = read_candidate_files(paths)
    if found.rejected:
        key, reason = next(iter(found.rejected.items()))
        raise CandidateFileError(f"candidate {key!r}: {reason}")
    return found.structures
