"""FineTuneMaker: the trainer as a jobflow job, on real DFT data (Mo elastic set, VASP PBE).

Checks that the job writes a loadable checkpoint whose absolute path and sha256 are in the output, that the
weights changed, that metrics and the training log land in the ``data`` store, and that a dataset given as
a store query gives the same frames as the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from jobflow import run_locally

from dpa4_core.data.paths import vendored
from dpa4_flows.jobs.finetune import FineTuneInputError, FineTuneMaker, frames_from_documents
from dpa4_flows.execution.stores import memory_store

torch = pytest.importorskip("torch")

CONFIG = {"steps": 2, "batch_size": 2, "valid_every": 2, "checkpoint_every": 2, "plots": False,
          "progress": False, "data": {"max_frames": 6, "split": {"valid": 0.25}}, "max_valid_frames": 2}


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    from _tiny_model import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("base") / "base.pt", dtype="float32", elements=[42])


def _elastic_documents() -> list[dict]:
    """Mo elastic frames as store documents: structure, energy (eV), forces (eV/A), stress (eV/A^3, ASE sign)."""
    import gzip

    raw = json.loads(gzip.open(vendored("maml_MoNbTaW", "Mo_Elastic.json.gz")).read())
    docs = []
    for item in raw[:8]:
        kbar = np.asarray(item["outputs"]["stress"], dtype=float)  # VASP sign, Voigt xx yy zz xy yz xz
        xx, yy, zz, xy, yz, xz = -kbar * 6.2415e-4
        docs.append({"structure": item["structure"], "energy": item["outputs"]["energy"],
                     "forces": item["outputs"]["forces"],
                     "stress": [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]], "source": "Mo_Elastic"})
    return docs


def test_finetune_job_from_file(base_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    maker = FineTuneMaker(base_model=str(base_checkpoint), config=CONFIG, output_dir=str(tmp_path / "ft"))
    job = maker.make(str(vendored("maml_MoNbTaW", "Mo_Elastic.json.gz")))
    store = memory_store()
    doc = run_locally(job, store=store, ensure_success=True, log=False)[job.uuid][1].output
    ckpt = tmp_path / "ft"
    assert doc.checkpoint_path.startswith(str(ckpt)) and Path(doc.checkpoint_path).is_absolute()
    with open(doc.checkpoint_path, "rb") as handle:
        assert doc.checkpoint_sha256 == hashlib.sha256(handle.read()).hexdigest()
    assert doc.base_model == str(base_checkpoint) and doc.checkpoint_sha256 != doc.base_model_sha256
    assert doc.n_frames > 0 and doc.training_log and doc.metrics
    # The new weights load and differ from the base model's.
    from dpa4_core.io.checkpoint import load_checkpoint

    new, old = load_checkpoint(doc.checkpoint_path), load_checkpoint(base_checkpoint)
    assert any(not torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))
    # Metrics and log live in the data store; the main document holds references to them.
    store.connect()
    main = store.query_one({"uuid": job.uuid}, load=False)["output"]
    for key in ("training_log", "metrics"):
        assert main[key]["store"] == "data"
        blob = store.additional_stores["data"].query_one({"blob_uuid": main[key]["blob_uuid"]})
        assert blob is not None and blob["job_uuid"] == job.uuid
    assert main["checkpoint_sha256"] == doc.checkpoint_sha256  # small fields stay in the main document
    loaded = store.query_one({"uuid": job.uuid}, load=True)["output"]
    assert loaded["training_log"] == doc.training_log
    assert loaded["metrics"]["valid"]["n_frames"] == doc.metrics["valid"]["n_frames"]


def test_finetune_job_from_store_query(base_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = memory_store()
    store.connect()
    for i, d in enumerate(_elastic_documents()):
        store.docs_store.update({"uuid": f"dft-{i}", "index": 1, **d}, key="uuid")
    maker = FineTuneMaker(base_model=str(base_checkpoint), config=CONFIG, output_dir=str(tmp_path / "q"))
    job = maker.make(query={"source": "Mo_Elastic"})
    doc = run_locally(job, store=store, ensure_success=True, log=False)[job.uuid][1].output
    assert doc.dataset_source.startswith("store:") and doc.n_frames == 8
    assert (tmp_path / "q" / "dataset.extxyz").is_file()


def test_frames_from_documents_and_errors(tmp_path):
    frames = frames_from_documents(_elastic_documents()[:2])
    assert len(frames) == 2 and frames[0].get_stress().shape == (6,)
    # Same labels as the trainer's own reader of the file (energy, forces, stress in ASE convention).
    from dpa4_core.data.readers import read_frames

    reference = list(read_frames(str(vendored("maml_MoNbTaW", "Mo_Elastic.json.gz"))))[:2]
    for atoms, ref in zip(frames, reference):
        assert atoms.get_potential_energy() == pytest.approx(ref.energy)
        np.testing.assert_allclose(atoms.get_forces(), ref.forces, atol=1e-12)
        np.testing.assert_allclose(atoms.get_stress(voigt=False), ref.stress, rtol=1e-4, atol=1e-8)
    with pytest.raises(FineTuneInputError, match="no 'structure' and 'energy'"):
        frames_from_documents([{"energy": 1.0}])
    maker = FineTuneMaker(base_model=str(tmp_path / "none.pt"), config=CONFIG)
    with pytest.raises(FineTuneInputError, match="exactly one"):
        maker.run()
    with pytest.raises(FineTuneInputError, match="set by FineTuneMaker"):
        FineTuneMaker(config={"output_dir": "x"})


def test_committee_flow_outputs_one_checkpoint_per_seed(base_checkpoint, tmp_path, monkeypatch):
    from dpa4_flows.jobs.finetune import committee_flow

    monkeypatch.chdir(tmp_path)
    config = {**CONFIG, "data": {**CONFIG["data"], "train": [str(vendored("maml_MoNbTaW", "Mo_Elastic.json.gz"))]},
              "base_checkpoint": str(base_checkpoint), "output_dir": str(tmp_path / "committee")}
    flow = committee_flow(config, [0, 1])
    assert [j.name for j in flow.jobs] == ["DPA4 fine-tune seed 0", "DPA4 fine-tune seed 1"]
    store = memory_store()
    run_locally(flow, store=store, ensure_success=True, log=False)
    paths = [ref.resolve(store) for ref in flow.output]
    assert paths == [str(tmp_path / "committee" / f"seed{k}" / "best.pt") for k in (0, 1)]
    docs = [store.query_one({"uuid": j.uuid}, load=True)["output"] for j in flow.jobs]
    assert [d["config"]["seed"] for d in docs] == [0, 1]
    assert all(d["base_model"] == str(base_checkpoint) for d in docs)
    from dpa4_core.io.checkpoint import load_checkpoint

    a, b = (load_checkpoint(p).state_dict() for p in paths)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the seeds made different members
    with pytest.raises(FineTuneInputError, match="distinct seeds"):
        committee_flow(config, [2, 2])
