"""DPA4 molecular dynamics Maker on atomate2's ``ForceFieldMDMaker``: the atomate2 member of the MD family.

``ensemble`` takes atomate2's names (``"nve"``, ``"nvt"``, ``"npt"``, each with atomate2's ``dynamics`` choice)
and the dpa4 names of :mod:`dpa4_core.dynamics.ensembles` (``"nvt_langevin"``, ``"nvt_nose_hoover"``,
``"npt_isotropic"``, ...), which fix the integrator to the same ASE class ``run_md`` uses.

Units follow atomate2 (and VASP): ``temperature`` in K, ``time_step`` in fs, ``pressure`` in kbar. The
trajectory goes to the ``data`` store, nothing to the working directory (``traj_file=None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ase import units
from ase.md.nose_hoover_chain import IsotropicMTKNPT, MTKNPT, NoseHooverChainNVT
from atomate2.forcefields.md import ForceFieldMDMaker

from dpa4_core.dynamics.ensembles import ATOMATE2, ensemble_name, parse_ensemble
from dpa4_flows.jobs import calculators
from dpa4_flows.jobs.calculators import DPA4CalculatorMixin, default_calculator_kwargs

ATOMATE2_ENSEMBLES = ("nve", "nvt", "npt")  # atomate2's own names: the user's ``dynamics`` choice stays
_CHAIN_INTEGRATORS = (NoseHooverChainNVT, MTKNPT, IsotropicMTKNPT)  # need thermostat (barostat) times


class AtomateNoseHooverChainNVT(NoseHooverChainNVT):
    """ASE's ``NoseHooverChainNVT`` with the ``_temperature_K`` attribute atomate2's temperature schedule writes
    every step (ASE's MTK NPT integrators have it; as with theirs, a changed value does not reach the thermostat,
    so use a constant temperature)."""

    def __init__(self, *args, temperature_K: float, **kwargs) -> None:
        super().__init__(*args, temperature_K=temperature_K, **kwargs)
        self._temperature_K = temperature_K


# The class atomate2 runs for an ASE integrator that needs a small adapter to run there.
_ATOMATE2_ADAPTERS: dict[type, type] = {NoseHooverChainNVT: AtomateNoseHooverChainNVT}


class MDSettingsError(ValueError):
    """An MD option has a value that cannot run (ensemble, time step, number of steps)."""


@dataclass
class DPA4MDMaker(DPA4CalculatorMixin, ForceFieldMDMaker):
    """Molecular dynamics with DPA4: ``ensemble`` "nve" | "nvt" | "npt" (see atomate2's ForceFieldMDMaker) or a
    dpa4 ensemble name (module docstring).

    Defaults: NVT Langevin at 300 K, 2 fs steps (0.5 fs with hydrogen), velocities seeded from
    ``mb_velocity_seed``.
    """

    name: str = "DPA4 MD"
    calculator_meta: str | dict | None = calculators.DPA4_CALCULATOR_META
    calculator_kwargs: dict = field(default_factory=default_calculator_kwargs)

    def __post_init__(self) -> None:
        name = ensemble_name(self.ensemble)
        chosen = parse_ensemble(self.ensemble, MDSettingsError)
        ensemble, integrator = ATOMATE2[chosen]
        dynamics = _ATOMATE2_ADAPTERS.get(integrator, integrator)
        if name not in ATOMATE2_ENSEMBLES:
            if self.dynamics not in (None, integrator, dynamics):
                raise MDSettingsError(f"ensemble={name!r} runs dynamics={dynamics!r}, got dynamics={self.dynamics!r}")
            self.dynamics = dynamics
        self.ensemble = ensemble
        if self.n_steps < 0:
            raise MDSettingsError(f"n_steps={self.n_steps} must be >= 0")
        if self.time_step is not None and self.time_step <= 0:
            raise MDSettingsError(f"time_step={self.time_step} fs must be positive")
        chain = (isinstance(self.dynamics, type) and issubclass(self.dynamics, _CHAIN_INTEGRATORS)) or (
            ensemble == "npt" and self.dynamics in (None, "nose-hoover-chain")
        )
        if chain:
            # ASE's Martyna-Tobias-Klein integrators (atomate2's default NPT) have no default damping times; use
            # the usual 100 and 1000 time steps (ASE time units).
            step = (self.time_step or 2.0) * units.fs
            damping = {"tdamp": 100 * step, **({"pdamp": 1000 * step} if ensemble == "npt" else {})}
            self.ase_md_kwargs = {**damping, **(self.ase_md_kwargs or {})}
        super().__post_init__()
        self._dpa4_post_init()
