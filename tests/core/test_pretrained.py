"""Shipped models by name: names resolve wherever a checkpoint path is taken, unknown names list the known ones,
and ``dpa4 models`` describes each from its card."""

from __future__ import annotations

import argparse

import pytest
import torch
from ase.data import atomic_numbers

from dpa4_core.io.checkpoint import CheckpointNotFoundError, load_checkpoint, load_for_inference, read_checkpoint
from dpa4_core.pretrained import MODELS, STARTER, UnknownModelError, resolve_checkpoint
from dpa4_core.pretrained.cli import register

pytestmark = pytest.mark.skipif(not STARTER.is_file(), reason="starter checkpoint not in this installation")


def test_name_resolves_to_the_shipped_file_in_every_loader():
    assert resolve_checkpoint("starter-MoNbTaW") == STARTER
    assert read_checkpoint("starter-MoNbTaW").path == STARTER
    by_name, by_path = load_checkpoint("starter-MoNbTaW"), load_checkpoint(STARTER)
    for (k, a), (_, b) in zip(by_name.state_dict().items(), by_path.state_dict().items()):
        assert torch.equal(a, b), k
    assert load_for_inference("starter-MoNbTaW", torch.float64).energy_bias.dtype == torch.float64


def test_calculator_takes_a_name():
    from ase.build import bulk

    from dpa4_core.calculator import DPA4Calculator

    atoms = bulk("Mo", "bcc", a=3.16)
    atoms.calc = DPA4Calculator.from_checkpoint("starter-MoNbTaW")
    reference = bulk("Mo", "bcc", a=3.16)
    reference.calc = DPA4Calculator.from_checkpoint(STARTER)
    assert atoms.get_potential_energy() == reference.get_potential_energy()


def test_unknown_name_lists_the_known_ones_and_files_win(tmp_path, monkeypatch):
    with pytest.raises(CheckpointNotFoundError, match="known models: .*starter-MoNbTaW"):
        load_checkpoint("starter-MoNbTa")
    with pytest.raises(UnknownModelError):
        resolve_checkpoint("nonsense")
    # paths that do not exist are left to the loader's own message
    assert resolve_checkpoint("runs/x/best.pt").name == "best.pt"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "starter-MoNbTaW").write_bytes(b"mine")
    assert resolve_checkpoint("starter-MoNbTaW").resolve() == (tmp_path / "starter-MoNbTaW").resolve()


def test_every_registered_model_has_its_file_card_and_parameter_count():
    for model in MODELS.values():
        assert model.path.is_file() and model.card_path.is_file(), model.name
        loaded = load_checkpoint(model.name)
        assert sum(p.numel() for p in loaded.parameters()) == model.parameters, model.name
        assert sorted(loaded.trained_elements) == sorted(atomic_numbers[e] for e in model.elements), model.name


def test_models_command_lists_names_errors_and_refuses_unknown(capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["models"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for model in MODELS.values():
        assert model.name in out and model.training_data in out
    assert "12.4 meV/atom" in out
    args = parser.parse_args(["models", "nope"])
    with pytest.raises(ValueError, match="known models"):
        args.func(args)


def test_the_short_starter_aliases_name_the_starter_everywhere():
    from dpa4_core.pretrained import MODELS, resolve_checkpoint

    for alias in ("starter", "dpa4-starter"):
        assert resolve_checkpoint(alias) == MODELS["starter-MoNbTaW"].path
