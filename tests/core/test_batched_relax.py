"""Batched relaxation (dpa4_core.dynamics): the same answers as ASE one structure at a time, and its own contracts.

What is checked and why:
- The Frechet cell filter's generalised forces equal ``ase.filters.FrechetCellFilter.get_forces`` on a deformed,
  rattled real cell (exact math, so to round-off).
- Batched FIRE and L-BFGS follow ASE's FIRE/LBFGS + FrechetCellFilter step by step on real structures
  (Mo-Nb, Ta-W, Si from data/): same number of steps, same energy and cell, with a batch budget small enough that
  systems swap in and out mid-run. The reference is ASE's optimiser with ``DPA4Calculator`` wrapping a smooth
  Lennard-Jones stand-in with DPA4's interface (the optimiser is under test); the stand-in itself is checked
  against ASE's independent ``LennardJones(smooth=True)``. The required DPA4 comparison (tiny preset, seeded
  weights) is at the end.
- Skin neighbour lists: a list reported as still valid contains every pair within the cutoff (property test on
  random deformations), and a relaxation with a skin gives the same result as rebuilding every step.
- Types in = types out; inputs untouched; max_steps, trajectory, molecules; clear errors for bad input;
  the compiled path falls back to eager with one warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE as AseFIRE
from ase.optimize import LBFGS as AseLBFGS

from dpa4_core.dynamics import BatchSetupError, OptimizerConfigError, relax_batch
from dpa4_core.dynamics import cellfilter
from dpa4_core.testing.pair import LennardJones
from dpa4_core.dynamics.state import Packed, build_edges, stale_systems
from dpa4_core.data.batch import AtomsBatch, InvalidStructureError
from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_pymatgen_json

LJ = dict(sigma=2.4, epsilon=0.2)
CUTOFF = 6.0


def real_structures() -> list[Atoms]:
    """First frames of three real DFT sets: Mo-Nb and Ta-W solid solutions (16 atoms), Si (16 atoms)."""
    out = []
    for parts in (("maml_MoNbTaW", "NbMo_SS.json.gz"), ("maml_MoNbTaW", "TaW_SS.json.gz")):
        out.append(next(iter(read_pymatgen_json(vendored(*parts)))).atoms)
    silicon = (f.atoms for f in read_pymatgen_json(vendored("mlearn", "Si", "training.json.gz")))
    out.append(next(a for a in silicon if len(a) == 16))
    return out


def lj_calculator():
    from dpa4_core.calculator import DPA4Calculator

    return DPA4Calculator(model=LennardJones(**LJ, cutoff=CUTOFF), dtype="float64")


def test_pair_stand_in_matches_ase_lennard_jones():
    structures = real_structures()
    for atoms in structures:
        atoms.rattle(0.1, seed=11)
    batch = AtomsBatch.from_atoms(structures, cutoff=CUTOFF + 0.5, dtype=torch.float64)  # skin: same result
    out = LennardJones(**LJ, cutoff=CUTOFF)(batch)
    start = 0
    for k, atoms in enumerate(structures):
        atoms.calc = AseLennardJones(**LJ, rc=CUTOFF, smooth=True)
        n = len(atoms)
        assert abs(out["energy"][k].item() - atoms.get_potential_energy()) < 1e-10
        np.testing.assert_allclose(out["forces"][start:start + n].numpy(), atoms.get_forces(), atol=1e-10)
        np.testing.assert_allclose(out["stress"][k].numpy(), atoms.get_stress(voigt=False), atol=1e-12)
        assert np.abs(atoms.get_forces()).max() > 0.1 and np.abs(atoms.get_stress()).max() > 1e-3  # not trivially 0
        start += n


def ase_relax(atoms: Atoms, calc, optimizer=AseFIRE, fmax=0.02, steps=400, cell=True):
    atoms = atoms.copy()
    atoms.calc = calc
    target = FrechetCellFilter(atoms) if cell else atoms
    opt = optimizer(target, logfile=None)
    converged = opt.run(fmax=fmax, steps=steps)
    return atoms, opt.nsteps, bool(converged)


def test_filter_forces_match_ase_frechet_cell_filter():
    atoms = real_structures()[0]
    atoms.calc = AseLennardJones(**LJ, rc=CUTOFF, smooth=True)
    filt = FrechetCellFilter(atoms)
    # Move to a deformed, rattled state through the filter itself, so ASE's deformation gradient is not I.
    rng = np.random.default_rng(1)
    x = filt.get_positions()
    x[:-3] += 0.05 * rng.standard_normal((len(atoms), 3))
    x[-3:] += 0.04 * len(atoms) * rng.standard_normal((3, 3))
    filt.set_positions(x)
    expected = filt.get_forces()

    # ASE stores exp_cell_factor * logm(n_atoms * F) (its UnitCellFilter scaling inside the log), i.e. our
    # degrees of freedom plus a constant exp_cell_factor * log(n_atoms) * I that no optimiser step sees.
    log_f = torch.as_tensor(x[-3:] / len(atoms) - np.log(len(atoms)) * np.eye(3))[None]
    deform = torch.linalg.matrix_exp(log_f)
    ones = torch.ones(1, dtype=torch.float64)
    frame = torch.zeros(len(atoms), dtype=torch.long)
    stress = torch.as_tensor(atoms.get_stress(voigt=False))[None]
    f_atom, f_cell = cellfilter.filter_forces(
        torch.as_tensor(atoms.get_forces()), stress, torch.tensor([atoms.get_volume()]), log_f, deform,
        ones * len(atoms), ones, frame,
    )
    np.testing.assert_allclose(f_atom.numpy(), expected[:-3], atol=1e-10)
    np.testing.assert_allclose(f_cell[0].numpy(), expected[-3:], atol=1e-10)
    assert np.abs(expected[-3:]).max() > 1e-2  # the cell force is not trivially zero
    # The positions and cell the filter set are x F^T and C0 F^T.
    orig_cell = torch.as_tensor(filt.orig_cell[None])
    positions, cell = cellfilter.apply_deformation(torch.as_tensor(x[:-3]), orig_cell, deform, frame)
    np.testing.assert_allclose(positions.numpy(), atoms.positions, atol=1e-10)
    np.testing.assert_allclose(cell[0].numpy(), atoms.cell.array, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("name, ase_optimizer", [("fire", AseFIRE), ("lbfgs", AseLBFGS)])
def test_matches_ase_one_at_a_time_with_in_flight_batching(name, ase_optimizer):
    structures = real_structures()[:2]  # the alloys; Si (a long rearrangement under LJ) is in the DPA4 test
    rng = np.random.default_rng(0)
    for atoms in structures:  # start away from the minimum: strained cell, rattled atoms
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.02 * rng.standard_normal((3, 3))), scale_atoms=True)
        atoms.rattle(0.05, seed=3)
    structures.append(structures[0].repeat((1, 1, 2)))  # 32 atoms: sizes differ within the batch
    # A 40-atom budget holds at most two systems: the later ones enter as earlier ones converge.
    results = relax_batch(structures, LennardJones(**LJ, cutoff=CUTOFF), optimizer=name, fmax=0.05, max_steps=300,
                          dtype="float64", max_atoms=40)
    for atoms, result in zip(structures, results, strict=True):
        ref, steps, converged = ase_relax(atoms, lj_calculator(), ase_optimizer, fmax=0.05, steps=300)
        assert converged and result.converged
        assert result.steps == steps > 10
        assert abs(result.energy - ref.get_potential_energy()) / len(atoms) < 1e-8
        np.testing.assert_allclose(result.structure.cell.array, ref.cell.array, atol=1e-7)
        np.testing.assert_allclose(result.structure.positions, ref.positions, atol=1e-7)
        np.testing.assert_allclose(result.forces, ref.get_forces(), atol=1e-7)
        np.testing.assert_allclose(result.stress, ref.get_stress(voigt=False), atol=1e-9)
        assert result.fmax < 0.05
        # The cell really relaxed (so the test would notice a broken cell path).
        assert np.abs(result.structure.cell.array - atoms.cell.array).max() > 0.05


def test_fixed_cell_matches_ase_fire_on_atoms():
    atoms = real_structures()[1]
    atoms.rattle(0.1, seed=5)
    (result,) = relax_batch([atoms], LennardJones(**LJ, cutoff=CUTOFF), relax_cell=False, fmax=0.02, dtype="float64")
    ref, steps, _ = ase_relax(atoms, lj_calculator(), cell=False)
    assert result.steps == steps
    np.testing.assert_allclose(result.structure.positions, ref.positions, atol=1e-7)
    np.testing.assert_array_equal(result.structure.cell.array, atoms.cell.array)


def test_skin_list_validity_is_conservative():
    """Whenever the skin list is reported valid, it contains every pair now inside the cutoff."""
    atoms = real_structures()[2]
    cutoff, skin = 4.0, 0.6
    rng = np.random.default_rng(7)
    positions0, cell0 = atoms.positions, atoms.cell.array
    src, dst, shift = build_edges(positions0, cell0, atoms.pbc, cutoff + skin)
    skin_pairs = set(zip(src.tolist(), dst.tolist(), map(tuple, shift.tolist())))
    n = len(atoms)
    pack = Packed(
        numbers=torch.as_tensor(atoms.numbers),
        ref_pos=torch.as_tensor(positions0),
        n_atoms=torch.tensor([n]),
        pbc=torch.ones(1, 3, dtype=torch.bool),
        ref_cell=torch.as_tensor(cell0[None]),
        edges=[(src, dst, shift)],
    )
    valid_seen = stale_seen = 0
    for trial in range(60):
        size = 0.02 + 0.3 * rng.random()
        strain = np.eye(3) + 0.5 * size * rng.standard_normal((3, 3)) / 3
        cell = cell0 @ strain
        positions = positions0 @ strain + size * rng.standard_normal((n, 3))
        stale = bool(stale_systems(pack, torch.as_tensor(positions), torch.as_tensor(cell[None]), cutoff, skin)[0])
        if stale:
            stale_seen += 1
            continue
        valid_seen += 1
        s, d, sh = build_edges(positions, cell, atoms.pbc, cutoff)
        assert set(zip(s.tolist(), d.tolist(), map(tuple, sh.tolist()))) <= skin_pairs
    assert valid_seen > 5 and stale_seen > 5  # both branches exercised


def test_skin_gives_the_same_relaxation_as_rebuilding_every_step():
    structures = real_structures()[:2]
    model = LennardJones(**LJ, cutoff=CUTOFF)
    with_skin = relax_batch(structures, model, skin=1.0, fmax=0.02, dtype="float64")
    no_skin = relax_batch(structures, model, skin=0.0, fmax=0.02, dtype="float64")
    unpruned = relax_batch(structures, model, skin=1.0, prune=False, fmax=0.02, dtype="float64")
    for a, b, c in zip(with_skin, no_skin, unpruned):
        assert a.steps == b.steps == c.steps
        assert abs(a.energy - b.energy) < 1e-9 and abs(a.energy - c.energy) < 1e-9
        np.testing.assert_allclose(a.structure.positions, b.structure.positions, atol=1e-8)


def test_types_in_types_out_inputs_untouched_and_molecules():
    from pymatgen.core import Molecule, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    crystal = bulk("Mo", "bcc", a=3.0, cubic=True).repeat(2)
    crystal.rattle(0.05, seed=2)
    before = crystal.positions.copy()
    structure = AseAtomsAdaptor.get_structure(crystal)
    water = molecule("H2O")
    water.positions *= 1.5  # LJ, element-blind: just needs a non-periodic system to relax
    mol = AseAtomsAdaptor.get_molecule(water)
    model = LennardJones(**LJ, cutoff=CUTOFF)
    results = relax_batch([crystal, structure, mol, water], model, fmax=0.02, dtype="float64")
    assert isinstance(results[0].structure, Atoms) and isinstance(results[1].structure, Structure)
    assert isinstance(results[2].structure, Molecule) and isinstance(results[3].structure, Atoms)
    np.testing.assert_array_equal(crystal.positions, before)
    assert abs(results[0].energy - results[1].energy) < 1e-9  # same structure, either type
    assert abs(results[0].structure.get_potential_energy() - results[0].energy) < 1e-12  # calc attached
    assert results[3].converged and not results[3].structure.pbc.any()
    assert np.all(results[3].stress == 0)


def test_max_steps_trajectory_and_unconverged_flag():
    atoms = real_structures()[0]
    atoms.rattle(0.1, seed=4)
    model = LennardJones(**LJ, cutoff=CUTOFF)
    (short,) = relax_batch([atoms], model, max_steps=5, fmax=1e-4, trajectory=True, dtype="float64")
    assert short.steps == 5 and not short.converged and short.fmax > 1e-4
    assert len(short.trajectory) == 6  # initial geometry + one per step
    np.testing.assert_allclose(short.trajectory[-1].positions, short.structure.positions)
    energies = [a.get_potential_energy() for a in short.trajectory]
    assert energies[-1] < energies[0]
    (none,) = relax_batch([atoms], model, max_steps=0, fmax=1e-4)
    assert none.steps == 0 and not none.converged


def test_float32_default_agrees_with_float64():
    structures = real_structures()[:2]
    model = LennardJones(**LJ, cutoff=CUTOFF)
    r32 = relax_batch(structures, model, fmax=0.02)
    r64 = relax_batch(structures, model, fmax=0.02, dtype="float64")
    for a, b in zip(r32, r64):
        assert a.converged and b.converged
        assert abs(a.energy - b.energy) / len(a.structure) < 1e-4


def test_bad_input_raises_clear_errors():
    model = LennardJones(**LJ, cutoff=CUTOFF)
    good = bulk("Mo", "bcc", a=3.1)
    with pytest.raises(BatchSetupError, match="fmax"):
        relax_batch([good], model, fmax=0)
    with pytest.raises(OptimizerConfigError, match="bfgs2"):
        relax_batch([good], model, optimizer="bfgs2")
    with pytest.raises(BatchSetupError, match="float16"):
        relax_batch([good], model, dtype="float16")
    with pytest.raises(BatchSetupError, match="checkpoint"):
        relax_batch([good], object())
    # Bad structures are refused one by one (tests/reliability/test_batched_edges.py has the full contract).
    bad = Atoms("Mo2", positions=[[0, 0, 0], [0, 0, 1e-4]], cell=[5, 5, 5], pbc=True)
    unknown = Atoms(numbers=[119, 42], positions=[[0, 0, 0], [0, 0, 2.0]])
    results = relax_batch([good, bad, unknown], model, max_steps=2)
    assert results[0].error is None
    assert results[1].error.startswith(f"{InvalidStructureError.__name__}: structure 1 (Mo2): atoms 0 and 1")
    assert results[2].error.endswith(r"structure 2: atomic number(s) [119] outside 1..118")
    assert relax_batch([], model) == []


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    atoms = bulk("Mo", "bcc", a=3.0, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    model = LennardJones(**LJ, cutoff=CUTOFF)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (compiled,) = relax_batch([atoms], model, compile=True, fmax=0.02, dtype="float64")
    assert sum("torch.compile" in str(w.message) for w in caught) == 1
    (eager,) = relax_batch([atoms], model, fmax=0.02, dtype="float64")
    assert compiled.steps == eager.steps and compiled.energy == eager.energy


@pytest.mark.slow
@pytest.mark.timeout(900)  # 40-50 s alone; a 2-core CI runner shared with other jobs took over 300 s
def test_dpa4_tiny_matches_ase_fire_frechet_cell_filter_with_dpa4_calculator():
    """The required check: real DPA4 (tiny preset, seeded random weights) on real Mo-Nb, Ta-W and Si cells,
    batched against ASE FIRE + FrechetCellFilter + DPA4Calculator one at a time (float64 on both sides)."""
    from dpa4_core import DPA4, DPA4Config
    from dpa4_core.calculator import DPA4Calculator

    torch.manual_seed(0)
    model = DPA4(DPA4Config.preset("tiny"))
    structures = real_structures()
    rng = np.random.default_rng(2)
    for atoms in structures:
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.03 * rng.standard_normal((3, 3))), scale_atoms=True)
        atoms.rattle(0.1, seed=8)
    results = relax_batch(structures, model, fmax=0.01, max_steps=100, dtype="float64", max_atoms=32)
    calculator = DPA4Calculator(model=model, dtype="float64")
    for atoms, result in zip(structures, results, strict=True):
        ref, steps, converged = ase_relax(atoms, calculator, AseFIRE, fmax=0.01, steps=100)
        assert result.converged == converged
        assert result.steps == steps > 10
        assert abs(result.energy - ref.get_potential_energy()) / len(atoms) < 1e-4
        np.testing.assert_allclose(result.structure.cell.array, ref.cell.array, atol=1e-4)
        np.testing.assert_allclose(result.structure.positions, ref.positions, atol=1e-4)


def test_checkpoint_path_gives_the_same_relaxation_as_the_model(tmp_path):
    from dpa4_core import DPA4, DPA4Config
    from dpa4_core.io.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = DPA4(DPA4Config.preset("tiny"))
    path = save_checkpoint(model, tmp_path / "tiny.pt")
    atoms = real_structures()[0]
    atoms.rattle(0.1, seed=6)
    (from_model,) = relax_batch([atoms], model, max_steps=3, fmax=1e-3)
    (from_path,) = relax_batch([atoms], path, max_steps=3, fmax=1e-3)
    assert from_model.steps == from_path.steps == 3
    assert from_model.energy == pytest.approx(from_path.energy, abs=1e-6)
    np.testing.assert_allclose(from_model.structure.positions, from_path.structure.positions, atol=1e-6)
