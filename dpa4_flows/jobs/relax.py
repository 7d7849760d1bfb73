"""DPA4 relaxation and single-point Makers on atomate2's force-field makers.

Outputs are atomate2 ``ForceFieldTaskDocument``s (trajectories in the ``data`` store). Differences from the
parents, and why:

- ``calculator_meta = "dpa4_core.DPA4Calculator"`` with ``calculator_kwargs = {model, device, dtype}`` taken
  from :mod:`dpa4_flows.settings`; the calculator comes from :mod:`dpa4_flows.jobs.calculators`, so the model is
  loaded once per process, not once per (deserialised) job, and each job gets its own calculator.
- ``relax_kwargs["final_atoms_object_file"] = None``: atomate2's relaxer otherwise appends to
  ``./final_atoms_object.xyz`` in the working directory on every call.
- Any other calculator import path (e.g. ``"ase.calculators.emt.EMT"``) also works, which the tests use to
  check the plumbing without a trained model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from atomate2.forcefields.jobs import ForceFieldRelaxMaker, ForceFieldStaticMaker

from dpa4_flows.jobs import calculators
from dpa4_flows.jobs.calculators import DPA4CalculatorMixin, default_calculator_kwargs
from dpa4_flows.settings import get_settings


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
