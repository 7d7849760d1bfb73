"""Molecular dynamics: batched Langevin NVT (dpa4_core.dynamics.md_batch) and the ASE helpers (dpa4_core.dynamics.ase_md).

What is checked and why:
- With zero friction the batched BAOAB integrator is velocity Verlet, so from the same initial velocities it
  must follow ASE's ``VelocityVerlet`` with ``DPA4Calculator`` (exact comparison; the stand-in model is a smooth
  Lennard-Jones with DPA4's interface, since the integrator is under test), and conserve energy.
- Langevin NVT thermalises many real structures at once to the target temperature (a statistical check with
  a tolerance far outside the expected fluctuation but far inside a wrong-units error), reports them intact,
  and flags a broken candidate (two atoms pushed almost on top of each other) as not intact.
- The ASE helpers run every ensemble: NVE conserves energy, the thermostats reach the temperature, NPT at high
  pressure shrinks the cell relative to zero pressure; bad ensembles raise clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.md.velocitydistribution import Stationary

from dpa4_core.dynamics.ase_md import _thermalize
from ase.md.verlet import VelocityVerlet

from dpa4_core.dynamics import BatchSetupError, md_batch
from dpa4_core.testing.pair import LennardJones
from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_pymatgen_json
from dpa4_core.dynamics.ase_md import ENSEMBLES, MDSetupError, run_md

LJ = dict(sigma=2.4, epsilon=0.2, cutoff=5.0)


def lj_model() -> LennardJones:
    return LennardJones(**LJ)


def lj_calculator():
    from dpa4_core.calculator import DPA4Calculator

    return DPA4Calculator(model=lj_model(), dtype="float64")


def alloy_frames(n: int) -> list[Atoms]:
    """``n`` real Mo-Nb / Ta-W solid-solution cells (16 atoms), relaxed-ish starting points from DFT data."""
    frames = []
    for name in ("NbMo_SS.json.gz", "TaW_SS.json.gz"):
        for k, frame in enumerate(read_pymatgen_json(vendored("maml_MoNbTaW", name))):
            if k >= n // 2:
                break
            frames.append(frame.atoms)
    return frames


def test_frictionless_batch_equals_ase_velocity_verlet():
    structures = alloy_frames(2)
    for k, atoms in enumerate(structures):
        _thermalize(atoms, temperature_K=600, rng=np.random.default_rng(k))
        Stationary(atoms)
    steps, dt = 40, 2.0
    results = md_batch(structures, lj_model(), temperature=600, friction=0.0, steps=steps, timestep=dt,
                       dtype="float64")  # the structures' own momenta are used
    for atoms, result in zip(structures, results):
        ref = atoms.copy()
        ref.set_momenta(atoms.get_momenta())
        ref.calc = lj_calculator()
        e0 = ref.get_total_energy()
        VelocityVerlet(ref, timestep=dt * units.fs).run(steps)
        ref.wrap()
        delta = result.structure.positions - ref.positions
        delta -= np.round(delta @ np.linalg.inv(ref.cell.array)) @ ref.cell.array  # same atom across the wrap
        assert np.abs(delta).max() < 1e-8
        assert abs(ref.get_total_energy() - e0) / len(ref) < 2e-3  # the reference conserves energy too
        assert result.max_displacement > 0.05  # atoms really moved


def test_langevin_many_structures_thermalise_and_stay_intact():
    structures = alloy_frames(8)
    results = md_batch(structures, lj_model(), temperature=500, steps=300, timestep=2.0, friction=0.05, seed=3)
    temperatures = np.array([r.temperature for r in results])
    assert abs(temperatures.mean() - 500) < 75, temperatures
    for result in results:
        assert result.intact
        assert 0.05 < result.max_displacement < 2.0
        assert np.isfinite(result.epot_drift)
        assert result.min_distance > 1.8


def test_broken_candidate_is_flagged_not_intact():
    good = bulk("Mo", "bcc", a=3.1, cubic=True).repeat(2)
    broken = good.copy()
    broken.positions[1] = broken.positions[0] + [0.9, 0.0, 0.0]  # an atom pushed into its neighbour
    results = md_batch([good, broken], lj_model(), temperature=300, steps=60, timestep=1.0, seed=0)
    assert results[0].intact
    assert not results[1].intact
    assert results[1].max_displacement > 2.0 or results[1].min_distance < 1.0


def test_md_batch_rejects_bad_parameters():
    with pytest.raises(BatchSetupError, match="timestep"):
        md_batch([bulk("Mo")], lj_model(), timestep=0.0)


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_ase_ensembles_run_with_dpa4_calculator(ensemble):
    atoms = alloy_frames(2)[0]
    final, log = run_md(atoms, lj_calculator(), ensemble, steps=200, timestep=2.0, temperature=400,
                        loginterval=10, friction=0.05, tdamp=50.0, pdamp=500.0)
    data = log.as_arrays()
    assert len(data["time"]) == 21 and np.all(np.isfinite(data["etot"]))
    assert not np.allclose(final.positions, atoms.positions)
    if ensemble == "nve":
        assert np.ptp(data["etot"]) / len(atoms) < 2e-3
    else:
        assert 150 < data["temperature"][5:].mean() < 800


def test_npt_pressure_compresses_the_cell():
    atoms = alloy_frames(2)[0]
    volumes = {}
    for pressure in (0.0, 20.0):
        final, log = run_md(atoms, lj_calculator(), "npt_isotropic", steps=300, timestep=2.0, temperature=300,
                            pressure=pressure, tdamp=50.0, pdamp=300.0, loginterval=10)
        volumes[pressure] = log.as_arrays()["volume"][10:].mean()
    assert volumes[20.0] < 0.97 * volumes[0.0]


def test_md_helpers_reject_bad_ensembles():
    with pytest.raises(MDSetupError, match="nvt_berendsen"):
        run_md(bulk("Mo"), lj_calculator(), "nvt_berendsen", steps=1)
    molecule = Atoms("Mo2", positions=[[0, 0, 0], [0, 0, 2.5]])
    with pytest.raises(MDSetupError, match="periodic"):
        run_md(molecule, lj_calculator(), "npt", steps=1)
