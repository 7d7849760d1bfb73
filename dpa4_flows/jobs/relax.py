"""DPA4 relaxation and single-point Makers on atomate2's force-field makers.

Outputs are atomate2 ``ForceFieldTaskDocument``s (trajectories in the ``data`` store). Differences from the
parents, and why:

- ``calculator_meta = "dpa4_core.DPA4Calculator"`` with ``calculator_kwargs = {model, device, dtype}`` taken
  from :mod:`dpa4_flows.settings` (add ``allow_untrained_elements=True`` to evaluate elements the model was not
  trained on); the calculator comes from :mod:`dpa4_flows.jobs.calculators`, so the model is loaded once per
  process, not once per (deserialised) job, and each job gets its own calculator.
- ``DPA4RelaxMaker`` relaxes in float64 by default, whatever ``settings.dtype`` says: see
  :func:`relax_calculator_kwargs`.
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


def relax_calculator_kwargs() -> dict:
    """The settings' calculator kwargs with ``dtype="float64"``.

    Why: float32 round-off differs between the stress components, so a float32 relaxation leaves a cubic cell
    non-cubic by ~1e-8 relative (off-diagonal cell entries ~1e-7 A). Relaxed structures feed symmetry analyses:
    atomate2's ElasticMaker expands strains with the cell's symmetry operations and sorts strain components with a
    1e-10 tolerance, so that noise became spurious strain states and C11 = 1e8 GPa for bcc W (307 GPa in
    float64). The float32 stress itself is fine (a +-0.5 % stress-strain fit agrees with float64 to 1e-4); the
    symmetry of the relaxed geometry is what float32 cannot keep. Pass ``calculator_kwargs`` with
    ``dtype="float32"`` to trade that for speed.
    """
    return {**default_calculator_kwargs(), "dtype": "float64"}


@dataclass
class DPA4RelaxMaker(DPA4CalculatorMixin, ForceFieldRelaxMaker):
    """Relax a structure (positions and, by default, the cell) with DPA4. See atomate2's
    ``ForceFieldRelaxMaker`` for every option; ``relax_kwargs["fmax"]`` is in eV/A. Relaxes in float64 by
    default (see :func:`relax_calculator_kwargs`)."""

    name: str = "DPA4 relax"
    calculator_meta: str | dict | None = calculators.DPA4_CALCULATOR_META
    calculator_kwargs: dict = field(default_factory=relax_calculator_kwargs)
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
