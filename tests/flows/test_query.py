"""Query helpers on a real screening flow (EMT Cu-Au, resumable run on the embedded store).

``flow_results`` must list every job of the flow once (final index) with its outputs as
columns; ``candidate_record`` must gather one candidate's relaxation, stability document and
report row, agreeing with the report the flow produced.
"""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from dpa4_flows.flows.screening import ScreeningMaker
from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
from dpa4_flows.execution.results import (UnknownCandidateError, UnknownFlowError, candidate_record,
                              flow_results, flow_uuid)
from dpa4_flows.execution.runner import run_resumable
from dpa4_flows.execution.stores import embedded_store
from dpa4_flows.execution.workdir import load_flow

EMT = {"calculator_meta": "ase.calculators.emt.EMT", "calculator_kwargs": {}, "progress": False}
FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("query")
    cands = {"Cu3Au-L12": Structure(Lattice.cubic(3.75), ["Au", "Cu", "Cu", "Cu"], FCC),
             "CuAu-L10": Structure(Lattice.cubic(3.85), ["Cu", "Cu", "Au", "Au"], FCC),
             "CuAu3-L12": Structure(Lattice.cubic(4.0), ["Cu", "Au", "Au", "Au"], FCC)}
    flow = ScreeningMaker(relax_maker=BatchRelaxMaker(**EMT), chunk_size=2).make(
        list(cands.values()), list(cands))
    store = embedded_store(tmp / "jobs.sqlite")
    summary = run_resumable(flow, store, tmp / "work", progress=False, ensure_success=True)
    return store, tmp / "work", summary


def test_flow_results_lists_every_job_once(screened):
    store, work, summary = screened
    frame = flow_results(store, work)
    assert sorted(frame["uuid"]) == sorted(summary)
    assert list(frame.columns[:4]) == ["uuid", "index", "name", "completed_at"]
    assert frame["completed_at"].is_monotonic_increasing
    # The same rows whether the flow is named by workdir, Flow or uuid.
    assert flow_results(store, load_flow(work)).equals(frame)
    assert flow_results(store, flow_uuid(work), output_fields=["n_candidates"]).shape[0] == len(frame)
    report = frame[frame["output.n_candidates"].notna()]
    assert len(report) == 1 and report["output.n_candidates"].iloc[0] == 3
    with pytest.raises(UnknownFlowError, match="no job of flow"):
        flow_results(store, "00000000-0000-0000-0000-000000000000")


def test_candidate_record_agrees_with_report(screened):
    store, work, summary = screened
    report = next(s["output"] for s in summary.values() if s["name"] and "report" in s["name"])
    row = next(r for r in report["rows"] if r["candidate_id"] == "CuAu-L10")
    rec = candidate_record(store, work, "CuAu-L10")
    jobs = [r["job"] for r in rec["records"]]
    assert len(jobs) >= 3  # relaxation chunk, stability, report (rows and stability docs)
    relax = [r for r in rec["records"] if ".results." in r["path"]]
    assert len(relax) == 1 and relax[0]["data"]["converged"] is True
    assert rec["summary"]["e_above_hull"] == pytest.approx(row["e_above_hull"])
    assert rec["summary"]["formula"] == row["formula"] == "CuAu"
    assert all(r["data"]["candidate_id"] == "CuAu-L10" for r in rec["records"])
    with pytest.raises(UnknownCandidateError, match="'nope'"):
        candidate_record(store, work, "nope")
