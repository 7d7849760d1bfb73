"""The ``dpa4`` command: train from YAML, fine-tune with ``--from``, ``eval`` printing the JSON metrics that the
Python API computes, and clear exit-2 errors for bad configs. Real Mo/Nb surface frames, tiny model, 2 steps."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from dpa4_core.cli import main
from dpa4_core.data.paths import vendored
from dpa4_core.train import evaluate

MO = str(vendored("maml_MoNbTaW", "Mo_Surface.json.gz"))
NB = str(vendored("maml_MoNbTaW", "Nb_Surface.json.gz"))

YAML = """
data:
  train: [{data}]
  split: {{valid: 0.3, seed: 0}}
model: {{preset: tiny}}
steps: 2
batch_size: 2
valid_every: 2
checkpoint_every: 2
output_dir: {out}
plots: false
progress: false
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``dpa4 train`` once for the module: (folder, printed JSON)."""
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "train.yaml"
    config.write_text(YAML.format(data=MO, out=tmp / "run"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["train", str(config)]) == 0
    return tmp, json.loads(stdout.getvalue())


def test_train_prints_paths_and_metrics(trained):
    tmp, out = trained
    assert out["checkpoint"] == str(tmp / "run" / "best.pt")
    assert os.path.isfile(out["checkpoint"]) and os.path.isfile(out["log_path"])
    assert out["metrics"]["valid"]["n_frames"] == 3


def test_eval_console_script_matches_python_api(trained):
    tmp, _ = trained
    checkpoint = tmp / "run" / "best.pt"
    # float64: evaluate() rounds the labels to the model's dtype, the CLI keeps them in float64 (1e-4 meV apart)
    argv = [sys.executable, "-m", "dpa4_core.cli", "eval", str(checkpoint), MO, "--dtype", "float64"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert set(printed) >= {"energy_mae_mev_per_atom", "force_mae_mev_per_a", "stress_mae_gpa", "n_frames",
                            "n_atoms", "n_stress_frames"}
    assert printed["n_frames"] == printed["n_stress_frames"] == 11
    expected = evaluate(checkpoint, MO, dtype="float64")
    for key in ("energy_mae_mev_per_atom", "force_mae_mev_per_a", "stress_mae_gpa"):
        assert printed[key] == pytest.approx(expected[key], rel=1e-6)


def test_train_prints_one_line_per_validation_on_stderr(tmp_path, capsys):
    """With progress on, each validation prints step, epoch, loss, lr and the validation MAEs that metrics.jsonl
    records; stdout stays the JSON result and the log keeps its keys."""
    config = tmp_path / "train.yaml"
    config.write_text(YAML.format(data=MO, out=tmp_path / "run").replace("progress: false", "progress: true")
                      .replace("steps: 2", "steps: 4"))
    assert main(["train", str(config)]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    lines = [line for line in captured.err.splitlines() if line.startswith("valid step")]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["split"] == "valid"]
    train = {r["step"]: r for r in records if r["split"] == "train"}
    assert len(lines) == len(valid) == 2
    for line, record in zip(lines, valid):
        step = record["step"]
        assert line.split()[2] == str(step) and f"epoch {step * 2 / 8:7.2f}" in line  # 8 training frames
        assert f"loss {train[step]['loss']['total']:.4g}" in line and f"lr {train[step]['lr']:.3g}" in line
        assert f"E MAE {record['energy_mae_mev_per_atom']:.2f} meV/atom" in line
        assert f"F MAE {record['force_mae_mev_per_a']:.1f} meV/A" in line
        assert set(record) == {"step", "split", "energy_mae_mev_per_atom", "force_mae_mev_per_a", "stress_mae_gpa",
                               "n_frames", "n_atoms", "n_stress_frames"}


def test_finetune_from_flag(trained, capsys, tmp_path):
    tmp, _ = trained
    config = tmp_path / "ft.yaml"
    config.write_text(YAML.format(data=NB, out=tmp_path / "ft"))
    assert main(["finetune", str(config), "--from", str(tmp / "run" / "best.pt")]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["base"]["n_frames"] == metrics["valid"]["n_frames"] > 0


def test_bad_config_exits_2_with_the_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(YAML.format(data=MO, out=tmp_path / "r") + "learning_rate: 0.1\n")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "learning_rate: unknown key" in err and "bad.yaml" in err
    assert main(["eval", str(tmp_path / "missing.pt"), MO]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------ subcommands from entry points
def test_every_registered_subcommand_loads():
    """Each entry point of the ``dpa4.commands`` group imports and adds runnable parsers (needs the installed
    metadata of this checkout: ``pip install -e .``)."""
    import argparse
    from importlib.metadata import entry_points

    from dpa4_core.cli import COMMAND_GROUP

    points = {p.name: p for p in entry_points(group=COMMAND_GROUP)}
    assert {"core", "flows"} <= set(points), f"stale metadata, reinstall with pip install -e .: {points}"
    commands = {}
    for name, point in points.items():
        sub = argparse.ArgumentParser().add_subparsers()
        point.load()(sub)
        assert sub.choices, f"entry point {name} registered no subcommand"
        commands.update(sub.choices)
    assert {"train", "finetune", "eval", "screen", "results"} <= set(commands)
    assert all(callable(p.get_default("func")) for p in commands.values())


class _FakePoint:
    """An entry point whose import fails with ``error``."""

    name, value = "extra", "dpa4_extra.cli:register"

    def __init__(self, error: Exception):
        self.error = error

    def load(self):
        raise self.error


def _with_points(monkeypatch, *fakes):
    import dpa4_core.cli as cli
    from importlib.metadata import entry_points

    real = list(entry_points(group=cli.COMMAND_GROUP))
    monkeypatch.setattr(cli, "entry_points", lambda group: [*real, *fakes])


def test_missing_optional_dependency_names_the_package_and_the_extra(monkeypatch, capsys):
    _with_points(monkeypatch, _FakePoint(ModuleNotFoundError("No module named 'fireworks'", name="fireworks")))
    with pytest.raises(SystemExit) as exit_info:
        main(["remote-submit"])  # a command the group would have added
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'fireworks', which is not installed" in err and "pip install 'dpa4[distributed]'" in err
    with pytest.raises(SystemExit) as exit_info:  # the other groups still work
        main(["eval", "--help"])
    assert exit_info.value.code == 0 and "--stress-unit" in capsys.readouterr().out


def test_an_import_error_inside_dpa4_is_raised_not_swallowed(monkeypatch):
    _with_points(monkeypatch, _FakePoint(ModuleNotFoundError("No module named 'dpa4_flows.gone'",
                                                             name="dpa4_flows.gone")))
    with pytest.raises(ModuleNotFoundError, match="dpa4_flows.gone"):
        main(["eval", "x.pt", "y"])
    _with_points(monkeypatch, _FakePoint(ImportError("cannot import name 'nothing' from 'dpa4_core.train'")))
    with pytest.raises(ImportError, match="nothing"):
        main(["eval", "x.pt", "y"])


def test_missing_dependency_while_a_command_runs_exits_1(monkeypatch, capsys):
    import dpa4_core.train.evaluate_report

    def needs_jobflow_remote(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'jobflow_remote'", name="jobflow_remote")

    monkeypatch.setattr(dpa4_core.train.evaluate_report, "evaluate_report", needs_jobflow_remote)
    assert main(["eval", "x.pt", MO]) == 1
    assert "pip install 'dpa4[distributed]'" in capsys.readouterr().err


def test_results_of_a_missing_store_exits_2(tmp_path, capsys):
    assert main(["results", "--store", str(tmp_path / "nowhere")]) == 2
    assert "no job store at" in capsys.readouterr().err
