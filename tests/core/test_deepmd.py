"""Reading deepmd-kit DPA4 ``.pt`` checkpoints (dpa4_core.io.deepmd): content detection, heads, ``.pt2`` refusal.

The files under tests/fixtures/deepmd/ were written by deepmd-kit 3.2.0 itself (benchmarks/deepmd/make_fixtures.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dpa4_core.io.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from dpa4_core.io.deepmd import deepmd_state, is_pt2_archive, read_deepmd_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"
SINGLE = FIXTURES / "dpa4_tiny.pt"
MULTI = FIXTURES / "dpa4_tiny_multitask.pt"


def _payload(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_single_task_file_reads_its_config_type_map_and_weights():
    checkpoint = read_deepmd_checkpoint(SINGLE)
    assert checkpoint.head is None
    assert checkpoint.type_map == ["W", "Nb", "Mo"]
    assert checkpoint.descriptor["channels"] == 8 and checkpoint.descriptor["rcut"] == 5.0
    assert checkpoint.fitting_net["type"] == "dpa4_ener"
    assert checkpoint.descriptor_version == pytest.approx(1.2)
    # prefixes stripped, every tensor of the head kept, in the file's float64
    raw = deepmd_state(_payload(SINGLE))
    assert set(checkpoint.state_dict) == {k.removeprefix("model.Default.") for k in raw if k != "_extra_state"}
    assert checkpoint.state_dict["atomic_model.out_bias"].shape == (1, 3, 1)
    assert checkpoint.state_dict["atomic_model.descriptor.type_embedding.adam_type_embedding"].dtype == torch.float64


def test_multitask_file_needs_a_head_and_takes_names_and_aliases():
    with pytest.raises(CheckpointError, match=r"multi-task .*heads \[Alloy, Other\].*head=NAME"):
        read_deepmd_checkpoint(MULTI)
    alloy = read_deepmd_checkpoint(MULTI, head="monbw")  # an alias, case-insensitive, as deepmd-kit resolves it
    other = read_deepmd_checkpoint(MULTI, head="Other")
    assert (alloy.head, other.head) == ("Alloy", "Other")
    raw = deepmd_state(_payload(MULTI))
    name = "atomic_model.descriptor.type_embedding.adam_type_embedding"
    assert torch.equal(alloy.state_dict[name], raw[f"model.Alloy.{name}"])
    assert torch.equal(other.state_dict[name], raw[f"model.Other.{name}"])
    assert not torch.equal(alloy.state_dict[name], other.state_dict[name])
    with pytest.raises(CheckpointError, match=r"no head 'Nope'; its heads are \[Alloy, Other\]"):
        read_deepmd_checkpoint(MULTI, head="Nope")
    with pytest.raises(CheckpointError, match="single-task .* no head 'Alloy'"):
        read_deepmd_checkpoint(SINGLE, head="Alloy")


def test_multitask_file_without_a_head_is_refused_by_load_checkpoint():
    with pytest.raises(CheckpointError, match="multi-task"):
        load_checkpoint(MULTI)


def test_a_deepmd_file_is_told_apart_by_content_not_name(tmp_path):
    renamed = tmp_path / "model.ckpt"
    renamed.write_bytes(SINGLE.read_bytes())
    data = read_checkpoint(renamed)
    origin = data.metadata["converted_from"]
    assert origin["format"] == "deepmd-kit DPA4 .pt" and origin["file"] == str(renamed.resolve())
    assert origin["type_map"] == ["W", "Nb", "Mo"] and data.elements == [41, 42, 74]
    assert deepmd_state({"format": "dpa4-checkpoint"}) is None
    assert deepmd_state(_payload(SINGLE)["model"]) is not None  # an unwrapped state dict too


def test_deepmd_models_other_than_dpa4_are_refused(tmp_path):
    payload = _payload(SINGLE)
    params = payload["model"]["_extra_state"]["model_params"]
    params["type"] = "standard"
    params["descriptor"]["type"] = "se_e2_a"
    path = tmp_path / "se_a.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="model type 'standard' \\(descriptor 'se_e2_a'\\), not DPA4"):
        load_checkpoint(path)


def test_frozen_pt2_programs_are_refused_with_a_message(tmp_path):
    path = tmp_path / "frozen.pt2"
    program = torch.export.export(torch.nn.Linear(2, 1), (torch.zeros(1, 2),))
    torch.export.save(program, path)
    assert is_pt2_archive(path) and not is_pt2_archive(SINGLE)
    with pytest.raises(CheckpointError, match=r"frozen PyTorch 2 program \(\.pt2.*training checkpoint \(\.pt\)"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"\.pt2"):
        read_deepmd_checkpoint(path)


def test_load_checkpoint_takes_a_head_of_a_multitask_file(tmp_path):
    import numpy as np

    from dpa4_core.io.checkpoint import save_checkpoint

    from dpa4_core.testing import predict
    from _vendored import read_vendored

    alloy, other = load_checkpoint(MULTI, head="MoNbW"), load_checkpoint(MULTI, head="Other")  # alias and name
    assert read_checkpoint(MULTI, head="monbw").metadata["converted_from"]["head"] == "Alloy"
    assert alloy.config.channels == 4 and alloy.trained_elements == [41, 42, 74]
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=0)
    energies = [float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0]) for model in (alloy, other)]
    assert np.isfinite(energies).all() and abs(energies[0] - energies[1]) > 1e-6  # two different heads
    with pytest.raises(CheckpointError, match="no head 'Nope'"):
        load_checkpoint(MULTI, head="Nope")
    with pytest.raises(CheckpointError, match="single-task .* no head 'Alloy'"):
        load_checkpoint(SINGLE, head="Alloy")
    native = save_checkpoint(alloy, tmp_path / "native.pt")
    with pytest.raises(CheckpointError, match="head= applies to multi-task deepmd-kit files only"):
        load_checkpoint(native, head="Alloy")
