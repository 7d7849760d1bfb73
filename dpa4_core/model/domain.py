"""A model's domain of competence: the elements it was trained on, and (deepmd-kit checkpoints) how many
neighbours an atom may have.

A checkpoint records the atomic numbers seen in training (``model.trained_elements``, set by
:func:`dpa4_core.io.checkpoint.load_checkpoint`). A model evaluated on any other element still returns numbers, but
they are extrapolation with no data behind them (Cu relaxed by the Mo-Nb-Ta-W starter to a = 4.13 A, Fe "on the
hull"), so every place where a model meets structures (calculator, batched engine, jobs, ``dpa4 eval``) calls
:func:`check_elements` and refuses them unless the caller opts in with ``allow_untrained_elements=True``.
A model without a record (freshly built, or from an old checkpoint with ``elements`` None) is not checked.

deepmd-kit keeps only the nearest ``sum(sel)`` neighbours of an atom, dpa4 keeps every neighbour inside the cutoff:
a model converted from deepmd-kit carries that cap (``DPA4Config.neighbor_cap``) and :func:`check_neighbor_cap`
warns (:class:`NeighborCapWarning`) whenever an atom has more, since there the two answers differ.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable

import torch

from ase.data import chemical_symbols

logger = logging.getLogger(__name__)


class UntrainedElementError(ValueError):
    """A structure holds an element outside the model's training set."""


def trained_elements(model) -> frozenset[int]:
    """Atomic numbers the model was trained on; empty when the model carries no record."""
    return frozenset(int(z) for z in (getattr(model, "trained_elements", None) or ()))


def untrained_elements(model, numbers: Iterable[int]) -> list[int]:
    """Sorted atomic numbers of ``numbers`` outside the model's training set ([] when the model has no record)."""
    known = trained_elements(model)
    if not known:
        return []
    return sorted({int(z) for z in numbers} - known)


def _symbols(numbers: Iterable[int]) -> str:
    return ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in numbers)


def check_elements(model, numbers: Iterable[int], allow_untrained: bool = False, where: str = "structure") -> None:
    """Refuse (or, with ``allow_untrained``, warn about) elements the model never saw.

    Args:
        model: a DPA4 (or any module) with an optional ``trained_elements`` list.
        numbers: the atomic numbers of the structure(s).
        allow_untrained: warn instead of raising.
        where: names the structure in the message (e.g. ``"structure 3 (Fe2Si)"``).
    Raises:
        UntrainedElementError: naming the foreign elements and the trained set.
    """
    foreign = untrained_elements(model, numbers)
    if not foreign:
        return
    message = (f"{where} contains {_symbols(foreign)}, which the model was not trained on (trained elements: "
               f"{_symbols(sorted(trained_elements(model)))}); its energies there are extrapolation")
    if allow_untrained:
        logger.warning("%s; going on because allow_untrained_elements=True", message)
        return
    raise UntrainedElementError(f"{message}. Pass allow_untrained_elements=True to evaluate anyway.")


class NeighborCapWarning(UserWarning):
    """An atom has more neighbours than the deepmd-kit model it was converted from keeps (``sum(sel)``)."""


def check_neighbor_cap(cap: int, edge_dst: torch.Tensor, n_atoms: int) -> None:
    """Warn when an atom has more than ``cap`` neighbours (``cap`` 0: no cap). deepmd-kit would drop the farthest
    ones, dpa4 does not, so its energy and forces there are not the original model's."""
    if not cap or edge_dst.numel() <= cap:
        return
    most = int(torch.bincount(edge_dst.detach(), minlength=n_atoms).max())
    if most > cap:
        warnings.warn(f"atoms with up to {most} neighbours inside the cutoff: deepmd-kit keeps the nearest {cap} "
                      "(sum(sel) of the checkpoint) and drops the rest, dpa4 keeps all, so these energies and "
                      "forces differ from the deepmd-kit model's", NeighborCapWarning, stacklevel=3)
