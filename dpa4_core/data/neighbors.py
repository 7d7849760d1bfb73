"""Neighbour lists: vesin, never capped (spec section 1), but refused up front when a structure would need an
absurd number of them.

Edge convention used everywhere in dpa4: an edge e goes from source ``j = edge_src[e]`` to destination
``i = edge_dst[e]`` and its vector is ``r_ij = r_j - r_i + shift_e @ cell`` (points from the destination atom
to its neighbour). Every neighbour inside the cutoff is kept, in both directions.

Periodicity is per direction (vesin supports it): a slab is ``pbc = (True, True, False)``, a wire
``(True, False, False)``. Shifts are 0 along open directions, so the cell vector there only has to be finite (it may
be zero).
"""

from __future__ import annotations

import numpy as np
from vesin import NeighborList

#: Refuse a structure whose estimated neighbour count exceeds this many per atom on average. Dense real solids
#: stay far below it (diamond, 0.18 atoms/A^3, has ~380 neighbours within 8 A); a 1-atom cell of 0.1 A at a
#: 5.5 A cutoff would have ~7e5 and take a minute and 13 GB to list.
MAX_NEIGHBORS_PER_ATOM = 1000


class InvalidStructureError(ValueError):
    """A structure the model cannot evaluate (bad element, NaN coordinates, coincident atoms, ...)."""


def periodic_measure(cell: np.ndarray, pbc: np.ndarray) -> float:
    """Length, area or volume (A, A^2, A^3) of the lattice the periodic rows of ``cell`` span; 0 if they are zero
    or parallel, 1 when no direction is periodic."""
    rows = np.asarray(cell, dtype=np.float64)[np.asarray(pbc, dtype=bool).reshape(3)]
    return float(np.sqrt(abs(np.linalg.det(rows @ rows.T)))) if len(rows) else 1.0


def estimated_neighbors(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> float:
    """Average number of neighbours per atom within ``cutoff``, estimated without a search: atom density times
    the cutoff sphere, ``N / V * 4/3 pi rc^3``.

    ``V`` is the cell volume for a periodic cell; along open directions the atoms' extent plus ``cutoff`` stands
    in for the cell (so a thin slab counts like a layer ``cutoff`` thick, an overestimate of at most 4/3). A
    structure open in every direction has at most ``N - 1`` neighbours per atom.
    """
    n = len(positions)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    # The periodic lattice's measure times the thickness of the open directions.
    volume = periodic_measure(cell, pbc)
    if not pbc.all():
        extents = _open_extents(positions, np.asarray(cell, dtype=np.float64)[pbc])
        volume *= float(np.prod(extents + cutoff))
    estimate = n / max(volume, 1e-300) * 4.0 / 3.0 * np.pi * cutoff**3
    return min(estimate, n - 1.0) if not pbc.any() else estimate


def _open_extents(positions: np.ndarray, periodic_rows: np.ndarray) -> np.ndarray:
    """The atoms' extents (A) along an orthonormal basis of the directions no periodic vector spans."""
    if len(periodic_rows) == 0:
        basis = np.eye(3)
    else:
        _, _, vt = np.linalg.svd(periodic_rows)  # rows beyond the periodic rank span the complement
        basis = vt[len(periodic_rows):]
    return np.ptp(positions @ basis.T, axis=0)


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, label: str = "structure"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list of one frame.

    Args:
        positions: ``[n_atoms, 3]`` Cartesian positions in A.
        cell: ``[3, 3]`` cell, rows are lattice vectors (ASE convention); the rows of open directions are not
            used (they may be zero); ignored entirely when no direction is periodic.
        pbc: ``[3]`` periodic flags, any combination.
        cutoff: cutoff radius in A.
        label: names the structure in errors.

    Returns:
        ``(edge_src, edge_dst, shifts)``: int64 ``[n_edges]``, int64 ``[n_edges]`` and integer cell shifts
        ``[n_edges, 3]`` (0 along open directions) such that ``r_ij = positions[src] - positions[dst] + shifts @ cell``.

    Raises:
        InvalidStructureError: more than :data:`MAX_NEIGHBORS_PER_ATOM` neighbours per atom are expected
            (checked in microseconds, before vesin would spend minutes and gigabytes on them).
    """
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.asarray(cell, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    if periodic_measure(box, pbc) < 1e-6:
        raise InvalidStructureError(
            f"{label}: the periodic cell vectors {box[pbc].tolist()} (pbc {pbc.tolist()}) are zero or parallel; "
            "give each periodic direction its own lattice vector in the cell"
        )
    estimate = estimated_neighbors(positions, box, pbc, cutoff)
    if estimate > MAX_NEIGHBORS_PER_ATOM:
        raise InvalidStructureError(
            f"{label}: about {estimate:.3g} neighbours per atom within {cutoff:g} A (limit "
            f"{MAX_NEIGHBORS_PER_ATOM}); the cell is far too small or the atoms far too dense for the "
            f"{len(positions)} atom(s) it holds. Check the cell and the units of the coordinates (A)."
        )
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    # vesin's i -> j with vector r_j - r_i + S @ cell: i is our destination, j our source.
    i, j, shifts = calculator.compute(points=positions, box=box, periodic=pbc.tolist(), quantities="ijS")
    return j.astype(np.int64), i.astype(np.int64), shifts.astype(np.int64)
