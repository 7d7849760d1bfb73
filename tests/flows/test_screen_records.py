"""`dpa4 screen` on a folder of good and broken candidates: one record each, the good ones unaffected;
physical-regime flags on constructed relaxations; competing phases join the model's own hull."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from dpa4_flows.analysis.regime import RegimeLimits, energy_flag, geometry_flags

BCC = [[0, 0, 0], [0.5, 0.5, 0.5]]


def _bcc(a: float, species=("Mo", "W")) -> Structure:
    return Structure(Lattice.cubic(a), list(species), BCC)


def test_flags_on_constructed_relaxations():
    start = _bcc(3.16) * (2, 2, 2)
    assert geometry_flags(start, start) == []
    # Two atoms 0.1 A apart that "relax" into a 1.8x-volume cell (issue 15's most-stable artefact).
    close = Structure(Lattice.cubic(3.16), ["Mo", "W", "Mo"], [*BCC, [0.0316, 0, 0]])
    blown = close.copy()
    blown.scale_lattice(1.8 * close.volume)
    volume, collapsed = geometry_flags(close, blown)
    assert volume.startswith("volume changed by +80%") and collapsed.startswith("atoms collapsed")
    expanded = start.copy()
    expanded.scale_lattice(1.8 * start.volume)
    assert [f[:22] for f in geometry_flags(start, expanded)] == ["volume changed by +80%"]
    assert any("collapsed: two atoms" in f for f in geometry_flags(start, close))
    apart = Structure(Lattice.cubic(14.0), ["Mo", "W"], BCC)
    assert any("atoms separated: 2 atom(s)" in f for f in geometry_flags(apart, apart))
    # A loose limit lets the same volume change pass.
    assert geometry_flags(start, expanded, RegimeLimits(max_volume_change=1.0)) == []
    assert "below the plausible bound" in energy_flag(-6.0)
    assert energy_flag(-0.4) is None and energy_flag(None) is None


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """``dpa4 screen`` with the starter model on good, broken, overlapping and foreign candidates."""
    from dpa4_core.cli import main as dpa4

    tmp = tmp_path_factory.mktemp("screen")
    folder = tmp / "cands"
    folder.mkdir()
    _bcc(3.18).to(filename=str(folder / "MoW-B2.cif"))
    _bcc(3.25, ("Nb", "W")).to(filename=str(folder / "NbW-B2.vasp"), fmt="poscar")
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 3.1\n")
    Structure(Lattice.cubic(3.16), ["Mo", "W", "Mo"], [*BCC, [0.0316, 0, 0]]).to(filename=str(folder / "close.cif"))
    _bcc(2.87, ("Fe", "W")).to(filename=str(folder / "FeW.cif"))
    labelled = [{"structure": _bcc(3.2, ("Mo", "Nb")).as_dict(), "e_above_hull": 0.0}]
    (folder / "labelled.json").write_text(json.dumps(labelled))
    phases = tmp / "phases"
    phases.mkdir()
    _bcc(3.2, ("Mo", "Ta")).to(filename=str(phases / "MoTa-known.cif"))
    out = tmp / "out"
    args = ["screen", str(folder), "--store", str(out), "--model", "starter", "--competing-phases", str(phases),
            "--chunk", "2", "--max-steps", "150", "--quiet"]
    code = dpa4(args)
    return code, out, args


def test_every_candidate_has_exactly_one_record(screened, capsys):
    code, out, _ = screened
    assert code == 0
    frame = pd.read_csv(out / "screening.csv").set_index("candidate_id")
    assert sorted(frame.index) == sorted(["MoW-B2", "NbW-B2", "broken", "close", "FeW", "labelled-0"])
    status = frame["status"].to_dict()
    assert status["broken"] == status["close"] == status["FeW"] == "rejected"
    assert frame.loc["broken", "reason"].startswith("unreadable file broken.cif")
    assert frame.loc["close", "reason"].startswith("overlapping atoms")
    assert "outside the model's trained set: Fe" in frame.loc["FeW", "reason"]
    assert frame.loc["FeW", "formula"] == "FeW"
    good = frame.loc[["MoW-B2", "NbW-B2", "labelled-0"]]
    assert (good["status"] == "ranked").all() and good["e_above_hull"].notna().all(), good
    assert frame.loc[["broken", "close", "FeW"], "e_above_hull"].isna().all()
    log = (out / "screen.log").read_text()
    assert "chunk 1/2 done" in log and "chunk 2/2 done" in log and "ETA" in log


def test_competing_phase_is_on_the_hull_not_in_the_table(screened):
    from dpa4_flows.screen import stored_report

    _, out, _ = screened
    report = stored_report(out)
    phases = [r for r in report.references if r.get("competing_phase")]
    assert [(r["entry_id"], r["formula"]) for r in phases] == [("phase:MoTa-known", "TaMo")]
    refs = {r["entry_id"] for r in report.references}
    assert {"ref:Mo-bcc", "ref:W-bcc", "ref:Nb-bcc", "ref:Ta-bcc"} <= refs  # Ta only from the competing phase
    assert not any(r.candidate_id.startswith("phase:") for r in report.rows)
    # The DFT label of the labelled candidate gives metrics over one ranked candidate.
    assert report.metrics is not None and report.metrics["n"] == 1


def test_a_good_candidate_gets_the_same_result_with_or_without_the_broken_ones(screened, tmp_path):
    from dpa4_core.cli import main as dpa4

    _, out, args = screened
    folder = tmp_path / "only"
    folder.mkdir()
    _bcc(3.18).to(filename=str(folder / "MoW-B2.cif"))
    alone = tmp_path / "alone"
    assert dpa4(["screen", str(folder), "--store", str(alone), *args[4:]]) == 0
    with_broken = pd.read_csv(out / "screening.csv").set_index("candidate_id").loc["MoW-B2"]
    clean = pd.read_csv(alone / "screening.csv").set_index("candidate_id").loc["MoW-B2"]
    assert clean["energy_per_atom"] == pytest.approx(with_broken["energy_per_atom"], abs=1e-6)
    assert clean["n_steps"] == with_broken["n_steps"]


def test_results_command_top_stable_json_csv(screened, capsys, tmp_path):
    from dpa4_core.cli import main as dpa4

    _, out, _ = screened
    capsys.readouterr()
    assert dpa4(["results", "--store", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["rows"]) == 6 and data["n_candidates"] == 6
    assert [r["status"] for r in data["rows"]][:3] == ["ranked"] * 3
    assert dpa4(["results", "--store", str(out), "--json", "--top", "2"]) == 0
    assert [r["candidate_id"] for r in json.loads(capsys.readouterr().out)["rows"]] == \
        [r["candidate_id"] for r in data["rows"][:2]]
    assert dpa4(["results", "--store", str(out), "--json", "--stable-only"]) == 0
    stable = json.loads(capsys.readouterr().out)["rows"]
    assert [r["candidate_id"] for r in stable] == [r["candidate_id"] for r in data["rows"] if r["is_stable"]]
    assert dpa4(["results", "--store", str(out), "--csv", str(tmp_path / "t.csv"), "--stable-only"]) == 0
    assert list(pd.read_csv(tmp_path / "t.csv")["candidate_id"]) == [r["candidate_id"] for r in stable]
    assert capsys.readouterr().out.startswith(f"{len(stable)} rows written to")
    assert dpa4(["results", "--store", str(out), "--top", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert data["rows"][0]["candidate_id"] in table[1] and "6 candidates" in table[2]


@pytest.mark.timeout(600)
def test_two_workers_share_a_run_and_each_job_runs_once(tmp_path):
    from dpa4_core.cli import main as dpa4
    from dpa4_flows.execution.stores import embedded_store
    from dpa4_flows.execution.workdir import load_flow

    folder = tmp_path / "c"
    folder.mkdir()
    for name, a, species in (("MoW", 3.18, ("Mo", "W")), ("NbW", 3.25, ("Nb", "W")), ("MoNb", 3.22, ("Mo", "Nb"))):
        _bcc(a, species).to(filename=str(folder / f"{name}.cif"))
    out = tmp_path / "out"
    assert dpa4(["screen", str(folder), "--store", str(out), "--model", "starter", "--chunk", "1", "--workers", "2",
                 "--max-steps", "100", "--quiet"]) == 0
    frame = pd.read_csv(out / "screening.csv")
    assert sorted(frame["candidate_id"]) == ["MoNb", "MoW", "NbW"] and (frame["status"] == "ranked").all()
    store = embedded_store(out / "jobs.sqlite")
    store.connect()
    uuids = [d["uuid"] for d in store.query({}, properties=["uuid"])]
    assert sorted(uuids) == sorted(j.uuid for j in load_flow(out / "work").jobs)  # every job stored exactly once
    assert (out / "screen.log").read_text().count("done:") == 3  # three candidate chunks, by either worker


def test_workers_default_to_the_cores_this_process_may_use():
    """Issue 15: `--workers` defaults to the machine's cores (its CPU affinity, as a scheduler sets it)."""
    import argparse
    import os

    from dpa4_flows.screen_args import ScreenOptions, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    args.quiet = False
    assert ScreenOptions.from_args(args).workers == len(os.sched_getaffinity(0))
    assert parser.parse_args(["--workers", "1"]).workers == 1
