"""flow_fingerprint and the runner's use of it: the same flow built twice (new uuids) or reloaded from a
workdir matches; a changed name, function or input does not, and the runner then refuses the workdir."""

from __future__ import annotations

import json

import pytest
from jobflow import Flow

from _jobs import add, fail_if, make_flow
from dpa4_flows.execution.fingerprint import flow_fingerprint
from dpa4_flows.execution.runner import FlowMismatchError, run_resumable
from dpa4_flows.execution.state import ResumeState
from dpa4_flows.execution.stores import embedded_store
from dpa4_flows.execution.workdir import load_flow, save_flow


def _pair(b: float = 4) -> Flow:
    first = add(1, 2)
    return Flow([first, add(first.output, b)])


def test_same_flow_built_twice_or_reloaded_matches(tmp_path):
    flow = make_flow()
    assert flow_fingerprint(flow) == flow_fingerprint(make_flow())  # other uuids, same work
    save_flow(tmp_path, flow)
    assert flow_fingerprint(load_flow(tmp_path)) == flow_fingerprint(flow)
    assert flow_fingerprint(add(1, 2)) == flow_fingerprint(Flow([add(1, 2)]))  # a job is a one-job flow


def test_name_function_and_inputs_count():
    base = flow_fingerprint(_pair())
    assert flow_fingerprint(_pair(b=5)) != base  # an input
    assert flow_fingerprint(make_flow(n_chain=3)) != flow_fingerprint(make_flow())  # the jobs
    renamed = _pair()
    renamed.jobs[1].name = "plus"
    assert flow_fingerprint(renamed) != base
    other_function = fail_if(1, 2)
    other_function.name = "add"  # same name and inputs as add(1, 2), another import path
    assert flow_fingerprint(Flow([other_function])) != flow_fingerprint(Flow([add(1, 2)]))
    # Which job feeds which counts, although the uuids themselves do not.
    a, b = add(1, 2), add(1, 2)
    crossed = Flow([a, b, add(b.output, 4)])
    a, b = add(1, 2), add(1, 2)
    assert flow_fingerprint(crossed) != flow_fingerprint(Flow([a, b, add(a.output, 4)]))


def test_runner_resumes_a_rebuilt_flow_and_refuses_a_changed_one(tmp_path):
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    first = run_resumable(_pair(), store, work, progress=False)
    again = run_resumable(_pair(), store, work, progress=False)  # rebuilt: fresh uuids
    assert again == first and all(s["attempts"] == 1 for s in again.values())
    with pytest.raises(FlowMismatchError, match=rf"{work} holds a different flow \(jobs, functions or inputs"):
        run_resumable(_pair(b=5), store, work, progress=False)


def test_workdir_from_before_fingerprints_compares_job_names(tmp_path):
    store, work = embedded_store(tmp_path / "db.sqlite"), tmp_path / "w"
    run_resumable(_pair(), store, work, progress=False)
    state = ResumeState(work / "state.sqlite")  # make it look like an old workdir
    with state.tx() as c:
        c.execute("DELETE FROM meta WHERE key = 'fingerprint'")
        state.set_meta(c, "signature", json.dumps(["add", "add"]))
    state.close()
    result = run_resumable(_pair(b=5), store, work, progress=False)  # same names: resumed as before
    assert sorted(s["output"] for s in result.values()) == [3, 7]  # the persisted flow's outputs
    with pytest.raises(FlowMismatchError, match="job names differ"):
        run_resumable(Flow([add(1, 2)]), store, work, progress=False)
