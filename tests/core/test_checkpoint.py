"""Checkpoints: exact round trip, self-description, atomic writes, and clear errors for bad files.

A checkpoint is one file read with ``torch.load(weights_only=True)``; every failure names the file.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from dpa4_core import __version__
from dpa4_core.io import checkpoint as ckpt
from dpa4_core.io.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from dpa4_core.testing import predict, seeded_model

from _vendored import read_vendored


@pytest.fixture(scope="module")
def model():
    from dpa4_core import DPA4Config

    return seeded_model(DPA4Config.preset("tiny"), seed=3)


@pytest.fixture(scope="module")
def structures():
    alloy = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
    alloy.rattle(0.05, seed=1)
    return [alloy, read_vendored("botnet", "dataset_acac", "train_300K.xyz.gz", index=0)]


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(model, path, metadata={"dataset": "maml", "mae": {"energy": 0.01}, "n": 3},
                    elements=[42, 41, 42, 73])
    return path


def test_round_trip_gives_identical_numbers(model, saved, structures):
    loaded = load_checkpoint(saved)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.trained_elements == [41, 42, 73]
    before, after = predict(model, structures), predict(loaded, structures)
    for key in ("energy", "forces", "stress", "atom_energy"):
        assert (before[key] == after[key]).all(), key


def test_checkpoint_describes_itself(model, saved):
    data = read_checkpoint(saved)
    assert data.config == model.config.to_dict()
    assert data.dtype == torch.float64
    assert torch.equal(data.energy_bias, model.energy_bias)
    assert data.elements == [41, 42, 73]
    assert data.versions == {"dpa4": __version__, "torch": torch.__version__}
    assert data.metadata == {"dataset": "maml", "mae": {"energy": 0.01}, "n": 3}
    # Plain types and tensors only: the safe loader reads it.
    raw = torch.load(saved, weights_only=True)
    assert raw["format"] == ckpt.FORMAT_TAG and raw["format_version"] == ckpt.FORMAT_VERSION


def test_elements_survive_a_second_save(saved, tmp_path):
    again = save_checkpoint(load_checkpoint(saved), tmp_path / "again.pt")
    assert read_checkpoint(again).elements == [41, 42, 73]


def test_float32_model_round_trips_in_float32(model, tmp_path):
    single = seeded_model(model.config, seed=3, dtype=torch.float32)
    path = save_checkpoint(single, tmp_path / "fp32.pt")
    loaded = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_atomic_write_keeps_the_old_file_when_saving_fails(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "model.pt")
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match="metadata"):
        save_checkpoint(model, path, metadata={"bad": object()})
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["model.pt"], "temporary file left behind"


def test_atomic_write_survives_an_interrupted_write(model, tmp_path, monkeypatch):
    path = save_checkpoint(model, tmp_path / "model.pt")
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, path)
    assert path.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["model.pt"]


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(CheckpointNotFoundError, match="nowhere.pt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(path)


def _bad_files(tmp_path, saved):
    good = saved.read_bytes()
    files = {
        "truncated.pt": good[: len(good) // 2],
        "corrupt.pt": good[:200] + bytes(reversed(good[200:1200])) + good[1200:],
        "text.pt": b"this is a text file, not a checkpoint\n",
        "empty.pt": b"",
        "pickle.pt": pickle.dumps({"format": "dpa4-checkpoint"}, protocol=2),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "foreign_dict.pt")
    torch.save(torch.zeros(3), tmp_path / "foreign_tensor.pt")
    payload = torch.load(saved, weights_only=True)
    torch.save({**payload, "format_version": ckpt.FORMAT_VERSION + 1}, tmp_path / "future.pt")
    torch.save({**payload, "state_dict": {"nope": torch.zeros(2)}}, tmp_path / "wrong_weights.pt")
    return sorted(list(files) + ["foreign_dict.pt", "foreign_tensor.pt", "future.pt", "wrong_weights.pt"])


def test_bad_files_give_a_clear_error_naming_the_file(tmp_path, saved):
    for name in _bad_files(tmp_path, saved):
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as info:
            load_checkpoint(tmp_path / name)
        assert isinstance(info.value, ValueError), name
