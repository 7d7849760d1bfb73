"""Neighbour lists: vesin, never capped (spec section 1).

Edge convention used everywhere in dpa4: an edge e goes from source ``j = edge_src[e]`` to destination
``i = edge_dst[e]`` and its vector is ``r_ij = r_j - r_i + shift_e @ cell`` (points from the destination atom
to its neighbour). Every neighbour inside the cutoff is kept, in both directions.
"""

from __future__ import annotations

import numpy as np
from vesin import NeighborList


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list of one frame.

    Args:
        positions: ``[n_atoms, 3]`` Cartesian positions in A.
        cell: ``[3, 3]`` cell, rows are lattice vectors (ASE convention); ignored where ``pbc`` is False.
        pbc: ``[3]`` periodic flags. vesin supports all-periodic or all-open frames only.
        cutoff: cutoff radius in A.

    Returns:
        ``(edge_src, edge_dst, shifts)``: int64 ``[n_edges]``, int64 ``[n_edges]`` and integer cell shifts
        ``[n_edges, 3]`` such that ``r_ij = positions[src] - positions[dst] + shifts @ cell``.
    """
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if pbc.any() and not pbc.all():
        raise ValueError(f"mixed periodic boundary conditions {pbc.tolist()} are not supported; use all True or all False")
    periodic = bool(pbc.all())
    box = np.asarray(cell, dtype=np.float64) if periodic else np.zeros((3, 3))
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    # vesin's i -> j with vector r_j - r_i + S @ cell: i is our destination, j our source.
    i, j, shifts = calculator.compute(
        points=np.ascontiguousarray(positions, dtype=np.float64), box=box, periodic=periodic, quantities="ijS"
    )
    return j.astype(np.int64), i.astype(np.int64), shifts.astype(np.int64)
