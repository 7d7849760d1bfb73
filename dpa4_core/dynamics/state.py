"""Systems in flight: concatenated per-atom and per-system tensors plus skin neighbour lists.

A :class:`Packed` holds every system currently being relaxed (or integrated) as flat tensors, like
:class:`~dpa4_core.data.batch.AtomsBatch`: per-atom fields have a leading dimension ``n_atoms`` (all systems
concatenated, ``frame`` says which system an atom belongs to) and per-system fields a leading dimension
``n_systems``. Systems leave with :meth:`Packed.select` and enter with :meth:`Packed.concat`; the engine's
typed state (a :class:`Rows` dataclass, with the optimiser's nested in it) follows, so no state is lost when the
batch changes (torch-sim #414).

Neighbour lists are built with ``cutoff + skin`` (vesin, per system, never capped) and kept while no pair can
have come inside ``cutoff`` since the build; only systems that fail that test are rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

import numpy as np
import torch

from dpa4_core.data.batch import AtomsBatch, skin_list_valid
from dpa4_core.data.neighbors import neighbor_list


def rows(kind: Literal["atom", "system"]):
    """A dataclass field of a :class:`Rows` state: a tensor with one row per atom or one row per system."""
    return field(metadata={"rows": kind})


class Rows:
    """Base of typed state dataclasses whose tensors have one row per atom or per system (declared with
    :func:`rows`); fields that are themselves :class:`Rows` (an optimiser's state) follow. Selecting and
    concatenating keeps every field, so no state is lost when systems leave or enter the batch."""

    def select_rows(self, keep: torch.Tensor, atom_keep: torch.Tensor):
        """Copy with the systems where ``keep [F]`` is True (``atom_keep [N]``: their atoms)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Rows):
                changes[f.name] = value.select_rows(keep, atom_keep)
            elif f.metadata.get("rows") is not None:
                changes[f.name] = value[atom_keep if f.metadata["rows"] == "atom" else keep]
        return replace(self, **changes)

    @staticmethod
    def concat_rows(parts: list):
        """All systems of ``parts`` (same type), in order; other fields come from the first part."""
        changes = {}
        for f in fields(parts[0]):
            values = [getattr(p, f.name) for p in parts]
            if isinstance(values[0], Rows):
                changes[f.name] = Rows.concat_rows(values)
            elif f.metadata.get("rows") is not None:
                changes[f.name] = torch.cat(values)
        return replace(parts[0], **changes)


@dataclass
class Packed(Rows):
    """Flat state of the systems in flight.

    Attributes:
        numbers: ``[N]`` atomic numbers (long).
        ref_pos: ``[N, 3]`` positions at the last neighbour-list build (A).
        n_atoms: ``[F]`` atoms per system (long).
        pbc: ``[F, 3]`` (bool).
        ref_cell: ``[F, 3, 3]`` cell at the last build (rows = lattice vectors, A).
        edges: per system, ``(src, dst, shift)`` numpy arrays with local atom indices (list built with skin).
        state: the engine's own per-system state (e.g. the relaxation's), carried along by select/concat.
    """

    numbers: torch.Tensor = rows("atom")
    ref_pos: torch.Tensor = rows("atom")
    n_atoms: torch.Tensor = rows("system")
    pbc: torch.Tensor = rows("system")
    ref_cell: torch.Tensor = rows("system")
    edges: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    state: Rows | None = None
    _edge_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)
    _frame: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def n_systems(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def n_atoms_total(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def frame(self) -> torch.Tensor:
        """System index of every atom ``[n_atoms]`` (long)."""
        if self._frame is None:
            counts = self.n_atoms
            self._frame = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        return self._frame

    def starts(self) -> np.ndarray:
        """``[F + 1]`` first atom of each system (and the total): system ``s`` owns rows ``starts[s]:starts[s+1]``."""
        return np.concatenate([[0], np.cumsum(self.n_atoms.tolist())]).astype(np.int64)

    def select(self, keep: torch.Tensor) -> Packed:
        """The systems where ``keep [n_systems]`` (bool) is True, in order."""
        out = self.select_rows(keep, keep[self.frame])
        out.edges = [e for e, flag in zip(self.edges, keep.tolist()) if flag]
        return out

    @staticmethod
    def concat(parts: list[Packed]) -> Packed:
        """All systems of ``parts``, in order (they must carry the same kind of state)."""
        parts = [p for p in parts if p is not None and p.n_systems > 0]
        if len(parts) == 1:
            return parts[0]
        out = Rows.concat_rows(parts)
        out.edges = [e for p in parts for e in p.edges]
        return out

    def n_edges(self) -> torch.Tensor:
        """Number of (skin) edges per system ``[n_systems]``."""
        return torch.tensor([len(e[0]) for e in self.edges], dtype=torch.long)

    def edge_tensors(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global ``(edge_src, edge_dst, edge_shift)`` of the skin lists, cached until a list changes."""
        if self._edge_cache is None:
            offsets = self.starts()[:-1]
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
    cell = cell if pbc.any() else np.zeros((3, 3))
    return neighbor_list(positions, cell, pbc, radius)


def stale_systems(
    pack: Packed, positions: torch.Tensor, cell: torch.Tensor, cutoff: float, skin: float
) -> torch.Tensor:
    """Systems whose skin list may miss a pair now inside ``cutoff`` ``[n_systems]`` (bool); the bound is
    :func:`dpa4_core.data.batch.skin_list_valid`'s."""
    periodic = pack.pbc.any(dim=1)
    return ~skin_list_valid(positions, cell, pack.ref_pos, pack.ref_cell, periodic, pack.frame, cutoff, skin)


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
    starts = pack.starts()
    pos_np = positions.detach().cpu().double().numpy()
    cell_np = cell.detach().cpu().double().numpy()
    pbc_np = pack.pbc.cpu().numpy()
    indices = torch.nonzero(stale).flatten().tolist()
    for s in indices:
        a, b = starts[s], starts[s + 1]
        pack.edges[s] = build_edges(pos_np[a:b], cell_np[s], pbc_np[s], cutoff + skin)
    atom_stale = stale[pack.frame]
    ref_pos, ref_cell = pack.ref_pos, pack.ref_cell
    pack.ref_pos = torch.where(atom_stale[:, None], positions.to(ref_pos.dtype), ref_pos)
    pack.ref_cell = torch.where(stale[:, None, None], cell.to(ref_cell.dtype), ref_cell)
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
    cell_f = torch.where(pack.pbc.any(dim=1)[:, None, None], cell, torch.zeros_like(cell))
    radius = float(cutoff) if prune else float(cutoff + skin)
    if prune and src.numel():
        vec = positions[src] - positions[dst] + torch.einsum("ej,ejk->ek", shift, cell_f[frame[dst]])
        keep = (vec * vec).sum(dim=1) < radius * radius
        src, dst, shift = src[keep], dst[keep], shift[keep]
    return AtomsBatch(
        numbers=pack.numbers,
        positions=positions.to(dtype),
        cell=cell_f.to(dtype),
        pbc=pack.pbc,
        frame=frame,
        edge_src=src,
        edge_dst=dst,
        edge_shift=shift.to(dtype),
        cutoff=radius,
    )
