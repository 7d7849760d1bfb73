"""DPA4 as a torch-sim model: ``ts.optimize``, ``ts.integrate`` and ``ts.static`` run on batches of systems.

Install with ``pip install "dpa4[torchsim]"`` (torch-sim-atomistic >= 0.3). Conventions, checked against
:class:`~dpa4_core.calculator.DPA4Calculator` by ``tests/core/test_torchsim.py``:

- torch-sim's ``SimState.cell`` holds the lattice vectors as COLUMNS; DPA4 (like ASE) uses rows, so the adapter
  reads ``state.row_vector_cell``.
- The stress is ASE's (eV/A^3, tension positive, ``[n_systems, 3, 3]``), which is what torch-sim's cell filters
  and ``ts.io.state_to_atoms`` expect; energies are eV ``[n_systems]``, forces eV/A ``[n_atoms, 3]``.
- ``state.pbc`` is one flag for the whole batch (torch-sim 0.3); systems that are not periodic get zero stress.

Example::

    import torch_sim as ts
    from dpa4_core.torchsim import DPA4Model

    model = DPA4Model()                       # the starter checkpoint, float64, CPU
    relaxed = ts.optimize(system=atoms_list, model=model, optimizer=ts.frechet_cell_fire,
                          convergence_fn=ts.generate_force_convergence_fn(force_tol=0.05))
    atoms_out = ts.io.state_to_atoms(relaxed)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as exc:  # pragma: no cover - exercised only without the optional dependency
    raise ImportError(
        "dpa4_core.torchsim needs torch-sim: pip install 'dpa4[torchsim]' (or torch-sim-atomistic)"
    ) from exc

from dpa4_core.data.batch import AtomsBatch, resolve_dtype
from dpa4_core.data.neighbors import neighbor_list
from dpa4_core.io.checkpoint import load_for_inference
from dpa4_core.model.domain import check_elements
from dpa4_core.pretrained import starter_checkpoint

if TYPE_CHECKING:
    from dpa4_core.model.energy import DPA4


class TorchSimSetupError(ValueError):
    """The adapter was given a bad model, checkpoint or dtype."""


class DPA4Model(ModelInterface):
    """torch-sim ``ModelInterface`` around a DPA4 model.

    Args:
        model: a ``DPA4``, a checkpoint path, or None for the shipped starter checkpoint.
        device: torch device to run on.
        dtype: "float64" (default, what torch-sim's optimisers are tested with) or "float32"; the adapter works
            on a cast, frozen copy, the caller's model is untouched.
        compute_forces, compute_stress: which derivatives ``forward`` returns (stress is needed by the cell
            filters and NPT integrators).
        allow_untrained_elements: evaluate systems with elements outside the model's training set (with a
            warning) instead of raising ``UntrainedElementError``.
    """

    def __init__(
        self,
        model: DPA4 | str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float64",
        compute_forces: bool = True,
        compute_stress: bool = True,
        allow_untrained_elements: bool = False,
    ) -> None:
        super().__init__()
        self._device = torch.device(device)
        self._dtype = resolve_dtype(dtype, TorchSimSetupError)
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff: neighbours grow with density
        source = model if model is not None else starter_checkpoint()
        self.model = load_for_inference(source, self._dtype, self._device, TorchSimSetupError)
        self.cutoff = float(self.model.config.cutoff)
        self.allow_untrained_elements = bool(allow_untrained_elements)
        self._accepted_numbers: frozenset[int] = frozenset()  # warn once per element set, not every step

    def _check_elements(self, numbers: torch.Tensor) -> None:
        found = frozenset(int(z) for z in torch.unique(numbers).tolist())
        if not found <= self._accepted_numbers:
            check_elements(self.model, found, self.allow_untrained_elements, "torch-sim state")
            self._accepted_numbers |= found

    def batch(self, state: ts.SimState) -> AtomsBatch:
        """The :class:`AtomsBatch` (cell rows, per-system neighbour lists) of a torch-sim state."""
        positions = state.positions.detach().to(device=self._device, dtype=self._dtype)
        n_systems = int(state.n_systems)
        pbc_flag = bool(torch.as_tensor(state.pbc).all())
        pbc = torch.full((n_systems, 3), pbc_flag, dtype=torch.bool, device=self._device)
        cell = state.row_vector_cell.detach().to(device=self._device, dtype=self._dtype)
        if not pbc_flag:
            cell = torch.zeros_like(cell)
        system_idx = state.system_idx.to(self._device)
        counts = torch.bincount(system_idx, minlength=n_systems).tolist()
        pos_np, cell_np = positions.cpu().double().numpy(), cell.cpu().double().numpy()
        srcs, dsts, shifts, start = [], [], [], 0
        for s, count in enumerate(counts):
            src, dst, shift = neighbor_list(pos_np[start:start + count], cell_np[s], np.full(3, pbc_flag),
                                            self.cutoff, label=f"system {s}")
            srcs.append(src + start)
            dsts.append(dst + start)
            shifts.append(shift.reshape(-1, 3))
            start += count
        as_long = dict(dtype=torch.long, device=self._device)
        return AtomsBatch(
            numbers=state.atomic_numbers.to(**as_long), positions=positions, cell=cell, pbc=pbc,
            frame=system_idx.to(**as_long),
            edge_src=torch.as_tensor(np.concatenate(srcs), **as_long),
            edge_dst=torch.as_tensor(np.concatenate(dsts), **as_long),
            edge_shift=torch.as_tensor(np.concatenate(shifts), dtype=self._dtype, device=self._device),
            cutoff=self.cutoff,
        )

    def forward(self, state: ts.SimState | dict[str, Any], **kwargs: Any) -> dict[str, torch.Tensor]:
        """``energy [n_systems]`` (eV), ``forces [n_atoms, 3]`` (eV/A), ``stress [n_systems, 3, 3]`` (eV/A^3, ASE
        sign), detached, in the adapter's dtype. The state is not modified."""
        if isinstance(state, dict):
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"]))
        self._check_elements(state.atomic_numbers)
        batch = self.batch(state)
        out = self.model(batch, compute_forces=self._compute_forces, compute_stress=self._compute_stress)
        results = {"energy": out["energy"].detach()}
        if self._compute_forces:
            results["forces"] = out["forces"].detach()
        if self._compute_stress:
            results["stress"] = out["stress"].detach()
        return results
