"""Model files and training data a user can trust (issue 16, area G).

- ``train_state.pt`` is never unpickled: a planted pickle in ``output_dir`` is refused before it can run code;
- a checkpoint with NaN/inf weights is refused at load, naming the tensor;
- labels in the wrong units (Hartree, per-atom vs total energies, GPa as eV/A^3, bohr coordinates) and Z = 0
  are refused with the likely mistake named; the real vendored data passes;
- ``dpa4 eval`` / ``evaluate`` refuse elements outside the checkpoint's trained set unless told otherwise,
  while fine-tuning (the way to add an element) does not.
"""

from __future__ import annotations

import pytest
import torch

from dpa4_core import DPA4, DPA4Config
from dpa4_core.data.paths import vendored

MO = str(vendored("maml_MoNbTaW", "Mo_Surface.json.gz"))


def tiny_model(seed: int = 0) -> DPA4:
    torch.manual_seed(seed)
    return DPA4(DPA4Config.preset("tiny"))


def _train_config(out, **changes) -> dict:
    config = {"data": {"train": [MO], "split": {"valid": 0.25, "seed": 0}, "max_frames": 4},
              "steps": 2, "batch_size": 2, "valid_every": 2, "checkpoint_every": 2, "valid_batch_size": 8,
              "output_dir": str(out), "progress": False, "plots": False, "seed": 0}
    config.update(changes)
    return config


class _Payload:
    """Unpickling this object calls ``open(marker, "w")``: a stand-in for ``os.system("...")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------------------------ resume state
def test_planted_pickle_in_output_dir_is_refused_and_never_run(tmp_path):
    from dpa4_core.train import finetune, train
    from dpa4_core.train.run_state import STATE_FILE

    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"step": 1, "model": _Payload(marker)}, out / STATE_FILE)
    with pytest.raises(ValueError, match=r"train_state\.pt.*(delete|resume: false)"):
        train(_train_config(out), model=tiny_model())
    assert not marker.exists()
    # The reported vector: `dpa4 finetune` on a folder someone else wrote into.
    from dpa4_core.io.checkpoint import save_checkpoint

    base = save_checkpoint(tiny_model(), tmp_path / "base.pt", elements=[42])
    with pytest.raises(ValueError, match=r"train_state\.pt"):
        finetune(_train_config(out), base_checkpoint=base)
    assert not marker.exists()


def test_resume_state_reads_with_weights_only(tmp_path):
    from dpa4_core.train import train
    from dpa4_core.train.run_state import STATE_FILE

    train(_train_config(tmp_path / "run"), model=tiny_model())
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)  # tensors and plain types only
    assert state["step"] == 2 and isinstance(state["torch_rng"], torch.Tensor)
    # A resume of the finished run reads that file back and trains no further.
    result = train(_train_config(tmp_path / "run"), model=tiny_model(seed=3))
    assert result.checkpoint.exists()


# ------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(tmp_path, bad, capsys):
    from dpa4_core.calculator import DPA4Calculator
    from dpa4_core.cli import main
    from dpa4_core.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model = tiny_model()
    name, param = next((n, p) for n, p in model.named_parameters() if n.startswith("readout"))
    with torch.no_grad():
        param.view(-1)[0] = bad
    path = save_checkpoint(model, tmp_path / "bad.pt", elements=[42])
    with pytest.raises(CheckpointError, match=rf"bad\.pt.*{name}.*(NaN|inf)"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=name):
        DPA4Calculator.from_checkpoint(path)
    assert main(["eval", str(path), MO]) == 2
    assert name in capsys.readouterr().err
    # A buffer counts too (the energy bias is one).
    model = tiny_model()
    model.energy_bias[42] = bad
    with pytest.raises(CheckpointError, match="energy_bias"):
        load_checkpoint(save_checkpoint(model, tmp_path / "bias.pt"))
