"""DPA4 relax/static/MD Makers: atomate2 task documents, process-wide model cache (one calculator per job), no
stray files.

The plumbing is checked with ASE's EMT calculator plugged in through ``calculator_meta`` (exact physics we
can verify independently: an E(a) scan minimum, energy conservation in NVE); with the real DPA4 model once
``dpa4_core`` provides it (tiny preset saved in tmp_path).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from atomate2.forcefields.schemas import ForceFieldTaskDocument
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from monty.json import MontyDecoder
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from dpa4_flows.jobs import calculators
from dpa4_flows.jobs.md import DPA4MDMaker, MDSettingsError
from dpa4_flows.jobs.relax import DPA4RelaxMaker, DPA4StaticMaker
from dpa4_flows.settings import get_settings

EMT_META = "ase.calculators.emt.EMT"


def _store() -> JobStore:
    return JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})


def _cu(a: float = 3.7) -> Structure:
    return Structure(Lattice.cubic(a), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def _run(job, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    responses = run_locally(job, store=_store(), ensure_success=True, log=False)
    return responses[job.uuid][1].output


def _emt_lattice_constant() -> float:
    """EMT fcc Cu equilibrium lattice constant from an independent E(a) scan and a parabola fit."""
    a_grid = np.linspace(3.55, 3.62, 15)
    energies = []
    for a in a_grid:
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy())
    c2, c1, _ = np.polyfit(a_grid, energies, 2)
    return -c1 / (2 * c2)


def test_relax_maker_relaxes_cell_and_writes_no_files(tmp_path, monkeypatch):
    maker = DPA4RelaxMaker(calculator_meta=EMT_META, calculator_kwargs={}, relax_kwargs={"fmax": 0.005})
    assert maker.relax_kwargs["final_atoms_object_file"] is None
    doc = _run(maker.make(_cu(3.7)), tmp_path, monkeypatch)
    assert isinstance(doc, ForceFieldTaskDocument)
    assert doc.is_force_converged
    assert doc.structure.lattice.a == pytest.approx(_emt_lattice_constant(), abs=2e-3)
    assert np.abs(np.array(doc.output.forces)).max() < 0.005
    assert list(tmp_path.iterdir()) == []  # no final_atoms_object.xyz or trajectory files


def test_static_maker_matches_direct_calculation(tmp_path, monkeypatch):
    structure = _cu(3.62)
    structure.translate_sites([0], [0.02, 0.0, 0.01])
    doc = _run(DPA4StaticMaker(calculator_meta=EMT_META, calculator_kwargs={}).make(structure), tmp_path, monkeypatch)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = EMT()
    assert doc.output.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(doc.output.forces, atoms.get_forces(), atol=1e-10)
    np.testing.assert_allclose(doc.structure.cart_coords, structure.cart_coords, atol=1e-10)  # nothing moved
    assert list(tmp_path.iterdir()) == []


def test_each_job_gets_its_own_calculator_and_json_round_trip():
    maker = DPA4StaticMaker(calculator_meta=EMT_META, calculator_kwargs={"asap_cutoff": True})
    clone = MontyDecoder().process_decoded(maker.as_dict())  # what FireWorks/jobflow-remote do per job
    assert isinstance(clone, DPA4StaticMaker)
    assert clone.as_dict() == maker.as_dict()
    # ASE calculators keep results and state: two jobs must never share one.
    assert clone is not maker and clone.calculator is not maker.calculator
    assert isinstance(clone.calculator, EMT) and clone.calculator.parameters["asap_cutoff"] is True


def test_dpa4_defaults_and_missing_checkpoint(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pt"
    monkeypatch.setenv("DPA4_MODEL", str(missing))
    maker = DPA4RelaxMaker()
    assert maker.calculator_meta == calculators.DPA4_CALCULATOR_META
    assert maker.calculator_kwargs["model"] == str(missing)
    assert maker.task_document_kwargs["forcefield_name"] == "DPA4"
    # Relaxations keep a crystal's symmetry only in float64 (see relax_calculator_kwargs); single points
    # follow the settings.
    assert maker.calculator_kwargs["dtype"] == "float64"
    assert DPA4StaticMaker().calculator_kwargs["dtype"] == get_settings().dtype
    with pytest.raises(ValueError, match="allow_untrained_elements"):
        calculators.get_calculator(maker.calculator_meta, **maker.calculator_kwargs, allow_untrained_elements="yes")
    with pytest.raises(calculators.ModelFileError, match="nope.pt"):
        calculators.get_calculator(maker.calculator_meta, **maker.calculator_kwargs)


def _rattled_cu(seed: int = 0) -> Structure:
    structure = _cu(3.6) * 2
    rng = np.random.default_rng(seed)
    for i in range(len(structure)):
        structure.translate_sites([i], rng.normal(0, 0.08, 3), frac_coords=False)
    return structure


def test_md_nve_conserves_energy(tmp_path, monkeypatch):
    structure = _rattled_cu()
    maker = DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, ensemble="nve", n_steps=80, time_step=2.0)
    doc = _run(maker.make(structure), tmp_path, monkeypatch)
    assert isinstance(doc, ForceFieldTaskDocument)
    frames = doc.objects["trajectory"].frame_properties
    assert len(frames) == 81
    masses = np.array([site.specie.atomic_mass for site in structure])
    kinetic = np.array([0.5 * (masses[:, None] * np.array(f["velocities"]) ** 2).sum() for f in frames])
    potential = np.array([f["energy"] for f in frames])
    # Energy flows between potential and kinetic (~1 eV here) while the total stays within 1%.
    assert np.ptp(potential) > 0.3
    assert np.ptp(potential + kinetic) < 0.01 * np.ptp(potential)
    assert list(tmp_path.iterdir()) == []


def test_md_nvt_and_npt_run(tmp_path, monkeypatch):
    nvt = DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, ensemble="nvt", n_steps=20,
                      temperature=500, mb_velocity_seed=3)
    doc = _run(nvt.make(_cu(3.6) * 2), tmp_path, monkeypatch)
    temperatures = [f["temperature"] for f in doc.objects["trajectory"].frame_properties]
    assert temperatures[0] > 100  # velocities were drawn at 500 K
    # NPT from a compressed cell at 0 kbar: the barostat expands it.
    npt = DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, ensemble="npt", n_steps=150,
                      temperature=300, pressure=0.0, mb_velocity_seed=1)
    compressed = _cu(3.5) * 2
    doc = _run(npt.make(compressed), tmp_path, monkeypatch)
    assert doc.structure.volume > compressed.volume * 1.005


def test_md_bad_settings():
    with pytest.raises(MDSettingsError, match="ensemble='nph'"):
        DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, ensemble="nph")
    with pytest.raises(MDSettingsError, match="time_step=-1"):
        DPA4MDMaker(calculator_meta=EMT_META, calculator_kwargs={}, time_step=-1)


# ----------------------------------------------------------------------------------------- with the real DPA4
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    from _tiny_model import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _bcc_mo() -> Structure:
    return Structure(Lattice.cubic(3.10), ["Mo", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_dpa4_static_and_relax_with_real_model(tiny_checkpoint, tmp_path, monkeypatch):
    from dpa4_core.calculator import DPA4Calculator

    calculators.clear()
    kwargs = {"model": str(tiny_checkpoint), "device": "cpu", "dtype": "float64"}
    structure = _bcc_mo()
    structure.translate_sites([0], [0.05, -0.03, 0.02], frac_coords=False)
    static = _run(DPA4StaticMaker(calculator_kwargs=kwargs).make(structure), tmp_path, monkeypatch)
    direct = DPA4Calculator.from_checkpoint(tiny_checkpoint, dtype="float64")
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = direct
    assert static.forcefield_name == "DPA4"
    assert static.output.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(static.output.forces, atoms.get_forces(), atol=1e-9)

    relax = DPA4RelaxMaker(calculator_kwargs=kwargs, relax_kwargs={"fmax": 0.02}, steps=200)
    doc = _run(relax.make(structure), tmp_path, monkeypatch)
    assert doc.is_force_converged and doc.output.energy < static.output.energy
    assert relax.model_id.startswith("sha256:") and len(relax.model_id) == 71
    assert list(tmp_path.iterdir()) == []


def _count_loads(monkeypatch) -> list:
    """Record every checkpoint the model cache loads from disk."""
    from dpa4_core.io import checkpoint

    loads, load = [], checkpoint.load_checkpoint

    def counting(path, *args, **kwargs):
        loads.append(str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "load_checkpoint", counting)
    return loads


def test_dpa4_model_loaded_once_calculator_per_job(tiny_checkpoint, monkeypatch):
    calculators.clear()
    loads = _count_loads(monkeypatch)
    kwargs = {"model": str(tiny_checkpoint), "device": "cpu", "dtype": "float64"}
    maker = DPA4StaticMaker(calculator_kwargs=kwargs)
    clone = MontyDecoder().process_decoded(maker.as_dict())  # a second, deserialised job
    first, second = maker.calculator, clone.calculator
    assert loads == [str(tiny_checkpoint)], "one load from disk for both jobs"
    assert first is not second
    stretched, compressed = (AseAtomsAdaptor.get_atoms(_bcc_mo()) for _ in range(2))
    compressed.set_cell(compressed.cell * 0.95, scale_atoms=True)
    stretched.calc, compressed.calc = first, second
    e_compressed = compressed.get_potential_energy()
    assert stretched.get_potential_energy() != e_compressed
    assert second.results["energy"] == e_compressed, "one job's results are not overwritten by another's"


def test_model_cache_is_a_bounded_lru(tiny_checkpoint, tmp_path, monkeypatch):
    import shutil

    calculators.clear()
    monkeypatch.setattr(calculators, "MAX_CACHED_MODELS", 2)
    loads = _count_loads(monkeypatch)
    other = shutil.copy(tiny_checkpoint, tmp_path / "other.pt")
    a32 = calculators.get_model(tiny_checkpoint, dtype="float32")
    calculators.get_model(tiny_checkpoint, dtype="float64")
    assert calculators.get_model(tiny_checkpoint, dtype="float32") is a32  # hit: now the most recent
    calculators.get_model(other, dtype="float32")  # third model: drops the least recent (float64)
    assert len(loads) == 3
    assert calculators.get_model(tiny_checkpoint, dtype="float32") is a32
    assert len(loads) == 3
    calculators.get_model(tiny_checkpoint, dtype="float64")
    assert len(loads) == 4, "the dropped model is loaded again"


def test_model_cache_loads_once_under_concurrent_jobs(tiny_checkpoint, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    calculators.clear()
    loads = _count_loads(monkeypatch)
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: calculators.get_model(tiny_checkpoint, dtype="float64"), range(8)))
    assert len(loads) == 1 and all(model is models[0] for model in models)


def test_batched_engine_matches_ase_loop(tiny_checkpoint):
    from dpa4_flows.structures.candidates import bcc_orderings
    from dpa4_flows.jobs.batch_relax import BatchRelaxMaker

    cells = bcc_orderings(["Mo", "W"])
    ids = ["MoW-B2", "Mo3W-D03"]
    kwargs = {"model": str(tiny_checkpoint), "device": "cpu", "dtype": "float64"}
    docs = {
        engine: BatchRelaxMaker(calculator_kwargs=kwargs, engine=engine, fmax=0.05, max_steps=60,
                                progress=False).relax([cells[i] for i in ids], ids)
        for engine in ("batched", "ase")
    }
    assert docs["batched"].engine == "batched" and docs["ase"].engine == "ase"
    for fast, slow in zip(docs["batched"].results, docs["ase"].results):
        assert fast.candidate_id == slow.candidate_id and fast.converged and slow.converged
        assert fast.energy == pytest.approx(slow.energy, abs=1e-6)
        assert fast.n_steps == slow.n_steps
        np.testing.assert_allclose(fast.structure.lattice.matrix, slow.structure.lattice.matrix, atol=1e-5)


def test_all_makers_json_round_trip(tmp_path):
    import json

    from monty.json import MontyEncoder

    from dpa4_flows.flows.screening import ScreeningMaker
    from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
    from dpa4_flows.jobs.finetune import FineTuneMaker
    from dpa4_flows.jobs.stability import StabilityMaker

    makers = [
        DPA4RelaxMaker(calculator_kwargs={"model": "/abs/m.pt", "device": "cpu", "dtype": "float64"}),
        DPA4MDMaker(ensemble="npt", temperature=500, pressure=1.0, n_steps=10),
        BatchRelaxMaker(fmax=0.02, engine="ase"),
        StabilityMaker(tolerance=0.01, method="patched"),
        ScreeningMaker(relax_maker=BatchRelaxMaker(max_steps=7), chunk_size=5, output_dir=str(tmp_path)),
        FineTuneMaker(base_model="/abs/base.pt", config={"steps": 3}),
    ]
    for maker in makers:
        text = json.dumps(maker, cls=MontyEncoder)
        clone = MontyDecoder().process_decoded(json.loads(text))
        assert type(clone) is type(maker)
        assert clone.as_dict() == maker.as_dict()
    assert clone.base_model == "/abs/base.pt"
    assert makers[4].output_dir == str(tmp_path) and makers[4].relax_maker.max_steps == 7


def test_default_model_is_the_starter_and_relaxes_bcc_metals(tmp_path, monkeypatch):
    """The makers' default checkpoint is the shipped starter model; relaxing bcc Mo and Ta with it gives
    lattice constants close to PBE (3.16 and 3.32 A, the functional of its training data)."""
    from dpa4_core.pretrained import STARTER as STARTER_CHECKPOINT

    monkeypatch.delenv("DPA4_MODEL", raising=False)
    maker = DPA4RelaxMaker(relax_kwargs={"fmax": 0.01})
    assert maker.calculator_kwargs["model"] == str(STARTER_CHECKPOINT.resolve())
    if not STARTER_CHECKPOINT.is_file():
        pytest.skip("starter checkpoint not shipped in this checkout")
    for element, a_pbe in (("Mo", 3.16), ("Ta", 3.32)):
        start = Structure(Lattice.cubic(a_pbe * 0.97), [element] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]])
        doc = _run(maker.make(start), tmp_path, monkeypatch)
        assert doc.is_force_converged and doc.forcefield_name == "DPA4"
        assert doc.structure.lattice.a == pytest.approx(a_pbe, rel=0.015)
        assert doc.structure.lattice.a == pytest.approx(doc.structure.lattice.c, abs=1e-3)  # stays cubic
    assert list(tmp_path.iterdir()) == []


def test_job_calculators_record_the_checkpoint_they_run(tiny_checkpoint):
    """A job's calculator wraps a cached model object, yet todict() names the file and its hash (issue 17)."""
    from dpa4_core.io.files import file_sha256

    calculators.clear()
    calc = DPA4StaticMaker(calculator_kwargs={"model": str(tiny_checkpoint), "dtype": "float64"}).calculator
    recorded = calc.todict()
    assert recorded["checkpoint"] == str(tiny_checkpoint.resolve())
    assert recorded["model"] == tiny_checkpoint.name
    assert recorded["sha256"] == file_sha256(tiny_checkpoint)
    assert recorded["dtype"] == "float64"


def test_shipped_model_names_work_in_jobs_settings_and_screen(tmp_path, monkeypatch, capsys):
    """`dpa4 models` names resolve wherever dpa4_flows takes a checkpoint (issue 18); unknown names list the known."""
    from dpa4_core.pretrained import resolve_checkpoint
    from dpa4_flows.screen import ScreenOptions, screen
    from dpa4_flows.settings import get_settings

    calculators.clear()
    small = resolve_checkpoint("small-MoNbTaW").resolve()
    calc = DPA4StaticMaker(calculator_kwargs={"model": "small-MoNbTaW"}).calculator
    assert calc.todict()["checkpoint"] == str(small)
    monkeypatch.setenv("DPA4_MODEL", "small-MoNbTaW")
    assert get_settings().model == small
    with pytest.raises(calculators.ModelFileError, match="starter-MoNbTaW"):
        calculators.checkpoint_path("no-such-model")
    assert screen(ScreenOptions(out=tmp_path / "run", model="no-such-model", quiet=True)) == 2
    assert "small-MoNbTaW" in capsys.readouterr().err
