"""``DPA4Config.readout = "deepmd"``: dpa4's GLU read-out equals deepmd-kit's descriptor ``output_ffn`` and GLU
fitting net on the per-atom scalars deepmd-kit recorded after its block (tests/fixtures/deepmd/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dpa4_core.config import ConfigError, DPA4Config
from dpa4_core.io.deepmd import read_deepmd_checkpoint
from dpa4_core.io.deepmd_options import check_options
from dpa4_core.io.deepmd_weights import map_readout
from dpa4_core.model.energy import DPA4
from dpa4_core.model.glu_readout import glu

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"


def _stage(stages: dict, name: str) -> torch.Tensor:
    return stages[name]


@pytest.fixture(scope="module")
def mapped():
    checkpoint = read_deepmd_checkpoint(FIXTURES / "dpa4_tiny.pt")
    model = DPA4(DPA4Config(**check_options(checkpoint).fields)).double()
    map_readout(checkpoint, model)
    components = torch.load(FIXTURES / "dpa4_tiny_components.pt", weights_only=True)
    reference = json.loads((FIXTURES / "dpa4_tiny_reference.json").read_text())
    frame = next(f for f in reference["frames"] if f["source"] == components["intermediates"]["frame"])
    return checkpoint, model, components["intermediates"]["stages"], frame


def test_glu_readout_equals_deepmd_output_ffn_and_fitting_net(mapped):
    checkpoint, model, stages, frame = mapped
    scalars = _stage(stages, "descriptor.blocks.0")[:, 0, 0, :]  # deepmd's l = 0 features after the block
    readout = model.readout
    with torch.no_grad():
        residual = readout.project(glu(readout.lift(scalars)))
        energies = readout(scalars)
    assert (residual - _stage(stages, "descriptor.output_ffn")[:, 0, 0, :]).abs().max() < 1e-13
    types = torch.tensor([checkpoint.type_map.index(s) for s in frame["symbols"]])
    fitting_bias = checkpoint.state_dict["atomic_model.fitting_net.bias_atom_e"][types, 0]
    expected = _stage(stages, "fitting_net").reshape(-1) - fitting_bias  # deepmd adds bias_atom_e inside
    assert expected.std() > 1e-3  # atoms differ: a real check, not a constant
    assert (energies - expected).abs().max() < 1e-12


def test_readout_option_defaults_and_validation():
    config = DPA4Config()
    assert config.readout == "dpa4" and config.degree_switch is True
    with pytest.raises(ConfigError, match="readout must be 'dpa4' or 'deepmd'"):
        DPA4Config(readout="mlp")
    with pytest.raises(ConfigError, match="degree_switch must be a bool"):
        DPA4Config(degree_switch=1)
