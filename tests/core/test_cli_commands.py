"""The ``dpa4`` command's conventions and its ``info``, ``relax`` and ``md`` subcommands, on the shipped starter
checkpoint and real vendored Mo-Nb-Ta-W frames: ``--version``, global options before or after the subcommand,
``--help`` with examples everywhere, exit codes 0 / 1 / 2, and results checked against DPA4Calculator."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk

from dpa4_core.calculator import DPA4Calculator
from dpa4_core.cli import build_parser, main
from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_frames
from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.pretrained import starter_checkpoint

CK = str(starter_checkpoint())
CORE = ("train", "finetune", "eval", "info", "relax", "md")


def _nb_cells(n: int):
    """The first ``n`` strained 2-atom Nb cells of the vendored elastic set (plain Atoms)."""
    frames = read_frames(vendored("maml_MoNbTaW", "Nb_Elastic.json.gz"))
    return [next(frames).atoms for _ in range(n)]


def test_version_console_subprocess():
    proc = subprocess.run([sys.executable, "-m", "dpa4_core.cli", "--version"], capture_output=True, text=True,
                          check=False, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    from dpa4_core import __version__

    assert proc.stdout.startswith(f"dpa4 {__version__} (torch {torch.__version__}")


def test_global_options_before_or_after_the_subcommand(capsys):
    parser = build_parser().parser
    from dpa4_core.cli import _combine_global_options as combine

    args = combine(parser.parse_args(["-v", "info", "x.pt", "-v"]))
    assert (args.verbose, args.quiet) == (2, False)
    args = combine(parser.parse_args(["relax", "a.cif", "--model", "m.pt", "-q"]))
    assert (args.verbose, args.quiet) == (0, True)
    args = combine(parser.parse_args(["-q", "screen"]))  # screen's own --quiet sees the global -q
    assert args.quiet
    for argv in (["md", "--version"], ["--version"], ["eval", "--version"], ["screen", "--version"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith("dpa4 ")
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "info", CK, "-v"])
    assert exit_info.value.code == 2 and "cannot be combined" in capsys.readouterr().err


@pytest.mark.parametrize("command", [*CORE, "screen", "results"])
def test_every_subcommand_has_help_with_examples_and_the_global_options(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "-q" in out and "--verbose" in out and "--version" in out
    if command in CORE:
        assert "Examples:\n  dpa4 " in out


@pytest.mark.parametrize("command", CORE)
def test_a_bad_option_exits_2(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "x", "y", "--model", "m.pt", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["info", "{tmp}/gone.pt"], ["relax", "{tmp}/gone.cif", "--model", CK],
                                  ["md", "{tmp}/gone.cif", "--model", CK], ["eval", CK, "{tmp}/gone.extxyz"],
                                  ["relax", "{tmp}/cell.extxyz", "--model", "{tmp}/gone.pt"]])
def test_a_missing_file_exits_2_naming_it_in_one_line(argv, tmp_path, capsys):
    ase.io.write(tmp_path / "cell.extxyz", _nb_cells(1))
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "gone." in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_info_reports_what_the_checkpoint_holds(capsys):
    assert main(["info", CK, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = load_checkpoint(CK)
    assert info["sha256"] == hashlib.sha256(Path(CK).read_bytes()).hexdigest()
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["elements"] == ["Nb", "Mo", "Ta", "W"] and info["cutoff"] == model.config.cutoff == 5.0
    assert info["dtype"] == "float32" and info["preset"] == "tiny (cutoff=5.0)"
    assert info["training"]["step"] == 1000 and info["training"]["data"] == ["data/maml_MoNbTaW"]
    assert info["versions"]["torch"].startswith("2.")
    assert main(["info", CK]) == 0
    table = capsys.readouterr().out
    assert info["sha256"] in table and f"{info['parameters']:,}" in table and "Nb Mo Ta W" in table


def test_relax_batched_matches_ase_and_the_calculator(tmp_path, capsys):
    cells = _nb_cells(2)
    ase.io.write(tmp_path / "nb.extxyz", cells)
    ase.io.write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.6))  # untrained element: its own error, others go on
    outputs = {}
    for engine in ("batched", "ase"):
        out = tmp_path / f"{engine}.extxyz"
        code = main(["relax", str(tmp_path / "nb.extxyz"), str(tmp_path / "cu.cif"), "--model", CK, "--engine",
                     engine, "--fmax", "0.01", "--out", str(out), "--json", "-q"])
        assert code == 1  # Cu failed
        records = json.loads(capsys.readouterr().out)["structures"]
        assert [r["converged"] for r in records] == [True, True, False]
        assert records[2]["error"].startswith("UntrainedElementError")
        outputs[engine] = (records, ase.io.read(out, index=":"))
    (batched, relaxed), (ase_records, _) = outputs["batched"], outputs["ase"]
    assert len(relaxed) == 2
    calc = DPA4Calculator(CK, dtype="float64")
    for before, after, record, other in zip(cells, relaxed, batched, ase_records):
        assert record["steps"] == other["steps"]
        assert record["energy_per_atom_ev"] == pytest.approx(other["energy_per_atom_ev"], abs=1e-8)
        after.calc = calc
        assert after.get_potential_energy() / len(after) == pytest.approx(record["energy_per_atom_ev"], abs=1e-8)
        change = 100 * (after.get_volume() / before.get_volume() - 1)
        assert change == pytest.approx(record["volume_change_percent"], abs=1e-9) and abs(change) > 0.1
        assert after.info["converged"] and np.abs(after.get_stress()).max() < 0.01  # cell relaxed too


def test_relax_writes_one_file_per_input_into_a_folder(tmp_path, capsys):
    from pymatgen.io.ase import AseAtomsAdaptor

    first, second = _nb_cells(2)
    ase.io.write(tmp_path / "POSCAR", first, format="vasp")
    (tmp_path / "nb.json").write_text(json.dumps(AseAtomsAdaptor.get_structure(second).as_dict()))
    assert main(["relax", str(tmp_path / "POSCAR"), str(tmp_path / "nb.json"), "--model", CK, "--no-cell",
                 "--out", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    assert "converged" in table and table.count(" yes ") == 2
    for name, before in (("poscar_relaxed.extxyz", first), ("nb_relaxed.extxyz", second)):
        (written,) = ase.io.read(tmp_path / "out" / name, index=":")  # read back without naming the format
        assert np.allclose(written.cell.array, before.cell.array)  # --no-cell kept it
        assert written.info["converged"] and np.abs(written.get_forces()).max() < 0.05


def test_md_nve_summary_and_extxyz_trajectory(tmp_path, capsys):
    cell = _nb_cells(1)[0] * (2, 2, 2)
    ase.io.write(tmp_path / "nb.cif", cell)
    traj = tmp_path / "md.extxyz"
    assert main(["md", str(tmp_path / "nb.cif"), "--model", CK, "--ensemble", "nve", "--temperature", "300",
                 "--steps", "20", "--timestep", "1", "--interval", "5", "--traj", str(traj), "--json",
                 "--dtype", "float64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    frames = ase.io.read(traj, index=":")
    assert len(frames) == 5 and summary["time_fs"] == pytest.approx(20.0)
    last = frames[-1]
    assert last.get_temperature() == pytest.approx(summary["temperature_final_k"], rel=1e-6)
    last.calc = DPA4Calculator(CK, dtype="float64")
    assert last.get_potential_energy() / len(last) == pytest.approx(summary["epot_final_ev_per_atom"], abs=1e-6)
    assert abs(summary["etot_drift_mev_per_atom"]) < 1.0  # NVE conserves energy
    assert not list(tmp_path.glob("*.traj"))  # the scratch ASE trajectory is gone
