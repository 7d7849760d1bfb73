"""The batched engine at its edges (issue 16, area I): bad inputs, foreign elements, ASE's cell-filter options.

What is checked and why:
- One bad input (coincident atoms, NaN, a string, an empty structure, elements the model was not trained on) gets
  its own error result naming it, and every other structure's result equals a run without the bad one
  (relax_batch, md_batch, BatchRelaxMaker, and a whole screening flow whose report carries the reason).
- ``allow_untrained_elements=True`` runs the foreign structure, with a warning.
- ``mask``, ``hydrostatic_strain``, ``scalar_pressure`` and ``fix_symmetry`` give the same steps, energies, cells
  and positions as ASE's FIRE on ``FrechetCellFilter(atoms, ...)`` (with ``FixSymmetry``) and ``DPA4Calculator``,
  one structure at a time, on a seeded tiny DPA4 (float64; small cells, few steps).
- Slabs (pbc T, T, F) keep their vacuum: the open direction is masked (skipped while ``AtomsBatch`` refuses mixed
  periodicity).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE as AseFIRE
from pymatgen.core import Lattice, Structure

from dpa4_core.config import DPA4Config
from dpa4_core.dynamics import BatchSetupError, md_batch, relax_batch
from dpa4_core.testing.pair import LennardJones
from dpa4_core.testing.seeded import seeded_model

LJ = dict(sigma=2.4, epsilon=0.2, cutoff=6.0)


def lj(elements=None) -> LennardJones:
    model = LennardJones(**LJ)
    if elements is not None:
        model.trained_elements = list(elements)
    return model


def good_cells() -> list[Atoms]:
    a = bulk("Mo", "bcc", a=3.0, cubic=True).repeat((2, 1, 1))
    a.rattle(0.08, seed=1)
    b = bulk("Mo", "bcc", a=3.2, cubic=True)
    b.rattle(0.05, seed=2)
    return [a, b]


def bad_inputs() -> dict[str, object]:
    nan = bulk("Mo", "bcc", a=3.1, cubic=True)
    nan.positions[1, 0] = np.nan
    return {
        "coincident": Atoms("Mo2", positions=[[0, 0, 0], [0, 0, 1e-4]], cell=[5, 5, 5], pbc=True),
        "nan": nan,
        "string": "POSCAR",
        "empty": Atoms(),
        "foreign": bulk("Fe", "bcc", a=2.87, cubic=True),
    }


EXPECTED = {  # what each refused input's error must say
    "coincident": "InvalidStructureError: structure 1 (Mo2): atoms 0 and 1 are closer",
    "nan": "InvalidStructureError: structure 1 (Mo2): positions contain NaN",
    "string": "structure 1 is a str",
    "empty": "InvalidStructureError: structure 1: empty structure",
    "foreign": "UntrainedElementError: structure 1 (Fe2) contains Fe",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_one_bad_input_gets_its_own_error_and_leaves_the_others_unchanged(kind):
    model = lj(elements=[42])
    first, last = good_cells()
    bad = bad_inputs()[kind]
    mixed = relax_batch([first, bad, last], model, fmax=0.02, dtype="float64", max_atoms=8)
    alone = relax_batch([first, last], model, fmax=0.02, dtype="float64", max_atoms=8)
    refused = mixed[1]
    assert EXPECTED[kind] in refused.error
    assert refused.structure is bad and not refused.converged and refused.steps == 0
    assert refused.energy is None and refused.forces is None and np.isnan(refused.fmax)
    for got, want in zip((mixed[0], mixed[2]), alone, strict=True):
        assert got.error is None and got.converged and got.steps == want.steps > 5
        assert got.energy == pytest.approx(want.energy, abs=1e-10)
        np.testing.assert_allclose(got.structure.positions, want.structure.positions, atol=1e-10)


def test_untrained_elements_are_refused_by_name_or_run_with_a_warning(caplog):
    model = lj(elements=[41, 42])
    iron = bulk("Fe", "bcc", a=2.87, cubic=True)
    (refused,) = relax_batch([iron], model, max_steps=2)
    assert "structure 0 (Fe2) contains Fe" in refused.error and "allow_untrained_elements=True" in refused.error
    with caplog.at_level(logging.WARNING, logger="dpa4_core.model.domain"):
        (forced,) = relax_batch([iron], model, max_steps=2, allow_untrained_elements=True)
    assert forced.error is None and np.isfinite(forced.energy) and forced.steps == 2
    assert "Fe" in caplog.text and "allow_untrained_elements=True" in caplog.text


def test_md_batch_isolates_bad_inputs():
    model = lj(elements=[42])
    first, last = good_cells()
    inputs = [first, *bad_inputs().values(), last]
    mixed = md_batch(inputs, model, steps=6, temperature=300, dtype="float64", seed=3)
    alone = md_batch([first, last], model, steps=6, temperature=300, dtype="float64", seed=3)
    for index, (result, kind) in enumerate(zip(mixed[1:-1], bad_inputs(), strict=True), start=1):
        assert EXPECTED[kind].replace("structure 1", f"structure {index}") in result.error
        assert not result.intact and np.isnan(result.epot_final)
    for got, want in zip((mixed[0], mixed[-1]), alone, strict=True):
        assert got.error is None and got.intact
        assert got.epot_final == pytest.approx(want.epot_final, abs=1e-10)
    (foreign,) = md_batch([bad_inputs()["foreign"]], model, steps=2, allow_untrained_elements=True)
    assert foreign.error is None and np.isfinite(foreign.epot_final)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A seeded tiny DPA4 that declares Nb, Mo, Ta, W as its trained elements (plumbing, not accuracy)."""
    from dpa4_core.io.checkpoint import save_checkpoint

    model = seeded_model(DPA4Config.preset("tiny"), seed=0, noise=0.02)
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny.pt", elements=[41, 42, 73, 74])


def _mow() -> Structure:
    return Structure(Lattice.cubic(3.15), ["Mo", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_batch_relax_maker_reports_each_bad_structure_and_relaxes_the_rest(tiny_checkpoint):
    from dpa4_flows.jobs.batch_relax import BatchRelaxMaker

    kwargs = {"model": str(tiny_checkpoint), "device": "cpu", "dtype": "float64"}
    maker = BatchRelaxMaker(calculator_kwargs=kwargs, engine="batched", fmax=0.05, max_steps=8, progress=False)
    coincident = Structure(Lattice.cubic(4.0), ["Mo", "W"], [[0, 0, 0], [0, 0, 1e-5]])
    iron = Structure(Lattice.cubic(2.87), ["Fe", "Mo"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    doc = maker.relax([_mow(), coincident, "POSCAR", iron], ["ok", "coincident", "text", "iron"])
    alone = maker.relax([_mow()], ["ok"]).results[0]
    ok, bad, text, foreign = doc.results
    assert ok.error is None and ok.energy == pytest.approx(alone.energy, abs=1e-10) and ok.n_steps == alone.n_steps
    assert "InvalidStructureError" in bad.error and "closer than" in bad.error and bad.energy is None
    assert "structure 2 is a str" in text.error and text.formula == "?"
    assert "UntrainedElementError" in foreign.error and "contains Fe" in foreign.error and foreign.structure is None
    forced = BatchRelaxMaker(calculator_kwargs=kwargs, engine="batched", max_steps=3, progress=False,
                             allow_untrained_elements=True).relax([iron], ["iron"])
    assert forced.results[0].error is None and forced.results[0].energy is not None


def test_screening_report_skips_errored_structures_with_their_reason(tiny_checkpoint, tmp_path, monkeypatch):
    from jobflow import run_locally

    from dpa4_flows.execution.stores import memory_store
    from dpa4_flows.flows.screening import ScreeningMaker
    from dpa4_flows.jobs.batch_relax import BatchRelaxMaker

    kwargs = {"model": str(tiny_checkpoint), "device": "cpu", "dtype": "float64"}
    relax = BatchRelaxMaker(calculator_kwargs=kwargs, engine="batched", fmax=0.1, max_steps=15, progress=False)
    coincident = Structure(Lattice.cubic(4.0), ["Mo", "W"], [[0, 0, 0], [0, 0, 1e-5]])
    iron = Structure(Lattice.cubic(2.87), ["Fe", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    flow = ScreeningMaker(relax_maker=relax, chunk_size=3, prototypes=("bcc",)).make(
        [_mow(), coincident, iron], ["MoW", "overlap", "FeW"])
    monkeypatch.chdir(tmp_path)
    responses = run_locally(flow, store=memory_store(), ensure_success=True, log=False)
    report = responses[flow.jobs[-1].uuid][1].output
    rows = {r.candidate_id: r for r in report.rows}
    assert rows["MoW"].error is None and rows["MoW"].e_above_hull is not None
    assert "closer than" in rows["overlap"].error and rows["overlap"].e_above_hull is None
    assert "contains Fe" in rows["FeW"].error and rows["FeW"].e_above_hull is None
    assert report.n_candidates == 3 and report.n_failed == 2
    assert [d.candidate_id for d in report.stability] == ["MoW"]


# ---- ASE's cell-filter options -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    return seeded_model(DPA4Config.preset("tiny"), seed=0, noise=0.02)


def _strained_cell() -> Atoms:
    """A 4-atom Mo-Nb-Ta-W bcc cell, strained (with shear) and rattled: every cell component has a force."""
    atoms = bulk("Mo", "bcc", a=3.2, cubic=True).repeat((2, 1, 1))
    atoms.numbers = [42, 41, 73, 74]
    strain = np.eye(3) + np.array([[0.03, 0.02, -0.01], [0.0, -0.02, 0.015], [0.01, 0.0, 0.04]])
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.rattle(0.05, seed=4)
    return atoms


def _polar_cell() -> Atoms:
    """Tetragonal Mo-Nb with Nb off-centre along z (space group P4mm: a free z coordinate with a force), slightly
    perturbed (1e-3 A, well inside symprec) so that only the symmetrised path keeps the symmetry exactly."""
    atoms = Atoms("MoNb", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.56]], cell=[3.1, 3.1, 3.3], pbc=True)
    atoms.rattle(1e-3, seed=5)
    return atoms


def _ase_run(atoms: Atoms, model, steps: int, fix_symmetry=False, **options):
    from dpa4_core.calculator import DPA4Calculator

    atoms = atoms.copy()
    atoms.calc = DPA4Calculator(model=model, dtype="float64")
    if fix_symmetry:
        atoms.set_constraint(FixSymmetry(atoms))
    opt = AseFIRE(FrechetCellFilter(atoms, **options), logfile=None)
    opt.run(fmax=1e-4, steps=steps)
    return atoms, opt.nsteps


OPTIONS = {
    "mask-voigt-in-plane": dict(mask=[1, 1, 0, 0, 0, 1]),
    "mask-3x3-diagonal": dict(mask=np.eye(3, dtype=bool)),
    "mask-shear-only": dict(mask=[0, 0, 0, 1, 1, 1]),  # expm of a shear has diagonal terms: ASE re-masks them
    "hydrostatic": dict(hydrostatic_strain=True),
    "pressure": dict(scalar_pressure=0.02),
    "pressure-and-mask": dict(scalar_pressure=-0.01, mask=[1, 0, 1, 0, 1, 0]),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_cell_filter_options_match_ase_frechet_cell_filter(tiny_model, name):
    options = OPTIONS[name]
    atoms = _strained_cell()
    steps = 12
    (result,) = relax_batch([atoms], tiny_model, fmax=1e-4, max_steps=steps, dtype="float64", **options)
    ref, ref_steps = _ase_run(atoms, tiny_model, steps, **options)
    assert result.steps == ref_steps == steps
    assert result.energy == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(result.structure.cell.array, ref.cell.array, atol=1e-8)
    np.testing.assert_allclose(result.structure.positions, ref.positions, atol=1e-8)
    change = result.structure.cell.array - atoms.cell.array
    assert np.abs(change).max() > 1e-3  # the cell did move
    if "mask" in options:
        from dpa4_core.dynamics.cellfilter import parse_mask

        fixed = parse_mask(options["mask"]) == 0  # masked strain components: the cell does not change there
        strain = np.linalg.solve(atoms.cell.array, result.structure.cell.array).T - np.eye(3)
        np.testing.assert_allclose(strain[fixed], 0, atol=1e-12)


def test_fix_symmetry_matches_ase_fix_symmetry(tiny_model):
    import spglib

    atoms = _polar_cell()
    steps = 12
    (result,) = relax_batch([atoms], tiny_model, fmax=1e-4, max_steps=steps, dtype="float64", fix_symmetry=True)
    ref, ref_steps = _ase_run(atoms, tiny_model, steps, fix_symmetry=True)
    assert result.steps == ref_steps == steps
    assert result.energy == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(result.structure.cell.array, ref.cell.array, atol=1e-8)
    np.testing.assert_allclose(result.structure.positions, ref.positions, atol=1e-8)
    np.testing.assert_allclose(result.forces, ref.get_forces(), atol=1e-8)
    final = result.structure
    dataset = spglib.get_symmetry_dataset((final.cell.array, final.get_scaled_positions(), final.numbers),
                                          symprec=1e-6)
    assert dataset.number == 99  # P4mm kept to 1e-6 A
    assert np.abs(final.positions[1] - atoms.positions[1])[2] > 1e-3  # the free coordinate did move
    np.testing.assert_array_equal(atoms.positions, _polar_cell().positions)  # input untouched


def test_bad_cell_options_are_refused():
    atoms = good_cells()[1]
    with pytest.raises(BatchSetupError, match="mask must be 6 Voigt or 3x3"):
        relax_batch([atoms], lj(), mask=[1, 1, 0])
    with pytest.raises(BatchSetupError, match="scalar_pressure must be finite"):
        relax_batch([atoms], lj(), scalar_pressure=float("nan"))


def test_slab_keeps_its_vacuum_as_ase_with_an_in_plane_mask(tiny_model):
    slab = bulk("Mo", "bcc", a=3.15, cubic=True).repeat((1, 1, 2))
    slab.numbers = [42, 74, 42, 74]
    slab.center(vacuum=6.0, axis=2)
    slab.pbc = (True, True, False)
    slab.set_cell(slab.cell.array @ np.diag([1.02, 0.99, 1.0]), scale_atoms=True)
    slab.rattle(0.03, seed=6)
    (result,) = relax_batch([slab], tiny_model, fmax=1e-4, max_steps=8, dtype="float64")
    if result.error is not None and "periodic" in result.error:
        pytest.skip(f"AtomsBatch refuses mixed periodicity here: {result.error}")
    ref, _ = _ase_run(slab, tiny_model, 8, mask=[1, 1, 0, 0, 0, 1])
    np.testing.assert_allclose(result.structure.cell.array[2], slab.cell.array[2], atol=1e-12)  # vacuum kept
    np.testing.assert_allclose(result.structure.cell.array, ref.cell.array, atol=1e-8)
    np.testing.assert_allclose(result.structure.positions, ref.positions, atol=1e-8)


def test_batched_symmetrisation_equals_ase_rank1_and_rank2_per_system():
    """Two systems in one batch, arbitrary (unsymmetric) forces and stress: ASE's symmetrize_rank1/rank2 each."""
    from ase.spacegroup.symmetrize import prep_symmetry, symmetrize_rank1, symmetrize_rank2

    from dpa4_core.dynamics.symmetry import BatchSymmetry, refine_and_ops

    systems = [_polar_cell(), bulk("W", "bcc", a=3.16, cubic=True).repeat((1, 1, 2))]
    ops = [refine_and_ops(a, 0.01) for a in systems]
    starts = np.array([0, 2, 6])
    rng = np.random.default_rng(9)
    forces, stress = rng.standard_normal((6, 3)), rng.standard_normal((2, 3, 3))
    cells = np.stack([a.cell.array for a in systems])
    sym = BatchSymmetry.build(ops, starts, torch.float64, "cpu")
    frame = torch.tensor([0, 0, 1, 1, 1, 1])
    got_f = sym.forces(torch.as_tensor(forces), torch.as_tensor(cells), frame).numpy()
    got_s = sym.stress(torch.as_tensor(stress), torch.as_tensor(cells)).numpy()
    for s, atoms in enumerate(systems):
        rot, trans, atom_map = prep_symmetry(atoms, 0.01)
        inverse = atoms.cell.reciprocal().T
        part = slice(starts[s], starts[s + 1])
        want_f = symmetrize_rank1(atoms.cell.array, inverse, forces[part], rot, trans, atom_map)
        np.testing.assert_allclose(got_f[part], want_f, atol=1e-12)
        np.testing.assert_allclose(got_s[s], symmetrize_rank2(atoms.cell.array, inverse, stress[s], rot), atol=1e-12)
    assert np.abs(got_f - forces).max() > 0.1  # symmetrisation did change them
