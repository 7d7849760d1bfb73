"""Why a readable candidate is not worth relaxing: checked before the flow, one reason per candidate.

Empty or partially occupied cells, degenerate cells, overlapping atoms (closer than ``min_distance``, A) and
elements outside the model's trained set are reasons not to screen a candidate; the others go on unaffected.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymatgen.core import Structure

#: Two atoms closer than this (A) overlap: no interatomic potential is meaningful there.
MIN_DISTANCE = 0.5


def min_distance(structure: Structure, cutoff: float = 4.0) -> float:
    """Shortest interatomic distance (A, periodic images included); ``inf`` if none is within ``cutoff``."""
    distances = structure.get_neighbor_list(cutoff)[3]
    distances = distances[distances > 1e-8]  # an atom's own position (exact overlaps: see rejection_reason)
    return float(distances.min()) if len(distances) else float("inf")


def rejection_reason(structure: Structure, known_elements: Iterable[str] | None = None,
                     overlap: float = MIN_DISTANCE) -> str | None:
    """The reason ``structure`` is not screened, or None if it can be relaxed."""
    if len(structure) == 0:
        return "empty structure"
    if not structure.is_ordered:
        return "partial occupancies (order the structure first)"
    if not structure.lattice.volume > 1e-3:
        return f"degenerate cell (volume {structure.lattice.volume:.3g} A^3)"
    known = set(known_elements or ())
    if known:
        foreign = sorted({el.symbol for el in structure.composition.elements} - known)
        if foreign:
            return (f"elements outside the model's trained set: {', '.join(foreign)} "
                    f"(trained: {', '.join(sorted(known))})")
    # Exact overlaps first (cheap, and the neighbour search drops zero distances).
    frac = structure.frac_coords % 1.0
    if len({tuple(round(x, 6) % 1.0 for x in row) for row in frac}) < len(structure):
        return "overlapping atoms: two atoms on the same site"
    d = min_distance(structure, cutoff=max(overlap, 1.0))
    if d < overlap:
        return f"overlapping atoms: two atoms {d:.2f} A apart (below {overlap} A)"
    return None
