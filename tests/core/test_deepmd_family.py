"""The released DPA4-OMat24 family's option combinations (Nano/Mini/Neo/Air/Plus v20260805, scaled down, stored in
float32 as the released files are; Nano's radial_so2_mode "none", Neo's two foci here with edge_norm on) equal deepmd-kit 3.2.0 on eight structures: a bcc alloy, a sheared cell, LiFePO4 (oxide),
the acac molecule (no cell), a pair inside the bridging window, a chain along +-z, an isolated atom and a dimer.
Fixtures: tests/fixtures/deepmd/dpa4_family_*.pt and dpa4_family_reference.pt
(benchmarks/deepmd/make_family_fixtures.py); the table: benchmarks/deepmd/equality_table.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.io.deepmd import read_deepmd_checkpoint
from dpa4_core.io.deepmd_weights import sh_signs
from dpa4_core.testing import assert_conservative, assert_rotation_equivariant, predict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"
REFERENCE = torch.load(FIXTURES / "dpa4_family_reference.pt", weights_only=True)
FAMILY = ["nano", "mini", "neo", "air", "plus"]


def _atoms(frame: dict) -> Atoms:
    return Atoms(frame["symbols"], positions=frame["positions"], cell=frame["cell"], pbc=frame["pbc"])


@pytest.fixture(scope="module", params=FAMILY)
def loaded(request):
    return request.param, load_checkpoint(FIXTURES / f"dpa4_family_{request.param}.pt")


def test_family_fixtures_equal_deepmd_on_every_structure(loaded):
    name, model = loaded
    reference = REFERENCE["configs"][name]
    assert next(model.parameters()).dtype == torch.float64  # float32 file, loaded in float64
    row = 0
    for index, frame in enumerate(REFERENCE["frames"]):
        ours, n = predict(model, _atoms(frame)), len(frame["symbols"])
        energy, theirs = float(ours["energy"][0]), float(reference["energy"][index])
        assert abs(energy - theirs) <= 1e-12 * abs(theirs), frame["source"]
        forces = reference["forces"][row:row + n].numpy()
        row += n
        assert np.abs(ours["forces"] - forces).max() < 1e-10, frame["source"]
        if frame["pbc"]:  # dpa4 reports no virial without a cell
            virial = reference["virial"][index].numpy()
            assert np.abs(ours["virial"][0] - virial).max() < 1e-10 * max(1.0, np.abs(virial).max()), frame["source"]
    assert row == reference["forces"].shape[0]
    first = predict(model, _atoms(REFERENCE["frames"][0]))["atom_energy"]
    assert np.abs(first - reference["atom_energy"].numpy()).max() < 1e-12


def test_family_fixtures_have_the_released_option_combinations():
    for name in FAMILY:
        descriptor = read_deepmd_checkpoint(FIXTURES / f"dpa4_family_{name}.pt").descriptor
        assert {key: descriptor[key] for key in ("message_node_so3", "ffn_so3_grid", "grid_branch", "grid_mlp",
                                                  "ffn_blocks", "so3_readout", "edge_norm", "precision")} == {
            "message_node_so3": True, "ffn_so3_grid": True, "grid_branch": [0, 0, 1], "grid_mlp": False,
            "ffn_blocks": 1, "so3_readout": "mlp", "edge_norm": name == "neo", "precision": "float32"}, name
        assert descriptor["n_focus"] == (2 if name == "neo" else 1)
        assert descriptor["radial_so2_rank"] == (2 if name == "plus" else 1)
        assert descriptor["radial_so2_mode"] == ("none" if name == "nano" else "degree_channel")
    plus = load_checkpoint(FIXTURES / "dpa4_family_plus.pt")
    assert plus.config.rank == 2 and plus.config.lmax == 4 and plus.config.so2_layers == 4
    nano = load_checkpoint(FIXTURES / "dpa4_family_nano.pt")
    assert nano.config.radial_so2_mode == "none" and nano.blocks[0].conv.mixer is None


def test_per_block_node_features_equal_deepmd():
    """The node features entering the first block and leaving each of Mini's two blocks (NbMo_SS[334]), so a
    mismatch points at its block."""
    model = load_checkpoint(FIXTURES / "dpa4_family_mini.pt")
    recorded = REFERENCE["configs"]["mini"]["blocks"]
    assert len(model.blocks) == 2 and set(recorded) == {"input", "0", "1"}
    ours: dict[str, torch.Tensor] = {}
    handles = [model.blocks[0].register_forward_pre_hook(
        lambda _m, inputs: ours.__setitem__("input", inputs[0].detach().clone()))]
    for index, block in enumerate(model.blocks):
        handles.append(block.register_forward_hook(
            lambda _m, _i, output, key=str(index): ours.__setitem__(key, output.detach().clone())))
    try:
        predict(model, _atoms(REFERENCE["frames"][0]), compute_forces=False, compute_stress=False)
    finally:
        for handle in handles:
            handle.remove()
    signs = torch.cat([sh_signs(l) for l in range(model.config.lmax + 1)])[None, :, None]  # noqa: E741
    for key, theirs in recorded.items():
        assert theirs[:, 1:].abs().max() > 1e-3, key  # the l >= 1 rows carry signal (tolerance 1e-12)
        assert (signs * ours[key] - theirs[:, :, 0]).abs().max() < 1e-12, key


def test_neo_focus_norm_is_mapped_and_used():
    """Neo's two foci with edge_norm (the released default) RMS-norm the competition scalars with a scale."""
    model = load_checkpoint(FIXTURES / "dpa4_family_neo.pt")
    conv = model.blocks[0].conv
    assert model.config.n_focus == 2 and model.config.edge_norm and conv.compete_scale.shape == (8,)
    atoms = _atoms(REFERENCE["frames"][0])
    energy = float(predict(model, atoms)["energy"][0])
    with torch.no_grad():
        conv.compete_scale.mul_(3.0)
    assert abs(float(predict(model, atoms)["energy"][0]) - energy) > 1e-6


@pytest.mark.parametrize("name", ["nano", "neo", "plus"])
def test_radial_none_focus_norm_and_rank_two_models_are_symmetric_and_conservative(name):
    model = load_checkpoint(FIXTURES / f"dpa4_family_{name}.pt")
    atoms = _atoms(REFERENCE["frames"][0])
    assert_rotation_equivariant(model, atoms, seed=5)
    assert_conservative(model, atoms, indices=[0, 3])


def test_an_atom_without_neighbours_runs_and_is_local():
    """A frame with no edges at all (an isolated atom) used to crash the deepmd block (views of empty edge
    tensors, the max of no logits); its energy is that of the same atom far from others."""
    model = load_checkpoint(FIXTURES / "dpa4_tiny.pt")
    alone = predict(model, Atoms("W", positions=[[0.0, 0.0, 0.0]]))
    assert np.isfinite(alone["energy"]).all() and np.abs(alone["forces"]).max() == 0.0
    far = predict(model, Atoms("WNbMo", positions=[[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [21.3, 1.1, 1.4]]))
    assert abs(far["atom_energy"][0] - alone["energy"][0]) < 1e-12 * abs(alone["energy"][0])
    assert np.abs(far["forces"][1:]).max() > 1e-3


EXTRA = torch.load(FIXTURES / "dpa4_extra_frames_reference.pt", weights_only=True)


@pytest.mark.parametrize("name", sorted(EXTRA["configs"]))
def test_option_fixtures_equal_deepmd_without_a_cell(name):
    """The W/Nb/Mo fixtures (dpa4_tiny.pt, dpa4_<option>.pt) on a bcc cluster, a pair at 0.65 A, a chain along +-z,
    an isolated atom and a dimer, none with a cell (deepmd-kit's numbers: benchmarks/deepmd/make_extra_frames.py)."""
    model = load_checkpoint(FIXTURES / EXTRA["configs"][name]["checkpoint"])
    reference, row = EXTRA["configs"][name], 0
    for index, frame in enumerate(EXTRA["frames"]):
        ours, n = predict(model, _atoms(frame)), len(frame["symbols"])
        theirs = float(reference["energy"][index])
        assert abs(float(ours["energy"][0]) - theirs) <= 1e-12 * abs(theirs), frame["source"]
        forces = reference["forces"][row:row + n].numpy()
        row += n
        assert np.abs(ours["forces"] - forces).max() < 1e-10 * max(1.0, np.abs(forces).max()), frame["source"]


def test_the_equality_table_script_covers_every_fixture_and_structure(monkeypatch):
    """benchmarks/deepmd/equality_table.py (run by hand for the README) reads every fixture's reference and maps
    every structure to a column; here without evaluating the models, so the script cannot silently drift."""
    import importlib.util

    path = FIXTURES.parents[2] / "benchmarks" / "deepmd" / "equality_table.py"
    spec = importlib.util.spec_from_file_location("equality_table", path)
    table = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "equality_table", table)  # its dataclass looks its module up
    spec.loader.exec_module(table)
    cases = table.cases()
    assert set(cases) >= {"tiny", "edge_norm", "ffn_blocks", "zbl", *(f"family {name}" for name in FAMILY)}
    assert {case.column for _, config_cases in cases.values() for case in config_cases} == set(table.COLUMNS)
    for checkpoint, config_cases in cases.values():
        assert (FIXTURES / checkpoint).exists() and len(config_cases) >= 4
    row = {"alloy": (1e-16, 2e-15, None)}
    assert "| x | 1e-16 2e-15 - |" in table.render({"x": row})


def test_radial_so2_mode_is_validated_and_deepmd_only():
    from dpa4_core.config import ConfigError, DPA4Config

    assert DPA4Config().radial_so2_mode == "degree_channel"
    with pytest.raises(ConfigError, match="radial_so2_mode='none' needs block='deepmd'"):
        DPA4Config(radial_so2_mode="none")
    with pytest.raises(ConfigError, match="radial_so2_mode must be 'degree_channel' or 'none'"):
        DPA4Config(radial_so2_mode="degree")
