"""Per-structure admission to the batched engines: one bad input gets its own error, the others run.

Every input of :func:`~dpa4_core.dynamics.relax_batch` and :func:`~dpa4_core.dynamics.md_batch` is converted,
validated (:func:`dpa4_core.data.batch.validate_atoms`: empty, NaN, coincident atoms, bad atomic numbers, ...) and
checked against the model's trained elements (:func:`dpa4_core.model.domain.check_elements`) on its own. A
structure that fails never enters a batch: the engine returns an error result for it (``error`` names the
structure and the problem) and the other structures run exactly as they would without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ase import Atoms

from dpa4_core.data.batch import to_atoms, validate_atoms
from dpa4_core.model.domain import check_elements

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admitted:
    """The outcome of admission, one entry per input, in input order.

    Attributes:
        atoms: an ASE copy of each accepted input, None where refused.
        errors: None for accepted inputs, else ``"<ErrorType>: <message naming the structure>"``.
    """

    atoms: list[Atoms | None]
    errors: list[str | None]

    @property
    def accepted(self) -> list[int]:
        """Indices of the accepted inputs."""
        return [i for i, error in enumerate(self.errors) if error is None]


def admit(structures: Sequence, model, allow_untrained_elements: bool = False) -> Admitted:
    """Convert and check every structure on its own (see module docstring); never raises for one structure."""
    atoms_list: list[Atoms | None] = []
    errors: list[str | None] = []
    for i, structure in enumerate(structures):
        label = f"structure {i}"
        try:
            atoms = to_atoms(structure, label=label)
            validate_atoms(atoms, label=label)
            check_elements(model, atoms.numbers, allow_untrained_elements, where=f"{label} ({atoms.get_chemical_formula()})")
        # Anything the conversion or the checks raise is this input's problem, not the batch's.
        except Exception as exc:  # noqa: BLE001
            message = str(exc) if isinstance(exc, ValueError) else f"{label} ({type(structure).__name__}): {exc}"
            errors.append(f"{type(exc).__name__}: {message}")
            atoms_list.append(None)
            logger.warning("refusing %s: %s", label, errors[-1])
            continue
        atoms_list.append(atoms)
        errors.append(None)
    return Admitted(atoms=atoms_list, errors=errors)
