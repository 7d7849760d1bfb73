"""The shared MD ensemble names (dpa4_core.dynamics.ensembles) in the single-system and batched engines, and the
public snapshot API (dpa4_core.dynamics.snapshot) both engines build their output structures with.

What is checked and why:
- Every name builds, in ``make_dynamics``, the ASE integrator the table names, and runs steps in ``run_md``; the
  alias ``"nvt"`` gives exactly the ``"nvt_langevin"`` trajectory (same seed).
- ``md_batch`` runs the names it supports (``nve`` is its Langevin integrator with zero friction, so it equals a
  frictionless ``nvt_langevin`` run bit for bit whatever friction is passed) and refuses the others with a message
  naming the ensembles it runs.
- Snapshots: results attached as a SinglePointCalculator (stress only for periodic systems), the input type
  comes back (ASE, pymatgen Structure, Molecule), and the template is not changed.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from dpa4_core.dynamics import (
    ENSEMBLES,
    BatchSetupError,
    Ensemble,
    MDSetupError,
    as_input_type,
    make_dynamics,
    md_batch,
    parse_ensemble,
    run_md,
    snapshot,
)
from dpa4_core.dynamics.ensembles import ASE_INTEGRATORS, BATCHED
from dpa4_core.testing.pair import LennardJones

LJ = dict(sigma=2.4, epsilon=0.2, cutoff=5.0)


def lj_calculator():
    from dpa4_core.calculator import DPA4Calculator

    return DPA4Calculator(model=LennardJones(**LJ), dtype="float64")


def crystal() -> Atoms:
    atoms = bulk("Mo", "bcc", a=3.15, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.mark.parametrize("name", ENSEMBLES)
def test_every_name_builds_its_integrator_and_runs(name):
    atoms = crystal()
    atoms.calc = lj_calculator()
    dynamics = make_dynamics(atoms, name, tdamp=50.0, pdamp=500.0)
    assert type(dynamics) is ASE_INTEGRATORS[Ensemble(name)]
    final, log = run_md(crystal(), lj_calculator(), name, steps=4, loginterval=2, tdamp=50.0, pdamp=500.0)
    assert len(log.time) == 3 and np.isfinite(log.etot).all()
    assert not np.allclose(final.positions, crystal().positions)


def test_nvt_alias_is_langevin():
    assert parse_ensemble("nvt") is Ensemble.NVT_LANGEVIN
    runs = [run_md(crystal(), lj_calculator(), name, steps=6, seed=4, friction=0.05)[0]
            for name in ("nvt", "nvt_langevin")]
    np.testing.assert_array_equal(runs[0].positions, runs[1].positions)
    with pytest.raises(MDSetupError, match="ensemble='nvt_berendsen'.*nvt_nose_hoover"):
        parse_ensemble("nvt_berendsen", MDSetupError)


def test_md_batch_runs_nve_as_frictionless_langevin():
    structures = [crystal(), bulk("Mo", "bcc", a=3.1, cubic=True).repeat(2)]
    model = LennardJones(**LJ)
    nve = md_batch(structures, model, ensemble="nve", friction=0.3, steps=20, seed=1, dtype="float64")
    frictionless = md_batch(structures, model, ensemble="nvt_langevin", friction=0.0, steps=20, seed=1, dtype="float64")
    damped = md_batch(structures, model, ensemble="nvt", friction=0.3, steps=20, seed=1, dtype="float64")
    for a, b, c in zip(nve, frictionless, damped):
        np.testing.assert_array_equal(a.structure.positions, b.structure.positions)
        assert a.epot_final == b.epot_final
        assert not np.array_equal(a.structure.positions, c.structure.positions)


@pytest.mark.parametrize("name", [e.value for e in Ensemble if e not in BATCHED])
def test_md_batch_refuses_what_it_does_not_integrate(name):
    with pytest.raises(BatchSetupError, match=rf"runs the ensembles nve, nvt_langevin, not '{name}'"):
        md_batch([crystal()], LennardJones(**LJ), ensemble=name, steps=1)
    with pytest.raises(BatchSetupError, match="ensemble='nph'"):
        md_batch([crystal()], LennardJones(**LJ), ensemble="nph", steps=1)


def test_snapshot_attaches_results_and_keeps_the_input_type():
    from pymatgen.core import Molecule, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    template = crystal()
    before = template.positions.copy()
    positions = template.positions + 0.1
    cell = template.cell.array * 1.01
    forces = np.arange(3 * len(template), dtype=float).reshape(-1, 3)
    stress = np.diag([1.0, 2.0, 3.0]) * 1e-3
    atoms = snapshot(template, positions, cell, energy=-3.5, forces=forces, stress=stress)
    np.testing.assert_array_equal(atoms.positions, positions)
    np.testing.assert_array_equal(atoms.cell.array, cell)
    assert atoms.get_potential_energy() == -3.5
    np.testing.assert_array_equal(atoms.get_forces(), forces)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), stress)
    np.testing.assert_array_equal(template.positions, before)
    assert snapshot(template, positions, cell).calc is None

    water = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    moved = snapshot(water, water.positions * 1.1, np.eye(3) * 7, energy=1.0, forces=np.zeros((3, 3)))
    assert moved.cell.volume == 0 and "stress" not in moved.calc.results
    assert isinstance(as_input_type(AseAtomsAdaptor.get_molecule(water), moved), Molecule)
    assert isinstance(as_input_type(AseAtomsAdaptor.get_structure(template), atoms), Structure)
    assert as_input_type(template, atoms) is atoms
