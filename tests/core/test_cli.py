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
    proc = subprocess.run([sys.executable, "-m", "dpa4_core.cli", "eval", str(checkpoint), MO],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert set(printed) >= {"energy_mae_mev_per_atom", "force_mae_mev_per_a", "stress_mae_gpa", "n_frames",
                            "n_atoms", "n_stress_frames"}
    assert printed["n_frames"] == printed["n_stress_frames"] == 11
    expected = evaluate(checkpoint, MO)
    for key in ("energy_mae_mev_per_atom", "force_mae_mev_per_a", "stress_mae_gpa"):
        assert printed[key] == pytest.approx(expected[key], rel=1e-6)


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
