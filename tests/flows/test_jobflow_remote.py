"""jobflow-remote, offline: the example project validates, and a flow's submission documents
are built by jobflow-remote's own code without a database.

Checks the example in ``examples/jobflow-remote/dpa4.yaml`` against jobflow-remote's pydantic
models, that every job of a flow gets a document with the right parents and state (READY
without parents, WAITING with), and that a project without the ``data`` store is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from _jobs import make_flow

pytest.importorskip("jobflow_remote", reason="jobflow-remote not installed: pip install 'dpa4[distributed]'")

from dpa4_flows.execution.distributed import RemoteConfigError, load_remote_project, remote_submission  # noqa: E402

EXAMPLE = Path(__file__).parents[2] / "examples" / "jobflow-remote" / "dpa4.yaml"


def test_example_project_validates_without_a_database():
    project = load_remote_project(EXAMPLE)
    assert project.name == "dpa4"
    assert set(project.workers) == {"local", "cluster"}
    assert project.workers["cluster"].scheduler_type == "slurm"
    assert project.workers["cluster"].resources["gres"] == "gpu:1"
    store = project.get_jobstore()
    assert "data" in store.additional_stores
    assert type(store.docs_store).__name__ == "MongoStore"


def test_submission_documents_follow_the_flow():
    project = load_remote_project(EXAMPLE)
    flow = make_flow()
    flow_doc, job_docs = remote_submission(flow, project, worker="cluster", priority=3)
    jobs = {j.uuid: (j, parents) for j, parents in flow.iterflow()}
    assert len(job_docs) == len(jobs) == 10
    assert flow_doc["uuid"] == flow.uuid and sorted(flow_doc["jobs"]) == sorted(jobs)
    for doc in job_docs:
        job, parents = jobs[doc["uuid"]]
        assert doc["worker"] == "cluster" and doc["priority"] == 3
        assert sorted(doc["parents"]) == sorted(parents)
        assert doc["state"] == ("WAITING" if parents else "READY")
        assert doc["job"]["function"]["@callable"] == job.function.__name__
    assert [d["db_id"] for d in job_docs] == [str(i) for i in range(1, 11)]


def test_bad_projects_are_refused(tmp_path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    del spec["jobstore"]["additional_stores"]
    bad = tmp_path / "nodata.yaml"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(RemoteConfigError, match="'data' additional store"):
        load_remote_project(bad)
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["workers"]["cluster"]["type"] = "teleport"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(RemoteConfigError, match="invalid jobflow-remote project"):
        load_remote_project(bad)
    with pytest.raises(RemoteConfigError, match="worker 'gpu99'"):
        remote_submission(make_flow(), load_remote_project(EXAMPLE), worker="gpu99")
