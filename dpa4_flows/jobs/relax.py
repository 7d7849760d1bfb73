"""DPA4 relaxation and single-point Makers on atomate2's force-field makers.

Outputs are atomate2 ``ForceFieldTaskDocument``s (trajectories in the ``data`` store). Differences from the
parents, and why:

- ``calculator_meta = "dpa4_core.DPA4Calculator"`` with ``calculator_kwargs = {model, device, dtype}`` taken
  from :mod:`dpa4_flows.settings`; the calculator comes from :mod:`dpa4_flows.jobs.calculators`, so the model is
  loaded once per process, not once per (deserialised) job.
- ``relax_kwargs["final_atoms_object_file"] = None``: atomate2's relaxer otherwise appends to
  ``./final_atoms_object.xyz`` in the working directory on every call.
- Any other calculator import path (e.g. ``"ase.calculators.emt.EMT"``) also works, which the tests use to
  check the plumbing without a trained model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atomate2.forcefields.jobs import ForceFieldRelaxMaker, ForceFieldStaticMaker

from dpa4_flows.jobs import calculators
from dpa4_flows.settings import get_settings


def default_calculator_kwargs() -> dict[str, Any]:
    """``{"model": <absolute checkpoint path>, "device": ..., "dtype": ...}`` from the current settings."""
    settings = get_settings()
    return {"model": str(settings.model), "device": settings.device, "dtype": settings.dtype}


def dpa4_calculator_kwargs(model: str | None = None, device: str | None = None, dtype: str | None = None) -> dict:
    """Calculator keyword arguments with the given values replacing the settings' defaults (absolute path)."""
    kwargs = default_calculator_kwargs()
    if model is not None:
        kwargs["model"] = str(calculators.checkpoint_path(model))
    if device is not None:
        kwargs["device"] = device
    if dtype is not None:
        kwargs["dtype"] = dtype
    return kwargs


class DPA4CalculatorMixin:
    """Gets the ASE calculator from the process-wide cache and labels task documents "DPA4"."""

    def _get_calculator(self):
        return calculators.get_calculator(self.calculator_meta, **self.calculator_kwargs)

    def _dpa4_post_init(self) -> None:
        if str(self.calculator_meta) == calculators.DPA4_CALCULATOR_META:
            # atomate2 reads the document's name from "forcefield_name" (its mixin sets "force_field_name").
            self.task_document_kwargs["forcefield_name"] = "DPA4"

    @property
    def model_id(self) -> str:
        """``sha256:<hex>`` of the checkpoint (or the calculator import path for non-DPA4 calculators)."""
        return calculators.model_identifier(str(self.calculator_meta), self.calculator_kwargs)


def _no_stray_files(relax_kwargs: dict) -> dict:
    return {"final_atoms_object_file": None, **relax_kwargs}


@dataclass
class DPA4RelaxMaker(DPA4CalculatorMixin, ForceFieldRelaxMaker):
    """Relax a structure (positions and, by default, the cell) with DPA4. See atomate2's
    ``ForceFieldRelaxMaker`` for every option; ``relax_kwargs["fmax"]`` is in eV/A."""

    name: str = "DPA4 relax"
    calculator_meta: str | dict | None = calculators.DPA4_CALCULATOR_META
    calculator_kwargs: dict = field(default_factory=default_calculator_kwargs)
    relax_kwargs: dict = field(default_factory=lambda: {"fmax": get_settings().fmax})
    steps: int = field(default_factory=lambda: get_settings().max_steps)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.relax_kwargs = _no_stray_files(self.relax_kwargs)
        self._dpa4_post_init()


@dataclass
class DPA4StaticMaker(DPA4CalculatorMixin, ForceFieldStaticMaker):
    """Energy, forces and stress of a structure with DPA4 (one evaluation, no relaxation)."""

    name: str = "DPA4 static"
    calculator_meta: str | dict | None = calculators.DPA4_CALCULATOR_META
    calculator_kwargs: dict = field(default_factory=default_calculator_kwargs)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.relax_kwargs = _no_stray_files(self.relax_kwargs)
        self._dpa4_post_init()
