"""deepmd-kit DPA4 options (dpa4_core.io.deepmd_options): a checkpoint whose options dpa4 does not reproduce never
loads, and the refusal names every such option with its value. The most important guarantee of the deepmd loader.

The refused files are the deepmd-kit fixture with released options switched on in its stored config (the weights
no longer fit it, which does not matter: the options are checked first and the file must never load).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dpa4_core.calculator import DPA4Calculator
from dpa4_core.dynamics import relax_batch
from dpa4_core.io import deepmd_options as opts
from dpa4_core.io.checkpoint import CheckpointError, load_checkpoint, load_for_inference
from dpa4_core.io.deepmd import read_deepmd_checkpoint

from _vendored import read_vendored

SINGLE = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd" / "dpa4_tiny.pt"
# Options of the released checkpoints (and others) that dpa4 does not reproduce yet.
# (edge_norm, message_node_so3, ffn_so3_grid + grid_branch [0, 0, 1], so3_readout "mlp", ffn_blocks, n_focus load
# since phase 2:
# tests/core/test_deepmd_released_options.py)
UNSUPPORTED = {"node_wise_so3": True, "exclude_types": [[0, 1]], "add_chg_spin_ebd": True, "so3_readout": "glu"}


def _unreproduced(section: str, options: dict, sizes: dict, no_effect: frozenset, accepted: dict) -> list[str]:
    """The options of one section that dpa4 does not reproduce, written out independently of check_options."""
    prefix = f"{section}." if section else ""
    return [f"{prefix}{name}={value!r}" for name, value in options.items()
            if name not in sizes and name not in no_effect and value not in accepted.get(name, ())]


def _refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    return str(caught.value)


def _edited(tmp_path: Path, edit) -> Path:
    payload = torch.load(SINGLE, map_location="cpu", weights_only=True)
    edit(payload["model"])
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


def _released_options(state: dict) -> None:
    params = state["_extra_state"]["model_params"]
    params["descriptor"].update(UNSUPPORTED)
    params["fitting_net"]["numb_fparam"] = 2
    params["bridging_method"] = "lj"  # (bridging "zbl" loads since phase 2)


@pytest.fixture
def unsupported(tmp_path) -> Path:
    return _edited(tmp_path, _released_options)


def test_refusal_names_every_unreproduced_option_with_its_value(unsupported):
    checkpoint = read_deepmd_checkpoint(unsupported)
    expected = (_unreproduced("", checkpoint.model_params, opts.MODEL_SIZES, opts.MODEL_NO_EFFECT,
                              opts.MODEL_ACCEPTED)
                + _unreproduced("descriptor", checkpoint.descriptor, opts.DESCRIPTOR_SIZES,
                                opts.DESCRIPTOR_NO_EFFECT | opts.DESCRIPTOR_READ_OFF_WEIGHTS | opts.DESCRIPTOR_GRID,
                                opts.DESCRIPTOR_ACCEPTED)
                + _unreproduced("fitting_net", checkpoint.fitting_net, {}, opts.FITTING_NO_EFFECT,
                                opts.FITTING_ACCEPTED))
    assert len(expected) == len(UNSUPPORTED) + 2  # every switched-on option is one dpa4 lacks
    message = _refusal(unsupported)
    assert str(unsupported) in message and "\n" not in message  # one line for the CLI
    for item in expected:
        assert item in message, item
    for component in opts.MISSING_COMPONENTS:
        assert component in message


@pytest.mark.parametrize("load", ["calculator", "relax_batch", "load_for_inference"])
def test_every_entry_point_refuses_an_unsupported_deepmd_checkpoint(load, unsupported):
    with pytest.raises(CheckpointError, match="descriptor.node_wise_so3=True"):
        if load == "calculator":
            DPA4Calculator.from_checkpoint(unsupported, dtype="float64")
        elif load == "relax_batch":
            relax_batch([read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=0)], str(unsupported), max_steps=1)
        else:
            load_for_inference(unsupported, torch.float64)


def test_an_option_unknown_to_dpa4_is_refused_by_name(tmp_path):
    def add_option(state):
        state["_extra_state"]["model_params"]["descriptor"]["spin_magic"] = 3
        state["_extra_state"]["model_params"]["hessian_mode"] = True
    message = _refusal(_edited(tmp_path, add_option))
    assert "descriptor.spin_magic=3 (an option unknown to this dpa4)" in message
    assert "hessian_mode=True (an option unknown to this dpa4)" in message


def test_a_feature_dpa4_lacks_is_refused_when_switched_on(tmp_path):
    def switch_on(state):
        params = state["_extra_state"]["model_params"]
        params["descriptor"].update(node_wise_so3=True, exclude_types=[[0, 1]], add_chg_spin_ebd=True)
        params["fitting_net"]["numb_fparam"] = 2
        params["lora"] = {"rank": 4, "alpha": None}
        state["model.Default.atomic_model.descriptor.blocks.0.so2_conv.so2_linears.0.A_m.0"] = torch.zeros(2, 2)
    message = _refusal(_edited(tmp_path, switch_on))
    for item in ["descriptor.node_wise_so3=True (dpa4 implements only False yet)", "descriptor.exclude_types=[[0, 1]]",
                 "descriptor.add_chg_spin_ebd=True", "fitting_net.numb_fparam=2",
                 "lora={'rank': 4, 'alpha': None}", "LoRA adapter weights not folded"]:
        assert item in message, item


def test_a_descriptor_layout_version_other_than_deepmd_3_2_is_refused(tmp_path):
    def older(state):
        state["model.Default.atomic_model.descriptor.version_tensor"] = torch.tensor(1.0, dtype=torch.float64)
    assert "descriptor.version_tensor=1.0" in _refusal(_edited(tmp_path, older))


def test_the_fixture_options_are_all_reproduced_and_map_onto_dpa4config():
    report = opts.check_options(read_deepmd_checkpoint(SINGLE))
    assert report.supported, report.refused
    assert report.fields == {"cutoff": 5.0, "channels": 8, "lmax": 2, "mmax": 1, "kmax": 1, "n_blocks": 1,
                             "n_radial": 8, "so2_layers": 2, "rank": 1, "attn_heads": 1, "r_in": 0.5, "r_out": 0.8,
                             "embedding": "deepmd", "block": "deepmd", "readout": "deepmd", "degree_switch": False,
                             "scalar_density": False, "zbl": False, "bridging": False, "radial_hidden": 8,
                             "env_radial_dim": 32, "env_type_dim": 8, "env_hidden": 48, "env_dim": 8, "env_axis": 4,
                             "ffn_hidden": 32, "ffn": "s2", "readout_hidden": 32, "readout_grid": "none",
                             "message_node_so3": False, "ffn_blocks": 1, "edge_norm": False,
                             "neighbor_cap": 64, "n_focus": 1, "radial_so2_mode": "degree_channel"}


def test_dpa4_eval_refuses_an_unsupported_deepmd_checkpoint_in_one_line(tmp_path, capsys, unsupported):
    from ase.io import write

    from dpa4_core.cli import main

    frames = tmp_path / "frames.extxyz"
    write(frames, read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=0))
    assert main(["eval", str(unsupported), str(frames)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "descriptor.node_wise_so3=True" in error[0]
