"""AtomsBatch: many frames of different sizes, periodic or not, as flat tensors plus a neighbour graph.

Conventions (written once, here):
    - ``cell`` rows are lattice vectors (ASE); a frame open in every direction has a zero cell. A slab or wire
      (periodic along some directions only) keeps its whole cell: its open rows carry no edge shift and only
      enter the stress volume.
    - Edge ``e`` goes from ``edge_src[e]`` (j) to ``edge_dst[e]`` (i); ``r_ij = pos[j] - pos[i] + shift @ cell``.
    - Stress is ASE's: eV/A^3, tension positive, ``sigma = (1/V) dE/d(strain)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase import Atoms

from dpa4_core.data.neighbors import InvalidStructureError, neighbor_list, periodic_measure

__all__ = ["AtomsBatch", "InvalidStructureError", "resolve_dtype", "skin_list_valid", "to_atoms", "validate_atoms"]

MAX_ATOMIC_NUMBER = 118
DTYPES = {"float32": torch.float32, "float64": torch.float64}
MIN_DISTANCE = 1e-3  # A; closer atoms are "coincident" and rejected


def resolve_dtype(dtype: str | torch.dtype, error: type[ValueError] = ValueError) -> torch.dtype:
    """``"float32"``/``"float64"`` (or those torch dtypes) -> torch dtype; anything else raises ``error``."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise error(f"dtype {dtype!r} is not supported; use 'float32' or 'float64'")
    return DTYPES[name]


def skin_list_valid(
    positions: torch.Tensor,
    cell: torch.Tensor,
    ref_positions: torch.Tensor,
    ref_cell: torch.Tensor,
    periodic: torch.Tensor,
    frame: torch.Tensor,
    cutoff: float,
    skin: float,
) -> torch.Tensor:
    """Per system ``[F]`` (bool): can a neighbour list built with ``cutoff + skin`` at the reference geometry
    still be used now, i.e. no pair can be inside ``cutoff`` that was not inside ``cutoff + skin`` at the build?

    Args: ``positions``, ``ref_positions`` ``[N, 3]`` (A, now and at the build); ``cell``, ``ref_cell``
    ``[F, 3, 3]`` (rows = lattice vectors); ``periodic`` ``[F]`` (bool): the frame has a cell, i.e. any direction
    is periodic (slabs and wires included); ``frame`` ``[N]`` system of each atom.

    With cell rows ``C`` and a pair vector ``r = d C`` (``d`` fractional), ``|r_old| <= |r_new| ||C_new^-1 C_old||
    + |dd C_old|`` and ``|dd C_old| <= 2 max_k |(f_k,new - f_k,old) C_old|``. A pair missing from the list had
    ``|r_old| > cutoff + skin``, so none can be inside ``cutoff`` now while
    ``cutoff ||C_new^-1 C_old|| + 2 max_k |moved_k| < cutoff + skin``. For a fixed cell: every atom moved less
    than ``skin / 2``. The bound holds for any invertible cell, so slabs and wires with a vacuum vector use it
    too. Frames open in every direction, and slabs or wires whose open cell vector is zero (a singular cell), use
    the plain displacement; the latter are valid only while their cell has not changed.
    """
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)
    singular = (torch.linalg.det(cell).abs() < 1e-6) | (torch.linalg.det(ref_cell).abs() < 1e-6)
    use_cell = periodic & ~singular
    safe_cell = torch.where(use_cell[:, None, None], cell, eye)
    safe_old = torch.where(use_cell[:, None, None], ref_cell, eye)
    # map = C_new^-1 C_old; positions in the old cell's frame: r_new @ C_new^-1 @ C_old
    mapping = torch.linalg.solve(safe_cell, safe_old)
    stretch = torch.linalg.matrix_norm(mapping, ord=2)
    moved = torch.einsum("ni,nij->nj", positions, mapping[frame]) - ref_positions
    moved2 = (moved * moved).sum(dim=1)
    worst = torch.zeros(cell.shape[0], dtype=moved2.dtype, device=moved2.device)
    worst = worst.scatter_reduce(0, frame, moved2, reduce="amax", include_self=True).sqrt()
    same_cell = (cell == ref_cell).flatten(1).all(dim=1)
    return (cutoff * stretch + 2 * worst < cutoff + skin) & (~(periodic & singular) | same_cell)


def to_atoms(structure, label: str = "structure") -> Atoms:
    """ASE Atoms from an ASE Atoms or a pymatgen Structure/Molecule (copied, never modified in place).

    Anything else (a file name, a list, None) raises :class:`InvalidStructureError` naming ``label`` and the type.
    """
    if isinstance(structure, Atoms):
        return structure.copy()
    from pymatgen.core import SiteCollection
    from pymatgen.io.ase import AseAtomsAdaptor

    if not isinstance(structure, SiteCollection):
        raise InvalidStructureError(
            f"{label} is a {type(structure).__name__} ({str(structure)[:40]!r}), not a structure; pass an "
            "ase.Atoms or a pymatgen Structure/Molecule (read files with ase.io.read or Structure.from_file)"
        )
    return AseAtomsAdaptor.get_atoms(structure)


def frame_cell(atoms: Atoms) -> np.ndarray:
    """The cell a batch keeps for ``atoms`` ``[3, 3]``: the whole cell if any direction is periodic, else zeros."""
    return atoms.cell.array.copy() if atoms.pbc.any() else np.zeros((3, 3))


def validate_atoms(atoms: Atoms, label: str = "structure", check_distances: bool = True) -> None:
    """Raise :class:`InvalidStructureError` with a clear message for input the model cannot evaluate.

    ``check_distances=False`` skips the coincident-atom search, for callers that check the neighbour list they
    build anyway (:func:`check_min_distance`).
    """
    n = len(atoms)
    if n == 0:
        raise InvalidStructureError(f"{label}: empty structure (no atoms)")
    numbers = atoms.numbers
    bad = (numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)
    if bad.any():
        raise InvalidStructureError(
            f"{label}: atomic number(s) {sorted(set(numbers[bad].tolist()))} outside 1..{MAX_ATOMIC_NUMBER}"
        )
    label = f"{label} ({atoms.get_chemical_formula()})"  # safe only once the numbers are valid
    positions = atoms.positions
    if not np.isfinite(positions).all():
        raise InvalidStructureError(f"{label}: positions contain NaN or infinite values")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        cell = atoms.cell.array
        if not np.isfinite(cell).all():
            raise InvalidStructureError(f"{label}: cell contains NaN or infinite values")
        # The periodic vectors must span a volume, or for a slab (2) or wire (1) a plane or a line.
        measure = periodic_measure(cell, pbc)
        if measure < 1e-6 and pbc.all():
            raise InvalidStructureError(f"{label}: periodic cell has zero volume ({measure:.3g} A^3)")
        if measure < 1e-6:
            raise InvalidStructureError(
                f"{label}: the periodic cell vectors {cell[pbc].tolist()} (pbc {pbc.tolist()}) are zero or "
                "parallel; give each periodic direction its own lattice vector"
            )
    if check_distances and n > 1:
        # A 1 A search is ~20x cheaper in vesin than one at MIN_DISTANCE (tiny cells mean many cells to visit).
        cell = frame_cell(atoms)
        src, dst, shifts = neighbor_list(positions, cell, pbc, 1.0, label=label)
        check_min_distance(positions, src, dst, shifts, cell, label)


def check_min_distance(
    positions: np.ndarray, src: np.ndarray, dst: np.ndarray, shifts: np.ndarray, cell: np.ndarray, label: str
) -> None:
    """Raise :class:`InvalidStructureError` if any edge of a neighbour list is shorter than ``MIN_DISTANCE``."""
    if len(src) == 0:
        return
    vectors = positions[src] - positions[dst] + shifts @ cell
    lengths = np.einsum("ij,ij->i", vectors, vectors)
    closest = int(np.argmin(lengths))
    if lengths[closest] < MIN_DISTANCE**2:
        raise InvalidStructureError(
            f"{label}: atoms {int(dst[closest])} and {int(src[closest])} are closer than {MIN_DISTANCE} A (coincident)"
        )


@dataclass
class AtomsBatch:
    """Flat batch of frames with its neighbour graph.

    Shapes: ``numbers [n_atoms]`` (int64), ``positions [n_atoms, 3]``, ``cell [n_frames, 3, 3]``,
    ``pbc [n_frames, 3]`` (bool), ``frame [n_atoms]`` (int64 frame index of each atom),
    ``edge_src``, ``edge_dst [n_edges]`` (int64), ``edge_shift [n_edges, 3]`` (float, integer-valued).
    """

    numbers: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    frame: torch.Tensor
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    edge_shift: torch.Tensor
    cutoff: float

    @property
    def n_frames(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def atoms_per_frame(self) -> torch.Tensor:
        return torch.bincount(self.frame, minlength=self.n_frames)

    @classmethod
    def from_atoms(
        cls,
        structures: Sequence | Atoms,
        cutoff: float,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        validate: bool = True,
    ) -> AtomsBatch:
        """Build a batch (and its neighbour lists) from ASE Atoms or pymatgen Structures."""
        if isinstance(structures, Atoms) or not isinstance(structures, Sequence):
            structures = [structures]
        if len(structures) == 0:
            raise InvalidStructureError("no structures given")
        numbers, positions, cells, pbcs, frames, srcs, dsts, shifts = [], [], [], [], [], [], [], []
        offset = 0
        for index, structure in enumerate(structures):
            label = f"structure {index}"
            atoms = to_atoms(structure, label)
            if validate:
                validate_atoms(atoms, label=label, check_distances=False)
            pbc = np.asarray(atoms.pbc, dtype=bool)
            cell = frame_cell(atoms)
            src, dst, shift = neighbor_list(atoms.positions, cell, pbc, cutoff, label=label)
            if validate:
                formula_label = f"{label} ({atoms.get_chemical_formula()})"
                check_min_distance(atoms.positions, src, dst, shift, cell, formula_label)
            numbers.append(atoms.numbers)
            positions.append(atoms.positions)
            cells.append(cell)
            pbcs.append(pbc)
            frames.append(np.full(len(atoms), index))
            srcs.append(src + offset)
            dsts.append(dst + offset)
            shifts.append(shift)
            offset += len(atoms)
        as_float = dict(dtype=dtype, device=device)
        as_long = dict(dtype=torch.long, device=device)
        return cls(
            numbers=torch.as_tensor(np.concatenate(numbers), **as_long),
            positions=torch.as_tensor(np.concatenate(positions), **as_float),
            cell=torch.as_tensor(np.stack(cells), **as_float),
            pbc=torch.as_tensor(np.stack(pbcs), dtype=torch.bool, device=device),
            frame=torch.as_tensor(np.concatenate(frames), **as_long),
            edge_src=torch.as_tensor(np.concatenate(srcs), **as_long),
            edge_dst=torch.as_tensor(np.concatenate(dsts), **as_long),
            edge_shift=torch.as_tensor(np.concatenate(shifts).reshape(-1, 3), **as_float),
            cutoff=float(cutoff),
        )

    def edge_vectors(self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None) -> torch.Tensor:
        """``r_ij = pos[src] - pos[dst] + shift @ cell[frame]``, shape ``[n_edges, 3]``.

        Pass ``positions``/``cell`` to differentiate through them (e.g. a strain for the stress).
        """
        positions = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        frame_of_edge = self.frame[self.edge_dst]
        shift = torch.einsum("ej,ejk->ek", self.edge_shift, cell[frame_of_edge])
        return positions[self.edge_src] - positions[self.edge_dst] + shift

    def volume(self) -> torch.Tensor:
        """Cell volume per frame ``[n_frames]`` (0 for frames open in every direction; the whole cell's volume,
        vacuum included, for slabs and wires)."""
        return torch.linalg.det(self.cell).abs()

    def to(self, device=None, dtype: torch.dtype | None = None) -> AtomsBatch:
        """Copy with float tensors cast to ``dtype`` and everything moved to ``device``."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                cast = dtype if (dtype is not None and value.is_floating_point()) else None
                changes[f.name] = value.to(device=device, dtype=cast)
        return replace(self, **changes)
