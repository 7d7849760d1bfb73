"""Molecular dynamics of one system through ASE's integrators with :class:`~dpa4_core.calculator.DPA4Calculator`.

Ensembles: every name of :mod:`dpa4_core.dynamics.ensembles` (time in fs, temperature in K, pressure in GPa at
this interface):

- ``"nve"``: velocity Verlet.
- ``"nvt_langevin"`` (alias ``"nvt"``): ``ase.md.langevin.Langevin`` (friction in 1/fs).
- ``"nvt_nose_hoover"``: ``ase.md.nose_hoover_chain.NoseHooverChainNVT`` (thermostat time ``tdamp``).
- ``"npt"``: ``ase.md.nose_hoover_chain.MTKNPT`` (Martyna-Tobias-Klein, full cell; ``tdamp``, ``pdamp``).
- ``"npt_isotropic"``: ``IsotropicMTKNPT`` (volume only).

For many candidates at once (a quick stability check) use :func:`dpa4_core.dynamics.md_batch` instead; the
atomate2 job is ``dpa4_flows.jobs.md.DPA4MDMaker``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary

try:  # ASE >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
    from ase.md.velocitydistribution import thermalize_momenta as _thermalize
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _thermalize
from tqdm.auto import tqdm

from dpa4_core.data.batch import to_atoms
from dpa4_core.dynamics.ensembles import ASE_INTEGRATORS, ENSEMBLES, Ensemble, parse_ensemble

logger = logging.getLogger(__name__)

__all__ = ["ENSEMBLES", "MDLog", "MDSetupError", "make_dynamics", "run_md"]


class MDSetupError(ValueError):
    """Unknown ensemble or a bad MD parameter (names the value)."""


@dataclass
class MDLog:
    """Observables every ``loginterval`` steps (arrays of equal length).

    Attributes: ``time`` (fs), ``epot``, ``ekin``, ``etot`` (eV, whole system), ``temperature`` (K),
    ``volume`` (A^3, 0 for molecules).
    """

    time: list[float] = field(default_factory=list)
    epot: list[float] = field(default_factory=list)
    ekin: list[float] = field(default_factory=list)
    etot: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}


def _calculator(calculator: Any, dtype: str, device: str):
    from ase.calculators.calculator import BaseCalculator

    if isinstance(calculator, BaseCalculator):
        return calculator
    from dpa4_core.calculator import DPA4Calculator

    return DPA4Calculator(model=calculator, dtype=dtype, device=device)


def make_dynamics(
    atoms: Atoms,
    ensemble: str | Ensemble = "nvt_langevin",
    *,
    timestep: float = 1.0,
    temperature: float = 300.0,
    friction: float = 0.01,
    tdamp: float = 100.0,
    pressure: float = 0.0,
    pdamp: float = 1000.0,
    seed: int = 0,
    trajectory: str | None = None,
    loginterval: int = 1,
):
    """The ASE dynamics object for ``ensemble`` on ``atoms`` (which must carry a calculator).

    Args:
        timestep: fs. temperature: K. friction: Langevin friction, 1/fs. tdamp, pdamp: thermostat and barostat
            times, fs. pressure: external pressure, GPa. seed: Langevin random seed.
        trajectory: optional ASE trajectory file written every ``loginterval`` steps.
    """
    chosen = parse_ensemble(ensemble, MDSetupError)
    if not (timestep > 0 and temperature >= 0 and friction >= 0 and tdamp > 0 and pdamp > 0):
        raise MDSetupError(
            f"need timestep > 0, temperature >= 0, friction >= 0, tdamp > 0, pdamp > 0; got {timestep}, "
            f"{temperature}, {friction}, {tdamp}, {pdamp}"
        )
    if chosen.has_barostat and not atoms.pbc.all():
        raise MDSetupError(f"ensemble {chosen.value!r} needs a periodic structure, got pbc={atoms.pbc.tolist()}")
    dt = timestep * units.fs
    common = {"trajectory": trajectory, "loginterval": loginterval}
    integrator = ASE_INTEGRATORS[chosen]
    if chosen is Ensemble.NVE:
        return integrator(atoms, timestep=dt, **common)
    if chosen is Ensemble.NVT_LANGEVIN:
        return integrator(atoms, timestep=dt, temperature_K=temperature, friction=friction / units.fs, fixcm=False,
                          rng=np.random.default_rng(seed), **common)
    if chosen is Ensemble.NVT_NOSE_HOOVER:
        return integrator(atoms, timestep=dt, temperature_K=temperature, tdamp=tdamp * units.fs, **common)
    return integrator(atoms, timestep=dt, temperature_K=temperature, pressure_au=pressure * units.GPa,
                      tdamp=tdamp * units.fs, pdamp=pdamp * units.fs, **common)


def run_md(
    structure: Any,
    calculator: Any,
    ensemble: str | Ensemble = "nvt_langevin",
    steps: int = 1000,
    *,
    timestep: float = 1.0,
    temperature: float = 300.0,
    init_temperature: float | None = None,
    seed: int = 0,
    loginterval: int = 10,
    trajectory: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    progress: bool | None = None,
    **ensemble_kwargs: Any,
) -> tuple[Atoms, MDLog]:
    """Run ``steps`` of MD and return the final ``Atoms`` and the observables.

    Args:
        structure: ASE Atoms or pymatgen structure (copied; the input is not changed).
        calculator: an ASE calculator (e.g. ``DPA4Calculator``), a DPA4 model or a checkpoint path.
        ensemble: one of :data:`ENSEMBLES` (or ``"nvt"``, an alias of ``"nvt_langevin"``).
        init_temperature: Maxwell-Boltzmann velocities at this temperature (K, zero total momentum) unless the
            structure already has momenta; default ``temperature``.
        seed: seeds the initial velocities and the Langevin noise.
        ensemble_kwargs: ``friction``, ``tdamp``, ``pressure``, ``pdamp`` (see :func:`make_dynamics`).
        progress: tqdm bar over steps; None = only on a terminal.
    """
    chosen = parse_ensemble(ensemble, MDSetupError)
    if int(steps) < 0:
        raise MDSetupError(f"steps must be >= 0, got {steps!r}")
    atoms = to_atoms(structure)
    atoms.calc = _calculator(calculator, dtype, device)
    if not atoms.get_momenta().any():
        t0 = temperature if init_temperature is None else init_temperature
        _thermalize(atoms, temperature_K=t0, rng=np.random.default_rng(seed))
        Stationary(atoms)
    dynamics = make_dynamics(atoms, chosen, timestep=timestep, temperature=temperature, seed=seed,
                             trajectory=trajectory, loginterval=loginterval, **ensemble_kwargs)
    log = MDLog()
    quiet = None if progress is None else not progress
    bar = tqdm(total=int(steps), desc=f"md {chosen.value}", unit="step", disable=quiet)

    def record() -> None:
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        log.time.append(dynamics.get_time() / units.fs)
        log.epot.append(epot)
        log.ekin.append(ekin)
        log.etot.append(epot + ekin)
        log.temperature.append(atoms.get_temperature())
        log.volume.append(atoms.get_volume() if atoms.pbc.all() else 0.0)
        bar.update(loginterval if log.time[-1] > 0 else 0)

    dynamics.attach(record, interval=loginterval)
    dynamics.run(int(steps))
    bar.close()
    return atoms, log
