"""Candidate generators: element substitution into a small shipped prototype library, deduplicated.

The library (``prototypes/prototypes.json``: B2, L1_0, L1_2, D0_3, C15 Laves, rocksalt, perovskite, spinel,
fluorite) gives each prototype as space group + Wyckoff representatives with roles A, B, X; pymatgen builds the
conventional cell. Every assignment of distinct elements to the roles is one candidate, its lattice constant set so
that no pair of atoms is closer than the sum of their atomic radii (the relaxation then finds the volume).
Duplicates (e.g. B2 MoW and WMo) are removed with pymatgen's ``StructureMatcher`` within groups of equal reduced
composition, so large sets dedupe fast.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from functools import lru_cache
from importlib.resources import files

import numpy as np
from pymatgen.core import Element, Lattice, Structure


class PrototypeError(ValueError):
    """Unknown prototype or element, or not enough elements for a prototype's roles."""


@lru_cache(maxsize=1)
def library() -> dict[str, dict]:
    """The shipped prototypes: ``{name: {"example", "spacegroup", "c_over_a", "sites": [[role, xyz], ...]}}``."""
    text = files("dpa4_flows.structures.prototypes").joinpath("prototypes.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def roles(prototype: str) -> list[str]:
    """The distinct roles of ``prototype`` in order of appearance (e.g. ``["A", "B", "X"]``)."""
    return list(dict.fromkeys(role for role, _ in _spec(prototype)["sites"]))


def _spec(prototype: str) -> dict:
    try:
        return library()[prototype]
    except KeyError:
        raise PrototypeError(f"unknown prototype {prototype!r}; known: {', '.join(library())}") from None


def _radius(symbol: str) -> float:
    try:
        el = Element(symbol)
    except ValueError:
        raise PrototypeError(f"unknown element {symbol!r}") from None
    radius = el.metallic_radius if el.is_metal and el.metallic_radius else el.atomic_radius
    if not radius:
        raise PrototypeError(f"no atomic radius known for {symbol}")
    return float(radius)


@lru_cache(maxsize=None)
def _unit_cell(prototype: str) -> tuple[Structure, tuple[str, ...]]:
    """The conventional cell at lattice constant 1 (built once: ``from_spacegroup`` is slow) and each site's role."""
    spec = _spec(prototype)
    names = roles(prototype)
    placeholders = [Element.from_Z(z + 1).symbol for z in range(len(names))]  # one stand-in element per role
    lattice = Lattice.tetragonal(1.0, spec["c_over_a"]) if spec["spacegroup"] < 195 else Lattice.cubic(1.0)
    cell = Structure.from_spacegroup(spec["spacegroup"], lattice, [placeholders[names.index(r)] for r, _ in
                                                                   spec["sites"]], [xyz for _, xyz in spec["sites"]])
    return cell, tuple(names[placeholders.index(site.specie.symbol)] for site in cell)


def substitute(prototype: str, assignment: dict[str, str]) -> Structure:
    """The ``prototype`` cell with each role replaced by ``assignment[role]`` (an element symbol), scaled so that
    the closest pair of atoms sits at the sum of their atomic radii."""
    missing = [r for r in roles(prototype) if r not in assignment]
    if missing:
        raise PrototypeError(f"{prototype} needs elements for roles {missing}")
    cell, site_roles = _unit_cell(prototype)
    unit = Structure(cell.lattice, [assignment[r] for r in site_roles], cell.frac_coords)
    radii = np.array([_radius(s.specie.symbol) for s in unit])
    centers, neighbors, _, distances = unit.get_neighbor_list(1.0)
    keep = distances > 1e-8
    scale = float(np.max((radii[centers] + radii[neighbors])[keep] / distances[keep]))
    unit.scale_lattice(unit.volume * scale ** 3)
    return unit


def deduplicate(structures: dict[str, Structure]) -> dict[str, Structure]:
    """Keep the first of each set of equivalent structures (``StructureMatcher``, compared only within equal
    reduced compositions)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()
    groups: dict[str, list[tuple[str, Structure]]] = defaultdict(list)
    for key, s in structures.items():
        groups[s.composition.reduced_formula].append((key, s))
    kept: set[str] = set()
    for members in groups.values():
        for group in matcher.group_structures([s for _, s in members]):
            first = next(k for k, s in members if s is group[0])
            kept.add(first)
    return {k: s for k, s in structures.items() if k in kept}


def prototype_candidates(elements: list[str], prototypes: list[str] | None = None,
                         dedupe: bool = True) -> dict[str, Structure]:
    """Every prototype with every assignment of distinct ``elements`` to its roles, ids
    ``"<formula>-<prototype>"`` (deduplicated unless ``dedupe=False``)."""
    elements = sorted(dict.fromkeys(elements))
    out: dict[str, Structure] = {}
    for name in prototypes or list(library()):
        names = roles(name)
        if len(names) > len(elements):
            continue
        for chosen in itertools.permutations(elements, len(names)):
            s = substitute(name, dict(zip(names, chosen)))
            key = f"{s.composition.reduced_formula}-{name}"
            n = 2
            while key in out:
                key, n = f"{s.composition.reduced_formula}-{name}-{n}", n + 1
            out[key] = s
    if not out:
        raise PrototypeError(f"no prototype among {prototypes or list(library())} fits {len(elements)} element(s)")
    return deduplicate(out) if dedupe else out
