"""FireWorks: dpa4 flows run through a LaunchPad and land in the persistent embedded store.

No MongoDB server exists here, so the LaunchPad runs on mongomock in this process (FireWorks'
own client is swapped for mongomock's); the JobStore is the on-disk ``embedded_store``,
serialised into every Firework. Checks a real DPA4 static + relax (tiny seeded model) against
a direct calculation, and the dynamic flow (replace, detour, addition) against run_locally.
"""

from __future__ import annotations

import numpy as np
import pytest
from jobflow import Flow, run_locally
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from _jobs import make_flow
from dpa4_flows.execution.distributed import fireworks_workflow
from dpa4_flows.execution.stores import StoreConfigError, embedded_store, memory_store

fireworks = pytest.importorskip("fireworks", reason="FireWorks not installed (dpa4[distributed])")
mongomock = pytest.importorskip("mongomock", reason="mongomock needed for an offline LaunchPad")


@pytest.fixture()
def launchpad(monkeypatch, tmp_path):
    """A LaunchPad on mongomock (FireWorks' offline recipe); launches go under tmp_path."""
    import fireworks.core.launchpad as lp_module
    import mongomock.gridfs

    monkeypatch.setattr(lp_module, "MongoClient", mongomock.MongoClient)
    mongomock.gridfs.enable_gridfs_integration()
    lpad = lp_module.LaunchPad(name=f"fw_{tmp_path.name}", strm_lvl="ERROR")
    lpad.reset("", require_password=False, max_reset_wo_password=1000)
    return lpad


def _rapidfire(lpad, where) -> None:
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    where.mkdir(exist_ok=True)
    rapidfire(lpad, FWorker(), m_dir=str(where), strm_lvl="ERROR")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A seeded, untrained tiny DPA4 (plumbing, not accuracy)."""
    pytest.importorskip("torch")
    from _tiny_model import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def test_dpa4_static_and_relax_through_fireworks(launchpad, tiny_checkpoint, tmp_path):
    from dpa4_core.calculator import DPA4Calculator

    from dpa4_flows.jobs.relax import DPA4RelaxMaker, DPA4StaticMaker

    kwargs = {"model": str(tiny_checkpoint), "device": "cpu", "dtype": "float64"}
    structure = Structure(Lattice.cubic(3.10), ["Mo", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    structure.translate_sites([0], [0.05, -0.03, 0.02], frac_coords=False)
    static = DPA4StaticMaker(calculator_kwargs=kwargs).make(structure)
    relax = DPA4RelaxMaker(calculator_kwargs=kwargs, relax_kwargs={"fmax": 0.05}, steps=30,
                           relax_cell=False).make(structure)
    store = embedded_store(tmp_path / "jobs.sqlite")
    launchpad.add_wf(fireworks_workflow(Flow([static, relax]), store))
    _rapidfire(launchpad, tmp_path / "launches")

    assert launchpad.get_fw_ids({"state": "COMPLETED"}) and not launchpad.get_fw_ids(
        {"state": {"$ne": "COMPLETED"}})
    fresh = embedded_store(tmp_path / "jobs.sqlite")  # read back through a new connection
    fresh.connect()
    doc = fresh.get_output(static.uuid)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = DPA4Calculator.from_checkpoint(tiny_checkpoint, dtype="float64")
    assert doc["output"]["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(doc["output"]["forces"], atoms.get_forces(), atol=1e-9)
    relaxed = fresh.get_output(relax.uuid)
    assert relaxed["output"]["energy"] < doc["output"]["energy"]
    assert fresh.additional_stores["data"].count() >= 1  # ionic steps in the data store


def test_dynamic_flow_through_fireworks_matches_run_locally(launchpad, tmp_path):
    ref_flow, ref_store = make_flow(), memory_store()
    run_locally(ref_flow, store=ref_store, log=False, ensure_success=True)

    flow = make_flow()
    store = embedded_store(tmp_path / "jobs.sqlite")
    launchpad.add_wf(fireworks_workflow(flow, store))
    _rapidfire(launchpad, tmp_path / "launches")
    store.connect()
    assert store.get_output(flow.output.uuid) == ref_store.get_output(ref_flow.output.uuid)
    assert store.count() == ref_store.count() == 16  # replace, detour and addition included


def test_in_memory_store_refused():
    with pytest.raises(StoreConfigError, match="not persistent"):
        fireworks_workflow(make_flow(), memory_store())
