"""DPA4 molecular dynamics Maker (NVE, NVT, NPT) on atomate2's ``ForceFieldMDMaker``.

Units follow atomate2 (and VASP): ``temperature`` in K, ``time_step`` in fs, ``pressure`` in kbar. The
trajectory goes to the ``data`` store, nothing to the working directory (``traj_file=None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ase import units
from atomate2.forcefields.md import ForceFieldMDMaker

from dpa4_flows.jobs import calculators
from dpa4_flows.jobs.calculators import DPA4CalculatorMixin, default_calculator_kwargs

ENSEMBLES = ("nve", "nvt", "npt")


class MDSettingsError(ValueError):
    """An MD option has a value that cannot run (ensemble, time step, number of steps)."""


@dataclass
class DPA4MDMaker(DPA4CalculatorMixin, ForceFieldMDMaker):
    """Molecular dynamics with DPA4: ``ensemble`` "nve" | "nvt" | "npt" (see atomate2's ForceFieldMDMaker).

    Defaults: NVT Langevin at 300 K, 2 fs steps (0.5 fs with hydrogen), velocities seeded from
    ``mb_velocity_seed``.
    """

    name: str = "DPA4 MD"
    calculator_meta: str | dict | None = calculators.DPA4_CALCULATOR_META
    calculator_kwargs: dict = field(default_factory=default_calculator_kwargs)

    def __post_init__(self) -> None:
        ensemble = str(getattr(self.ensemble, "value", self.ensemble)).split("MDEnsemble.")[-1].lower()
        if ensemble not in ENSEMBLES:
            raise MDSettingsError(f"ensemble={self.ensemble!r}; allowed: {', '.join(ENSEMBLES)}")
        if self.n_steps < 0:
            raise MDSettingsError(f"n_steps={self.n_steps} must be >= 0")
        if self.time_step is not None and self.time_step <= 0:
            raise MDSettingsError(f"time_step={self.time_step} fs must be positive")
        if ensemble == "npt" and self.dynamics in (None, "nose-hoover-chain"):
            # atomate2's default NPT integrator (ASE's MTKNPT) has no default damping times; use the
            # usual 100 and 1000 time steps (ASE time units).
            step = (self.time_step or 2.0) * units.fs
            self.ase_md_kwargs = {"tdamp": 100 * step, "pdamp": 1000 * step, **(self.ase_md_kwargs or {})}
        super().__post_init__()
        self._dpa4_post_init()
