"""Ordered decorations of a parent lattice (bcc, fcc) up to N sites: every symmetry-distinct ordering, once.

enumlib (pymatgen's ``EnumerateStructureTransformation``) is not installed, so the enumeration is done here, in the
way of Hart and Forcade (Phys. Rev. B 77, 224115, 2008):

1. supercells: every lower-triangular Hermite normal form ``H`` (rows: ``[[a,0,0],[b,c,0],[d,e,f]]``, ``acf = n``,
   ``0 <= b, d < a``, ``0 <= e < c``) of the primitive parent lattice ``A`` (rows = vectors), one per class of
   superlattices equivalent under the parent's point group (a rotation acts as ``H -> H M`` with the integer matrix
   ``M = A R^T A^-1``; two forms are one lattice when ``H1 H2^-1`` is unimodular);
2. sites of a supercell: the integer points ``(i, j, k)``, ``i < a, j < c, k < f``; its symmetry: the translations
   by its sites and the parent rotations that keep the superlattice, as permutations of the sites;
3. decorations: every labelling with the given elements (at least two of them present) that is the smallest of its
   orbit (labellings coded as base-k integers) and not invariant under a translation (those are decorations of a
   smaller cell, found there).

Then, as for every generator here, pymatgen's ``StructureMatcher`` deduplicates within each composition
(:func:`dpa4_flows.structures.generate.deduplicate`): a cross-check that removes nothing when the above is right.
"""

from __future__ import annotations

import itertools

import numpy as np
from pymatgen.core import Lattice, Structure

from dpa4_flows.structures.generate import PrototypeError, _radius, deduplicate

PARENTS = ("bcc", "fcc")


def parent_lattice(parent: str, a: float = 1.0) -> Lattice:
    """The primitive bcc or fcc lattice with cubic lattice constant ``a``."""
    if parent == "bcc":
        return Lattice(0.5 * a * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]], float))
    if parent == "fcc":
        return Lattice(0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float))
    raise PrototypeError(f"parent {parent!r}; allowed: {', '.join(PARENTS)}")


def _rotations(lattice: Lattice) -> list[np.ndarray]:
    """The parent's point group as integer matrices ``M`` acting on lattice rows (``H -> H M``)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    a = lattice.matrix
    ops = SpacegroupAnalyzer(Structure(lattice, ["Cu"], [[0, 0, 0]])).get_point_group_operations(cartesian=True)
    mats = [a @ op.rotation_matrix.T @ np.linalg.inv(a) for op in ops]
    out = [np.rint(m).astype(int) for m in mats]
    assert all(np.allclose(m, r, atol=1e-6) for m, r in zip(mats, out))
    return out


def hermite_forms(n: int) -> list[np.ndarray]:
    """Every lower-triangular Hermite normal form of determinant ``n`` (one per superlattice of index n)."""
    forms = []
    for a in range(1, n + 1):
        for c in range(1, n // a + 1):
            if n % (a * c):
                continue
            f = n // (a * c)
            for b, d, e in itertools.product(range(a), range(a), range(c)):
                forms.append(np.array([[a, 0, 0], [b, c, 0], [d, e, f]]))
    return forms


def _same_lattice(h1: np.ndarray, h2: np.ndarray) -> bool:
    u = h1 @ np.linalg.inv(h2)
    return bool(np.allclose(u, np.rint(u), atol=1e-8))


def distinct_supercells(n: int, rotations: list[np.ndarray]) -> list[np.ndarray]:
    """Representatives of the superlattices of index ``n`` that no parent rotation maps onto each other."""
    kept: list[np.ndarray] = []
    for h in hermite_forms(n):
        if not any(_same_lattice(h @ m, k) for k in kept for m in rotations):
            kept.append(h)
    return kept


def _sites(h: np.ndarray) -> np.ndarray:
    return np.array(list(itertools.product(range(h[0, 0]), range(h[1, 1]), range(h[2, 2]))))


def _permutations(h: np.ndarray, rotations: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(all symmetry permutations ``[g, n]``, the nontrivial translations ``[t, n]``) of the supercell's sites."""
    sites = _sites(h)
    a, c, f = h[0, 0], h[1, 1], h[2, 2]

    def reduce(points: np.ndarray) -> np.ndarray:
        """Site indices of integer points, reduced into the box by the rows of ``h`` (z, then y, then x)."""
        p = points.copy()
        p -= (p[:, 2] // f)[:, None] * h[2]
        p -= (p[:, 1] // c)[:, None] * h[1]
        p -= (p[:, 0] // a)[:, None] * h[0]
        return (p[:, 0] * c + p[:, 1]) * f + p[:, 2]

    keep = [m for m in rotations if _same_lattice(h @ m, h)]
    translations = [reduce(sites + t) for t in sites]
    perms = [reduce(sites @ m)[t] for m in keep for t in translations]
    return np.unique(np.array(perms), axis=0), np.array(translations[1:], dtype=int).reshape(-1, len(sites))


def _labellings(n: int, k: int, perms: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """The labellings ``[m, n]`` (values < k, at least two distinct) smallest in their orbit, not superperiodic."""
    labels = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64)
    labels = labels[(labels != labels[:, :1]).any(axis=1)]
    weights = k ** np.arange(n - 1, -1, -1, dtype=np.int64)
    codes = labels @ weights
    orbit_min = np.min(labels[:, perms] @ weights, axis=1)
    keep = codes == orbit_min
    if len(translations):
        keep &= ~(labels[:, None, :] == labels[:, translations]).all(axis=2).any(axis=1)
    return labels[keep]


def decorations(parent: str, elements: list[str], max_sites: int, dedupe: bool = True) -> dict[str, Structure]:
    """Every symmetry-distinct ordering of ``elements`` (at least two present) on ``parent`` supercells of up to
    ``max_sites`` sites; ids ``"<formula>-<parent>-<n>-<index>"``. The lattice constant is that of the parent with
    the elements' mean atomic radius (the relaxation finds the volume)."""
    elements = sorted(dict.fromkeys(elements))
    if len(elements) < 2:
        raise PrototypeError("ordered decorations need at least two elements")
    if not 1 <= max_sites <= 12:
        raise PrototypeError(f"max_sites={max_sites}: allowed 1..12 (the count grows fast beyond)")
    radius = float(np.mean([_radius(e) for e in elements]))
    nn = {"bcc": np.sqrt(3) / 2, "fcc": 1 / np.sqrt(2)}
    if parent not in nn:
        raise PrototypeError(f"parent {parent!r}; allowed: {', '.join(PARENTS)}")
    lattice = parent_lattice(parent, 2 * radius / nn[parent])
    rotations = _rotations(lattice)
    out: dict[str, Structure] = {}
    for n in range(2, max_sites + 1):
        for cell, h in enumerate(distinct_supercells(n, rotations)):
            perms, translations = _permutations(h, rotations)
            frac = _sites(h) @ np.linalg.inv(h)
            for i, labels in enumerate(_labellings(n, len(elements), perms, translations)):
                s = Structure(Lattice(h @ lattice.matrix), [elements[j] for j in labels], frac % 1.0)
                out[f"{s.composition.reduced_formula}-{parent}-{n}-{cell}.{i}"] = s
    return deduplicate(out) if dedupe else out
