"""Smoke tests of the tutorials: each script runs top to bottom in quick mode and prints its key results.

Each tutorial runs as a subprocess (as a reader would run it) with ``DPA4_TUTORIAL_QUICK=1``, its own working
directory and ``DPA4_TUTORIAL_OUT`` in ``tmp_path``; the test checks the exit code, lines that show the
physics/workflow steps really happened, that figures were written, and that nothing was written into the
repository. Then a per-tutorial check reads the numbers the tutorial printed and the files it wrote and holds them
to physical ranges (with the shipped starter model; a stand-in model only has to produce finite numbers).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "tutorials"

# tutorial -> (lines that must appear in stdout, files that must exist under <out>/<name>/)
EXPECTED = {
    "01_calculator": (
        ["energy per atom   DPA4", "per-atom energies sum to the total: True", "bcc Mo: V0 =", "MD: 40 steps",
         "tutorial 01 done"],
        ["01_calculator_eos.png", "01_calculator_md.png"],
    ),
    "02_batched_relax": (
        ["relax_batch: 3 structures", "ASE one at a time: 3 structures", "largest |dE| batched vs ASE",
         "tutorial 02 done"],
        ["relax_results.csv"],
    ),
    "03_finetune": (
        ["fine-tuned (validation)", "fine-tuned (test)", "$ dpa4 finetune finetune.yaml", "$ dpa4 eval",
         '"energy_mae_mev_per_atom"', "tutorial 03 done"],
        ["03_finetune_parity.png", "finetune.yaml", "run/best.pt", "cli_run/best.pt"],
    ),
    "04_screening_flow": (
        ["after the interruption: 2 of 5 jobs done", "after resuming: 5 of 5 jobs done", "E_hull (meV/at)",
         "MoW-B2", "tutorial 04 done"],
        ["jobs.sqlite", "04_screening_flow_hull.png", "results/screening.csv"],
    ),
    "05_stability_and_hull": (
        ["max |e_above_hull - pymatgen| = 0.00e+00", "stable set equals pymatgen's test assertion: True",
         "MoTa-B2", "tutorial 05 done"],
        ["dpa4_elemental_references.json", "stability_docs.json"],
    ),
    "06_scaling_out": (
        ["from jobflow.yaml: MongoStore", "an in-memory store is refused", "Fireworks: 4 of 4 COMPLETED",
         "MoW-B2", "4 job documents", "tutorial 06 done"],
        ["fireworks_jobs.sqlite"],
    ),
    "07_atomate2_flows": (
        ['force_field_name="DPA4" is refused', "calculator parameters: model", "EOS (Birch-Murnaghan)",
         "elastic tensor (GPa)", "phonons:", "job documents in atomate2.sqlite", "tutorial 07 done"],
        ["atomate2.sqlite", "07_atomate2_flows_eos.png", "07_atomate2_flows_phonons.png"],
    ),
}


def _number(stdout: str, pattern: str, group: int = 1) -> float:
    """The number captured by ``pattern`` (a regex with a group) in the tutorial's output."""
    match = re.search(pattern, stdout)
    assert match, f"no line matching {pattern!r} in the output"
    return float(match.group(group))


def _check_01_calculator(stdout: str, out: Path, physical: bool) -> None:
    dpa4, dft = _number(stdout, r"energy per atom\s+DPA4\s+(\S+)"), _number(stdout, r"DFT\s+(\S+) eV/atom")
    a_relaxed, a0 = _number(stdout, r"relaxed bcc Mo: a = (\S+) A"), _number(stdout, r"a0 = (\S+) A")
    bulk, temperature = _number(stdout, r"B = (\S+) GPa"), _number(stdout, r"second half: (\S+) K")
    assert math.isfinite(dpa4) and math.isfinite(bulk) and temperature > 0
    assert abs(a_relaxed - a0) < 0.01, "the relaxed cell and the E(V) minimum must agree"
    if physical:
        assert -13 < dft < -9 and abs(dpa4 - dft) < 0.05, "Nb-Mo alloy: DPA4 within 50 meV/atom of DFT"
        assert _number(stdout, r"force MAE vs DFT\s+(\S+) meV/A") < 100
        assert 3.05 < a0 < 3.30 and 150 < bulk < 350, "bcc Mo: a0 3.16 A and B 260 GPa in experiment"
        assert 50 < temperature < 600, "Langevin MD at 300 K (short, quick mode)"


def _check_02_batched_relax(stdout: str, out: Path, physical: bool) -> None:
    rows = list(csv.DictReader((out / "relax_results.csv").open()))
    assert len(rows) == 3 and "converged: 3/3" in stdout
    assert _number(stdout, r"largest \|dE\| batched vs ASE: (\S+) meV/atom") < 0.1
    for row in rows:
        assert row["converged"] == "True" and float(row["fmax (eV/A)"]) <= 0.05
        assert abs(float(row["E batched (eV/at)"]) - float(row["E ASE (eV/at)"])) < 1e-4
        if physical:
            assert -13 < float(row["E batched (eV/at)"]) < -9 and abs(float(row["dV (%)"])) < 20


def _check_03_finetune(stdout: str, out: Path, physical: bool) -> None:
    test_mae = _number(stdout, r"fine-tuned \(test\)\s+(\S+)")
    metrics = json.loads(stdout[stdout.index("$ dpa4 eval"):].split("\n", 1)[1].split("tutorial 03 done")[0])
    assert metrics["n_frames"] == _number(stdout, r"test set \((\d+) frames\), fine-tuned")
    assert metrics["n_dropped"] == 0
    evaluated = _number(stdout, r"evaluate\(best.pt, test_split.extxyz\): \{'energy_mae_mev_per_atom': (\S+),")
    assert evaluated == pytest.approx(test_mae, abs=0.1), "evaluate() and the finetune result report the same MAE"
    if physical:
        assert 0 < test_mae < 200 and 0 < metrics["energy_mae_mev_per_atom"] < 200, "meV/atom on bulk Mo"
        assert 0 < metrics["force_mae_mev_per_a"] < 2000 and 0 < metrics["stress_mae_gpa"] < 20


def _check_04_screening_flow(stdout: str, out: Path, physical: bool) -> None:
    rows = list(csv.DictReader((out / "results" / "screening.csv").open()))
    assert {row["candidate_id"] for row in rows} == {"MoW-B2", "MoW-B32", "Mo3W-D03", "MoW3-D03"}
    hull = [float(row["e_above_hull"]) for row in rows]
    assert min(hull) == 0.0 and all(h >= 0 for h in hull)
    n_stable = sum(row["is_stable"] == "True" for row in rows)
    assert f"{n_stable} of 4 candidates on the hull" in stdout
    if physical:
        assert all(-0.2 < float(row["formation_energy_per_atom"]) < 0.05 for row in rows), "eV/atom, Mo-W mixes"


def _check_05_stability_and_hull(stdout: str, out: Path, physical: bool) -> None:
    assert _number(stdout, r"max \|e_above_hull - pymatgen\| = (\S+) eV/atom") < 1e-9
    docs = json.loads((out / "stability_docs.json").read_text())
    references = json.loads((out / "dpa4_elemental_references.json").read_text())
    assert len(docs) >= 4 and len(references) == 2
    assert all(doc["e_above_hull"] >= 0 and doc["is_stable"] == (doc["e_above_hull"] <= 1e-6) for doc in docs)
    assert "relaxations converged: 10/10" in stdout
    if physical:
        for element in ("Mo", "Ta"):
            assert _number(stdout, rf"{element}: DPA4 .* difference\s+(\S+) meV/atom") < 100, f"{element} vs MP"
        assert all(-0.5 < doc["formation_energy_per_atom"] < 0.2 for doc in docs), "eV/atom, Mo-Ta mixes"


def _check_06_scaling_out(stdout: str, out: Path, physical: bool) -> None:
    table = stdout[stdout.index("Fireworks: 4 of 4 COMPLETED"):]
    hull = float(re.search(r"MoW-B2\s+MoW\s+16\s+\S+\s+(\S+)", table).group(1))
    assert hull == 0.0 and re.search(r"db_id\s+\d\s+READY\s+DPA4 batch relax 1", stdout)
    if physical:
        assert -200 < float(re.search(r"MoW-B2\s+MoW\s+16\s+(\S+)", table).group(1)) < 50, "meV/atom"


def _check_07_atomate2_flows(stdout: str, out: Path, physical: bool) -> None:
    bulk = _number(stdout, r"B0 = (\S+) GPa")
    c11, c12, c44 = (_number(stdout, rf"{name} = ([-\d.]+)") for name in ("C11", "C12", "C44"))
    k_vrh = _number(stdout, r"K_VRH = (\S+),")
    assert all(math.isfinite(x) for x in (bulk, c11, c12, c44, k_vrh))
    assert abs(k_vrh - (c11 + 2 * c12) / 3) < 1e-3 * abs(k_vrh) + 0.1, "cubic K_VRH = (C11 + 2 C12) / 3"
    assert re.search(r"imaginary modes: (yes|no) \(lowest frequency", stdout)
    assert _number(stdout, r"(\d+) job documents in atomate2.sqlite") >= 10, "EOS, elastic and phonon jobs stored"
    if physical:
        assert 3.05 < _number(stdout, r"a0 = (\S+) A") < 3.30, "bcc W: a0 3.165 A in experiment"
        assert 200 < bulk < 400 and abs(k_vrh - bulk) < 0.15 * bulk, "W: B 310 GPa; the EOS and C_ij agree"
        assert 50 < c44 < 300 and c11 > c12 > 0
        assert 4 < _number(stdout, r"highest (\S+) THz") < 9, "W: highest phonon frequency about 6.4 THz"


CHECKS = {name: globals()[f"_check_{name}"] for name in EXPECTED}


def _repo_files() -> set[str]:
    """Untracked, not ignored files under ``tutorials/`` (what a tutorial might leave next to itself).

    Only this folder: other parts of the working tree may change while the test runs.
    """
    out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "tutorials"], cwd=REPO,
                         capture_output=True, text=True)
    return set(out.stdout.split()) if out.returncode == 0 else set()


def test_every_tutorial_has_a_smoke_test():
    scripts = {p.stem for p in TUTORIALS.glob("[0-9][0-9]_*.py")}
    assert scripts == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_runs_in_quick_mode(name, tmp_path):
    lines, files = EXPECTED[name]
    out = tmp_path / "out"
    env = {**os.environ, "DPA4_TUTORIAL_QUICK": "1", "DPA4_TUTORIAL_OUT": str(out), "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    before = _repo_files()
    done = subprocess.run([sys.executable, str(TUTORIALS / f"{name}.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=280)  # under the per-test timeout
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    missing = [line for line in lines if line not in done.stdout]
    assert not missing, f"{name}: missing {missing} in stdout:\n{done.stdout[-3000:]}"
    for file in files:
        assert (out / name / file).is_file(), f"{name} did not write {file}"
    # The starter model gives physical numbers; a stand-in (no starter in this installation) only finite ones.
    physical = "model: starter checkpoint" in done.stdout
    from dpa4_core.pretrained import STARTER

    assert physical or not STARTER.is_file(), f"{name} did not use the shipped starter model:\n{done.stdout[:2000]}"
    CHECKS[name](done.stdout, out / name, physical)
    assert _repo_files() <= before, f"{name} wrote into the repository: {sorted(_repo_files() - before)}"
    assert {p.name for p in tmp_path.iterdir()} == {"out"}, "tutorial wrote outside its output folder"


def test_shipped_starter_checkpoint_loads():
    """The tutorials teach with the starter model: if the package ships it, it must load with this code."""
    from dpa4_core.io.checkpoint import load_checkpoint
    from dpa4_core.pretrained import STARTER

    if not STARTER.is_file():
        pytest.skip(f"{STARTER} is not part of this installation (the tutorials train a stand-in)")
    model = load_checkpoint(STARTER)
    assert model.config.cutoff > 0
    # The starter was trained on Mo-Nb-Ta-W DFT data: a bcc Mo cell at a = 3.16 A is bound by about
    # -10.8 eV/atom (the DFT reference of these data) and its forces vanish by symmetry.
    from ase.build import bulk

    from dpa4_core.calculator import DPA4Calculator

    atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat(2)
    atoms.calc = DPA4Calculator(model=model)
    assert -11.2 < atoms.get_potential_energy() / len(atoms) < -10.4
    assert abs(atoms.get_forces()).max() < 1e-3
