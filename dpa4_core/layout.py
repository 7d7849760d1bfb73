"""Index bookkeeping of the equivariant features: which (l, m) sits where. Pure Python, no tensors.

* packed ``(l, m)`` order: index ``l^2 + l + m``, ``P = (L+1)^2`` entries (node features, Wigner columns);
* m-major "kept" order used inside the SO(2) block: ``m = 0`` for ``l = 0..L``, then for ``m = 1..M`` the ``-m``
  block (``l = m..L``) and the ``+m`` block (``l = m..L``); ``K = (L+1) + sum_m 2 (L-m+1)`` entries.

Both :mod:`dpa4_core.geometry` (the truncated rotation) and :mod:`dpa4_core.nn` (linear maps, norms, SO(2)
layers) index features this way, so the definition lives below both.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def kept_layout(lmax: int, mmax: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The m-major kept order: per kept row its packed index, its degree l and its signed order m."""
    packed, degrees, orders = [], [], []
    for l in range(lmax + 1):
        packed.append(l * l + l), degrees.append(l), orders.append(0)
    for m in range(1, mmax + 1):
        for sign in (-1, 1):
            for l in range(m, lmax + 1):
                packed.append(l * l + l + sign * m), degrees.append(l), orders.append(sign * m)
    return tuple(packed), tuple(degrees), tuple(orders)


@lru_cache(maxsize=None)
def degree_of_packed(lmax: int) -> tuple[int, ...]:
    """Degree l of each packed index ``0..(L+1)^2 - 1``."""
    return tuple(l for l in range(lmax + 1) for _ in range(2 * l + 1))


@lru_cache(maxsize=None)
def wigner_gather_index(lmax: int, mmax: int) -> tuple[int, ...]:
    """Flat index into ``cat([D^l_kept.flatten() for l] + [0])`` for each entry of the dense ``[K, P]`` matrix."""
    offsets, offset = [], 0
    for l in range(lmax + 1):
        offsets.append(offset)
        offset += (2 * min(l, mmax) + 1) * (2 * l + 1)
    zero = offset  # index of the appended zero column
    packed, degrees, orders = kept_layout(lmax, mmax)
    index = []
    for l, m in zip(degrees, orders):
        row = m + min(l, mmax)  # row inside the truncated block (rows m = -min(l,M)..min(l,M))
        for col_l in range(lmax + 1):
            for col_m in range(-col_l, col_l + 1):
                index.append(offsets[l] + row * (2 * l + 1) + col_m + l if col_l == l else zero)
    return tuple(index)
