"""Smoke tests of the tutorials: each script runs top to bottom in quick mode and prints its key results.

Each tutorial runs as a subprocess (as a reader would run it) with ``DPA4_TUTORIAL_QUICK=1``, its own working
directory and ``DPA4_TUTORIAL_OUT`` in ``tmp_path``; the test checks the exit code, lines that show the
physics/workflow steps really happened, that figures were written, and that nothing was written into the
repository.
"""

from __future__ import annotations

import os
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
}


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
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    missing = [line for line in lines if line not in done.stdout]
    assert not missing, f"{name}: missing {missing} in stdout:\n{done.stdout[-3000:]}"
    for file in files:
        assert (out / name / file).is_file(), f"{name} did not write {file}"
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
