"""Energy conservation in NVE molecular dynamics (spec section 0: forces are exact derivatives).

ASE VelocityVerlet on a real 16-atom Nb-Mo cell at 300 K, float64, through DPA4Calculator (so neighbour-list
reuse is exercised as in production MD). A conservative, smooth model keeps the total energy constant up to
the O(dt^2) integration error, which oscillates but does not drift. A non-conservative force or a jump in
the energy (at the cutoff or in the neighbour-list reuse) shows up as a drift.
"""

from __future__ import annotations


import numpy as np
import pytest
from ase import units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from dpa4_core.calculator import DPA4Calculator
from dpa4_core.testing import seeded_model

from _vendored import read_vendored


TIMESTEP_FS = 2.0
STEPS = 250  # 0.5 ps
# Bound on the linear drift of the total energy. Typical for a smooth potential with a 2 fs step on a metal:
# well below 1e-4 eV/atom/ps; a discontinuity of 1 meV crossed a few times per ps exceeds it.
MAX_DRIFT = 1e-4  # eV / atom / ps
MAX_FLUCTUATION = 2e-3  # eV / atom, peak-to-peak of the total energy


@pytest.fixture(scope="module")
def model():
    from dpa4_core import DPA4Config

    return seeded_model(DPA4Config.preset("tiny"), seed=0)


@pytest.mark.slow
def test_nve_conserves_energy(model):
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
    atoms.rattle(0.05, seed=1)
    calc = DPA4Calculator(model, dtype="float64")
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    total, temperature = [], []

    def record():
        total.append(atoms.get_total_energy())
        temperature.append(atoms.get_temperature())

    dynamics.attach(record, interval=1)
    dynamics.run(STEPS)
    n_atoms = len(atoms)
    total = np.array(total) / n_atoms
    time_ps = np.arange(len(total)) * TIMESTEP_FS / 1000
    drift = np.polyfit(time_ps, total, 1)[0]
    fluctuation = total.max() - total.min()
    message = (f"NVE {STEPS} x {TIMESTEP_FS} fs, {n_atoms} atoms, mean T {np.mean(temperature):.0f} K: "
               f"drift {drift:.2e} eV/atom/ps, peak-to-peak {fluctuation:.2e} eV/atom, "
               f"{calc.neighbor_list_builds} neighbour lists")
    print(message)
    assert np.all(np.isfinite(total))
    assert np.std(temperature) > 0, "atoms did not move"
    assert abs(drift) < MAX_DRIFT, message
    assert fluctuation < MAX_FLUCTUATION, message
    assert calc.neighbor_list_builds < STEPS / 2, "the neighbour list should be reused between steps"
