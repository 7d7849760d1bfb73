"""Screening flow end to end (chunks -> batched relax -> elemental references -> stability -> report).

Uses ASE's EMT for Cu-Au, which was fitted to reproduce the ordered Cu-Au compounds: Cu3Au (L1_2) and CuAu
(L1_0) have negative formation energies and lie on the hull; CuAu3 in the L1_2 cell with Cu on the corner is
less favourable. Checks the report against an independent hull built from the stored relaxations, the files
written, user-supplied reference entries, failure isolation and resume on the embedded store.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from jobflow import run_locally
from pymatgen.core import Lattice, Structure

from dpa4_flows.flows.screening import ScreeningInputError, ScreeningMaker, reference_structures
from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
from dpa4_flows.analysis.report import results_dataframe
from dpa4_flows.execution.runner import run_resumable
from dpa4_flows.schemas import ScreeningReport
from dpa4_flows.analysis.stability import compute_stability
from dpa4_flows.execution.stores import embedded_store, memory_store

EMT = {"calculator_meta": "ase.calculators.emt.EMT", "calculator_kwargs": {}, "progress": False}
FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def _candidates():
    return {
        "Cu3Au-L12": Structure(Lattice.cubic(3.75), ["Au", "Cu", "Cu", "Cu"], FCC),
        "CuAu-L10": Structure(Lattice.cubic(3.85), ["Cu", "Cu", "Au", "Au"], FCC),
        "CuAu3-L12": Structure(Lattice.cubic(4.0), ["Cu", "Au", "Au", "Au"], FCC),
        "Cu2Au2-B2x2": Structure(Lattice.cubic(3.1), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]]) * (2, 1, 1),
    }


def _run(flow, store, workdir, monkeypatch) -> ScreeningReport:
    monkeypatch.chdir(workdir)
    responses = run_locally(flow, store=store, ensure_success=True, log=False)
    return responses[flow.jobs[-1].uuid][1].output


@pytest.fixture(scope="module")
def emt_report(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    out = tmp_path_factory.mktemp("out")
    cands = _candidates()
    flow = ScreeningMaker(relax_maker=BatchRelaxMaker(**EMT), chunk_size=3, output_dir=str(out)).make(
        list(cands.values()), list(cands)
    )
    with pytest.MonkeyPatch.context() as mp:
        report = _run(flow, memory_store(), workdir, mp)
    return report, flow, workdir, out


def test_flow_structure(emt_report):
    _, flow, _, _ = emt_report
    names = [j.name for j in flow.jobs]
    # 4 candidates in chunks of 3 -> 2 relax jobs, plus references, stability, report.
    assert names == ["DPA4 batch relax 1", "DPA4 batch relax 2", "DPA4 elemental references",
                     "DPA4 stability", "DPA4 screening report"]


def test_report_matches_independent_hull(emt_report):
    report, _, workdir, out = emt_report
    assert report.n_candidates == 4 and report.n_failed == 0
    assert report.reference_source == "computed"
    assert report.model_id == "ase.calculators.emt.EMT"
    rows = {r.candidate_id: r for r in report.rows}
    # Known EMT/Cu-Au physics: the ordered L1_2 and L1_0 compounds are bound and on the hull.
    assert rows["Cu3Au-L12"].formation_energy_per_atom < -0.005 and rows["Cu3Au-L12"].is_stable
    assert rows["CuAu-L10"].formation_energy_per_atom < -0.003 and rows["CuAu-L10"].is_stable
    assert not rows["CuAu3-L12"].is_stable and rows["CuAu3-L12"].e_above_hull > 0.002
    # Formation energy against the lowest relaxed elemental reference, recomputed from the report.
    ref_min = {}
    for ref in report.references:
        ref_min[ref["formula"]] = min(ref_min.get(ref["formula"], np.inf), ref["energy_per_atom"])
    for doc in report.stability:
        total = sum(doc.composition.values())
        expected = doc.energy_per_atom - sum(n / total * ref_min[el] for el, n in doc.composition.items())
        assert doc.formation_energy_per_atom == pytest.approx(expected, abs=1e-9)
    # The same hull from the stored energies, built directly.
    entries = [{"structure": d.structure, "energy": d.energy_per_atom * d.n_atoms, "entry_id": d.candidate_id}
               for d in report.stability]
    refs = [{"composition": r["formula"], "energy": r["energy_per_atom"], "entry_id": r["entry_id"]}
            for r in report.references]
    direct = {d.candidate_id: d for d in compute_stability(entries, refs)}
    for doc in report.stability:
        assert doc.e_above_hull == pytest.approx(direct[doc.candidate_id].e_above_hull, abs=1e-9)
    # Rows sorted by e_above_hull.
    hull = [r.e_above_hull for r in report.rows]
    assert hull == sorted(hull)
    # Files only where pointed to.
    assert list(workdir.iterdir()) == []
    frame = pd.read_csv(report.csv_path)
    pd.testing.assert_frame_equal(frame[["candidate_id", "e_above_hull"]],
                                  results_dataframe(report)[["candidate_id", "e_above_hull"]])
    png = (out / "hull.png").read_bytes()
    assert report.plot_path == str(out / "hull.png") and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_user_reference_entries_give_same_answer(emt_report, tmp_path, monkeypatch):
    report, _, _, _ = emt_report
    refs = reference_structures(["Au", "Cu"])
    relaxed = BatchRelaxMaker(**EMT).relax(list(refs.values()), list(refs))
    path = tmp_path / "refs.json"
    path.write_text(json.dumps([{"composition": r.structure.composition.formula, "energy": r.energy,
                                 "entry_id": r.candidate_id} for r in relaxed.results]))
    cands = _candidates()
    flow = ScreeningMaker(relax_maker=BatchRelaxMaker(**EMT), chunk_size=10, reference_entries=str(path)).make(
        list(cands.values()), list(cands)
    )
    assert "DPA4 elemental references" not in [j.name for j in flow.jobs]
    user = _run(flow, memory_store(), tmp_path, monkeypatch)
    assert user.reference_source == "user"
    got = {r.candidate_id: r.e_above_hull for r in user.rows}
    for row in report.rows:
        assert got[row.candidate_id] == pytest.approx(row.e_above_hull, abs=1e-9)


def test_failed_structure_is_isolated():
    # EMT has no parameters for Fe: that structure fails with its error recorded, the other relaxes.
    fe = Structure(Lattice.cubic(3.7), ["Fe", "Cu", "Cu", "Cu"], FCC)
    relax_doc = BatchRelaxMaker(**EMT).relax([_candidates()["Cu3Au-L12"], fe], ["ok", "bad"])
    assert relax_doc.engine == "ase"
    assert relax_doc.results[0].converged and relax_doc.results[0].error is None
    assert relax_doc.results[0].max_force < relax_doc.fmax
    assert relax_doc.results[1].energy is None and "NotImplementedError" in relax_doc.results[1].error


def test_resume_skips_finished_jobs(tmp_path):
    cands = _candidates()
    maker = ScreeningMaker(relax_maker=BatchRelaxMaker(**EMT), chunk_size=2)
    store = embedded_store(tmp_path / "jobs.sqlite")
    first = run_resumable(maker.make(list(cands.values()), list(cands)), store, tmp_path / "work", max_jobs=2,
                          progress=False)
    assert sorted(s["state"] for s in first.values()).count("done") == 2
    # Resume: the flow argument is ignored in favour of the persisted one; the two done jobs are not re-run.
    second = run_resumable(None, store, tmp_path / "work", progress=False, ensure_success=True)
    assert all(s["state"] == "done" and s["attempts"] == 1 for s in second.values())
    report = ScreeningReport(**next(s["output"] for s in second.values() if s["name"] == "DPA4 screening report"))
    assert report.n_candidates == 4 and report.n_stable >= 2


def test_bad_inputs():
    cands = list(_candidates().values())
    maker = ScreeningMaker(relax_maker=BatchRelaxMaker(**EMT))
    with pytest.raises(ScreeningInputError, match="no candidates"):
        maker.make([])
    with pytest.raises(ScreeningInputError, match=r"duplicate candidate ids \['a'\]"):
        maker.make(cands[:2], ["a", "a"])
    with pytest.raises(ScreeningInputError, match="candidate 1 is a str"):
        maker.make([cands[0], "POSCAR"])
    with pytest.raises(ScreeningInputError, match="chunk_size=0"):
        ScreeningMaker(relax_maker=BatchRelaxMaker(**EMT), chunk_size=0)
    with pytest.raises(ScreeningInputError, match="prototypes \\['diamond'\\]"):
        ScreeningMaker(relax_maker=BatchRelaxMaker(**EMT), prototypes=("diamond",))


# ------------------------------------------------------------------------------ the main script, with DPA4
def _script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "workflows" / "screen_candidates.py"
    spec = importlib.util.spec_from_file_location("screen_candidates", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_screen_candidates_script_runs_and_resumes(tmp_path, capsys, caplog):
    import logging

    from _tiny_model import save_tiny_checkpoint

    from dpa4_flows.structures.candidates import bcc_orderings

    model = save_tiny_checkpoint(tmp_path / "tiny.pt", dtype="float32")
    cells = bcc_orderings(["Mo", "W"])
    folder = tmp_path / "cands"
    folder.mkdir()
    for name in ("MoW-B2", "Mo3W-D03"):
        cells[name].to(filename=str(folder / f"{name}.cif"))
    script = _script()
    args = ["--out", str(tmp_path / "out"), "--model", str(model), "--candidates", str(folder),
            "--max-steps", "15", "--chunk-size", "1", "--quiet"]
    assert script.main(args) == 0
    printed = capsys.readouterr().out
    assert "MoW-B2" in printed and "Mo3W-D03" in printed and "2 candidates" in printed
    frame = pd.read_csv(tmp_path / "out" / "screening.csv")
    assert sorted(frame["candidate_id"]) == ["Mo3W-D03", "MoW-B2"]
    assert frame["e_above_hull"].notna().all()
    assert (tmp_path / "out" / "hull.png").is_file()
    # `dpa4 results` prints the same table from the run's store.
    from dpa4_core.cli import main as dpa4

    assert dpa4(["results", "--store", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[:3] == printed.splitlines()[:3]
    # Second run: nothing left to do, same table.
    caplog.set_level(logging.INFO, logger="dpa4_flows.execution.runner")
    assert script.main(args) == 0
    assert "ran 0 job(s)" in caplog.text
    assert capsys.readouterr().out.splitlines()[:3] == printed.splitlines()[:3]
    # A different run in the same folder is refused.
    assert script.main([*args[:-1], "--fmax", "0.1"]) == 2
    assert "holds a run with different options" in capsys.readouterr().err


def test_screen_candidates_script_errors(tmp_path, capsys):
    from dpa4_core.cli import main as dpa4

    assert dpa4(["screen", "--out", str(tmp_path / "o"), "--model", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "is not an existing file" in err and "dpa4 models" in err
    script = _script()
    assert script.main(["--out", str(tmp_path / "o"), "--model", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "is not an existing file" in err and "dpa4 models" in err
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")  # not a checkpoint
    assert script.main(["--out", str(tmp_path / "o"), "--model", str(model)]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    bad = tmp_path / "bad.cif"
    bad.write_text("not a cif")
    assert script.main(["--out", str(tmp_path / "o"), "--model", str(model), "--candidates", str(bad)]) == 2
    assert "no candidate can be read (bad: unreadable file bad.cif" in capsys.readouterr().err
    assert script.main(["--out", str(tmp_path / "o"), "--model", str(model), "--candidates",
                        str(tmp_path / "nothing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_default_model_is_the_shipped_starter(monkeypatch, tmp_path):
    from dpa4_core.pretrained import STARTER
    from dpa4_flows.settings import get_settings

    monkeypatch.delenv("DPA4_MODEL", raising=False)
    assert get_settings().model == STARTER
    monkeypatch.setenv("DPA4_MODEL", str(tmp_path / "mine.pt"))
    assert get_settings().model == tmp_path / "mine.pt"
