"""Systems in flight: concatenated per-atom and per-system tensors plus skin neighbour lists.

A :class:`Packed` holds every system currently being relaxed (or integrated) as flat tensors, like
:class:`~dpa4_core.data.batch.AtomsBatch`: per-atom fields have a leading dimension ``n_atoms`` (all systems
concatenated, ``frame`` says which system an atom belongs to) and per-system fields a leading dimension
``n_systems``. Systems leave with :meth:`Packed.select` and enter with :meth:`Packed.concat`; any field an
optimiser adds follows automatically, so no state is lost when the batch changes (torch-sim #414).

Neighbour lists are built with ``cutoff + skin`` (vesin, per system, never capped) and kept while no pair can
have come inside ``cutoff`` since the build; only systems that fail that test are rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dpa4_core.data.batch import AtomsBatch
from dpa4_core.data.neighbors import neighbor_list


@dataclass
class Packed:
    """Flat state of the systems in flight.

    Attributes:
        atom: per-atom tensors ``[n_atoms, ...]``; always ``numbers`` (long) and ``ref_pos`` (positions at the
            last neighbour-list build, A).
        system: per-system tensors ``[n_systems, ...]``; always ``n_atoms`` (long), ``pbc`` ``[F, 3]`` (bool),
            ``ref_cell`` ``[F, 3, 3]`` (cell at the last build, rows = lattice vectors, A) and ``index`` (position
            of the system in the caller's input list).
        edges: per system, ``(src, dst, shift)`` numpy arrays with local atom indices (list built with skin).
    """

    atom: dict[str, torch.Tensor]
    system: dict[str, torch.Tensor]
    edges: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    _edge_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _frame: torch.Tensor | None = field(default=None, repr=False)

    @property
    def n_systems(self) -> int:
        return int(self.system["n_atoms"].shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.atom["numbers"].shape[0])

    @property
    def frame(self) -> torch.Tensor:
        """System index of every atom ``[n_atoms]`` (long)."""
        if self._frame is None:
            counts = self.system["n_atoms"]
            self._frame = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        return self._frame

    def select(self, keep: torch.Tensor) -> Packed:
        """The systems where ``keep [n_systems]`` (bool) is True, in order."""
        atom_keep = keep[self.frame]
        return Packed(
            atom={k: v[atom_keep] for k, v in self.atom.items()},
            system={k: v[keep] for k, v in self.system.items()},
            edges=[e for e, flag in zip(self.edges, keep.tolist()) if flag],
        )

    @staticmethod
    def concat(parts: list[Packed]) -> Packed:
        """All systems of ``parts``, in order (they must carry the same fields)."""
        parts = [p for p in parts if p is not None and p.n_systems > 0]
        if len(parts) == 1:
            return parts[0]
        return Packed(
            atom={k: torch.cat([p.atom[k] for p in parts]) for k in parts[0].atom},
            system={k: torch.cat([p.system[k] for p in parts]) for k in parts[0].system},
            edges=[e for p in parts for e in p.edges],
        )

    def n_edges(self) -> torch.Tensor:
        """Number of (skin) edges per system ``[n_systems]``."""
        return torch.tensor([len(e[0]) for e in self.edges], dtype=torch.long)

    def edge_tensors(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global ``(edge_src, edge_dst, edge_shift)`` of the skin lists, cached until a list changes."""
        if self._edge_cache is None:
            counts = self.system["n_atoms"].tolist()
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            src = np.concatenate([e[0] + o for e, o in zip(self.edges, offsets)])
            dst = np.concatenate([e[1] + o for e, o in zip(self.edges, offsets)])
            shift = np.concatenate([e[2].reshape(-1, 3) for e in self.edges])
            self._edge_cache = (
                torch.as_tensor(src, dtype=torch.long, device=device),
                torch.as_tensor(dst, dtype=torch.long, device=device),
                torch.as_tensor(shift, dtype=torch.float64, device=device),
            )
        return self._edge_cache


def build_edges(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, radius: float):
    """Skin neighbour list of one system: ``(src, dst, shift)`` with local indices (see data.neighbors)."""
    cell = cell if pbc.all() else np.zeros((3, 3))
    return neighbor_list(positions, cell, pbc, radius)


def stale_systems(
    pack: Packed, positions: torch.Tensor, cell: torch.Tensor, cutoff: float, skin: float
) -> torch.Tensor:
    """Systems whose skin list may miss a pair now inside ``cutoff`` ``[n_systems]`` (bool).

    With cell rows ``C`` and a pair vector ``r = d C`` (``d`` fractional), ``|r_old| <= |r_new| ||C_new^-1 C_old||
    + |dd C_old|`` and ``|dd C_old| <= 2 max_k |(f_k,new - f_k,old) C_old|``. A pair missing from the list had
    ``|r_old| > cutoff + skin``, so none can be inside ``cutoff`` now while
    ``cutoff ||C_new^-1 C_old|| + 2 max_k |moved_k| < cutoff + skin``. For a fixed cell: every atom moved less
    than ``skin / 2``. Non-periodic systems use the plain displacement.
    """
    frame = pack.frame
    periodic = pack.system["pbc"].all(dim=1)
    old_cell = pack.system["ref_cell"]
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)
    safe_cell = torch.where(periodic[:, None, None], cell, eye)
    safe_old = torch.where(periodic[:, None, None], old_cell, eye)
    # map = C_new^-1 C_old; positions in the old cell's frame: r_new @ C_new^-1 @ C_old
    mapping = torch.linalg.solve(safe_cell, safe_old)
    stretch = torch.linalg.matrix_norm(mapping, ord=2)
    moved = torch.einsum("ni,nij->nj", positions, mapping[frame]) - pack.atom["ref_pos"]
    moved2 = (moved * moved).sum(dim=1)
    worst = torch.zeros(pack.n_systems, dtype=moved2.dtype, device=moved2.device)
    worst = worst.scatter_reduce(0, frame, moved2, reduce="amax", include_self=True).sqrt()
    bound = cutoff * stretch + 2 * worst
    return ~(bound < cutoff + skin)


def refresh_neighbors(pack: Packed, positions: torch.Tensor, cell: torch.Tensor, cutoff: float, skin: float) -> int:
    """Rebuild the skin lists of stale systems in place; returns how many systems were rebuilt."""
    stale = stale_systems(pack, positions, cell, cutoff, skin)
    # Non-finite geometry (a system that blew up) keeps its old list; the model's NaN then reports it.
    finite = torch.isfinite(cell).flatten(1).all(dim=1)
    bad_atoms = (~torch.isfinite(positions).all(dim=1)).long()
    finite = finite & (torch.zeros_like(stale, dtype=torch.long).index_add(0, pack.frame, bad_atoms) == 0)
    stale = stale & finite
    if not bool(stale.any()):
        return 0
    counts = pack.system["n_atoms"].tolist()
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pos_np = positions.detach().cpu().double().numpy()
    cell_np = cell.detach().cpu().double().numpy()
    pbc_np = pack.system["pbc"].cpu().numpy()
    indices = torch.nonzero(stale).flatten().tolist()
    for s in indices:
        a, b = starts[s], starts[s + 1]
        pack.edges[s] = build_edges(pos_np[a:b], cell_np[s], pbc_np[s], cutoff + skin)
    atom_stale = stale[pack.frame]
    ref_pos, ref_cell = pack.atom["ref_pos"], pack.system["ref_cell"]
    pack.atom["ref_pos"] = torch.where(atom_stale[:, None], positions.to(ref_pos.dtype), ref_pos)
    pack.system["ref_cell"] = torch.where(stale[:, None, None], cell.to(ref_cell.dtype), ref_cell)
    pack._edge_cache = None
    return len(indices)


def make_batch(
    pack: Packed,
    positions: torch.Tensor,
    cell: torch.Tensor,
    cutoff: float,
    skin: float,
    dtype: torch.dtype,
    prune: bool = True,
) -> AtomsBatch:
    """The model's :class:`AtomsBatch` for the current geometry, from the skin lists.

    With ``prune`` the edges longer than ``cutoff`` are dropped first (one gather and a mask): the model's result
    is the same either way (its envelope is zero beyond its cutoff), but it then does not pay for the skin.
    """
    src, dst, shift = pack.edge_tensors(positions.device)
    frame = pack.frame
    cell_f = torch.where(pack.system["pbc"].all(dim=1)[:, None, None], cell, torch.zeros_like(cell))
    radius = float(cutoff) if prune else float(cutoff + skin)
    if prune and src.numel():
        vec = positions[src] - positions[dst] + torch.einsum("ej,ejk->ek", shift, cell_f[frame[dst]])
        keep = (vec * vec).sum(dim=1) < radius * radius
        src, dst, shift = src[keep], dst[keep], shift[keep]
    return AtomsBatch(
        numbers=pack.atom["numbers"],
        positions=positions.to(dtype),
        cell=cell_f.to(dtype),
        pbc=pack.system["pbc"],
        frame=frame,
        edge_src=src,
        edge_dst=dst,
        edge_shift=shift.to(dtype),
        cutoff=radius,
    )
