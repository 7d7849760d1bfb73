"""Stores from jobflow's own configuration (``jobflow.yaml``): ``configured_store`` and the ``mongo_store`` alias.

Every test writes a real configuration file in ``tmp_path`` and points ``JOBFLOW_CONFIG_FILE`` at it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jobflow import run_locally
from maggma.stores import MemoryStore

from _jobs import add, square_all
from dpa4_flows.execution.sqlite_store import SQLiteStore
from dpa4_flows.execution.stores import StoreConfigError, configured_store, embedded_store, mongo_store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jobflow.yaml"


def _config(tmp_path: Path, monkeypatch, content: dict | str) -> Path:
    path = tmp_path / "jobflow.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(path))
    monkeypatch.delenv("JOBFLOW_JOB_STORE", raising=False)
    return path


def _memory_spec() -> dict:
    return {"JOB_STORE": {"docs_store": {"type": "MemoryStore", "collection_name": "cfg_outputs"},
                          "additional_stores": {"data": {"type": "MemoryStore", "collection_name": "cfg_data"}}}}


def test_a_memory_store_in_jobflow_yaml_is_returned_not_mistaken_for_no_configuration(tmp_path, monkeypatch):
    _config(tmp_path, monkeypatch, _memory_spec())
    store = configured_store()
    assert isinstance(store.docs_store, MemoryStore) and isinstance(store.additional_stores["data"], MemoryStore)
    job = square_all([1.0, 2.0])
    run_locally(job, store=store, log=False, ensure_success=True)
    assert store.get_output(job.uuid)["total"] == 5.0
    # The old entry point names what it refuses instead of claiming there is no configuration.
    with pytest.raises(StoreConfigError, match=r"MemoryStore, not MongoDB.*configured_store\(\)"), \
            pytest.warns(DeprecationWarning, match="configured_store"):
        mongo_store()


def test_the_embedded_store_declared_in_jobflow_yaml(tmp_path, monkeypatch):
    db = tmp_path / "jobs.sqlite"
    _config(tmp_path, monkeypatch, {"JOB_STORE": embedded_store(db).as_dict()})
    store = configured_store()
    assert isinstance(store.docs_store, SQLiteStore) and store.docs_store.database_path == str(db)
    job = add(2, 3)
    run_locally(job, store=store, log=False, ensure_success=True)
    again = configured_store()
    again.connect()
    assert again.get_output(job.uuid) == 5


def test_plain_jobflow_reads_the_embedded_store_spelling(tmp_path, monkeypatch):
    """The @module/@class spelling works for jobflow itself (its SETTINGS, run_locally's default store), in a
    process that imports jobflow before anything of dpa4."""
    db = tmp_path / "jobs.sqlite"
    config = _config(tmp_path, monkeypatch, {"JOB_STORE": embedded_store(db).as_dict()})
    script = ("import jobflow\n"
              "from jobflow import job, run_locally\n"
              "store = jobflow.SETTINGS.JOB_STORE\n"
              "print(type(store.docs_store).__name__, store.docs_store.database_path)\n"
              "out = run_locally(job(sorted)([3, 1, 2]), log=False, ensure_success=True)\n"
              "print(list(out.values())[0][1].output)\n")
    env = {**os.environ, "JOBFLOW_CONFIG_FILE": str(config), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [f"SQLiteStore {db}", "[1, 2, 3]"]
    outputs = SQLiteStore(db, "outputs")
    outputs.connect()
    assert outputs.count() == 1, "run_locally without a store wrote into the configured file"


def test_a_type_entry_jobflow_cannot_resolve_names_the_file_the_key_and_the_fix(tmp_path, monkeypatch):
    spec = {"JOB_STORE": {"docs_store": {"type": "SQLiteStore", "database_path": str(tmp_path / "j.sqlite")},
                          "additional_stores": {"data": {"type": "MemoryStore"}}}}
    path = _config(tmp_path, monkeypatch, spec)
    with pytest.raises(StoreConfigError) as err:
        configured_store()
    message = str(err.value)
    assert str(path) in message and "JOB_STORE.docs_store.type" in message and "'@module'" in message


def test_missing_configuration_names_the_file_and_the_key(tmp_path, monkeypatch):
    absent = tmp_path / "absent.yaml"
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(absent))
    monkeypatch.delenv("JOBFLOW_JOB_STORE", raising=False)
    with pytest.raises(StoreConfigError, match=rf"no JOB_STORE configured: {absent} does not exist"):
        configured_store()
    path = _config(tmp_path, monkeypatch, {"UID_TYPE": "uuid4"})
    with pytest.raises(StoreConfigError, match=rf"no JOB_STORE configured: {path} has no key JOB_STORE"):
        configured_store()
    path = _config(tmp_path, monkeypatch, "JOB_STORE: [unclosed\n")
    with pytest.raises(StoreConfigError, match=rf"{path} is not valid YAML"):
        configured_store()


def test_a_store_without_the_data_store_names_the_key(tmp_path, monkeypatch):
    spec = _memory_spec()
    del spec["JOB_STORE"]["additional_stores"]
    path = _config(tmp_path, monkeypatch, spec)
    with pytest.raises(StoreConfigError, match=rf"{path}: JOB_STORE\.additional_stores\.data is missing"):
        configured_store()


def test_job_store_environment_variable_names_a_store_file(tmp_path, monkeypatch):
    # jobflow documents JOBFLOW_JOB_STORE=path/to/jobstore.yaml; configured_store reads that file.
    store_file = tmp_path / "store.yaml"
    store_file.write_text(yaml.safe_dump(embedded_store(tmp_path / "env.sqlite").as_dict()))
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(tmp_path / "absent.yaml"))
    monkeypatch.setenv("JOBFLOW_JOB_STORE", str(store_file))
    assert configured_store().docs_store.database_path == str(tmp_path / "env.sqlite")
    monkeypatch.setenv("JOBFLOW_JOB_STORE", str(tmp_path / "missing.yaml"))
    with pytest.raises(StoreConfigError, match="JOBFLOW_JOB_STORE"):
        configured_store()


def test_mongo_store_alias_still_reads_a_mongodb_configuration(monkeypatch):
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(EXAMPLE))
    monkeypatch.delenv("JOBFLOW_JOB_STORE", raising=False)
    with pytest.warns(DeprecationWarning, match="configured_store"):
        store = mongo_store()
    assert type(store.docs_store).__name__ == "MongoStore" and "data" in store.additional_stores
    assert type(configured_store().docs_store).__name__ == "MongoStore"


def test_the_embedded_store_block_of_the_example_file_works_uncommented(tmp_path, monkeypatch):
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# JOB_STORE:")
    block = "\n".join(line[2:] for line in lines[start:] if line.startswith("# ") or line == "#")
    block = block.replace("/home/me/screening/jobs.sqlite", str(tmp_path / "jobs.sqlite"))
    _config(tmp_path, monkeypatch, block)
    store = configured_store()
    assert isinstance(store.docs_store, SQLiteStore) and isinstance(store.additional_stores["data"], SQLiteStore)
    assert store.docs_store.database_path == str(tmp_path / "jobs.sqlite")
