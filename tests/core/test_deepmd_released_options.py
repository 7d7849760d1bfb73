"""The released deepmd-kit DPA4 checkpoints' options (issue 14, phase 2): ``so3_readout "mlp"``, ``ffn_so3_grid``
with ``grid_branch``, ``message_node_so3``, the published Mini combination of them (with ``mixing_layers`` 3),
``ffn_blocks`` 2, ``edge_norm``, ZBL bridging (``bridging_method "zbl"``) and Neo's ``n_focus`` 2 on the Mini
options.
dpa4's ``SO3GridFFN`` equals deepmd-kit's ``EquivariantFFN`` on its recorded inputs, the option fixtures load and
give deepmd-kit's energy, forces and virial (float64), and the loaded models are symmetric and conservative. Fixtures: tests/fixtures/deepmd/dpa4_<option>.pt and dpa4_options_reference.pt
(benchmarks/deepmd/make_fixtures.py, deepmd-kit 3.2.0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from dpa4_core.config import ConfigError, DPA4Config
from dpa4_core.io.checkpoint import CheckpointError, load_checkpoint
from dpa4_core.io.deepmd_weights import sh_signs
from dpa4_core.nn.ffn_so3 import SO3GridFFN
from dpa4_core.testing import assert_conservative, assert_rotation_equivariant, predict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"
FRAMES = json.loads((FIXTURES / "dpa4_tiny_reference.json").read_text())["frames"]
REFERENCE = torch.load(FIXTURES / "dpa4_options_reference.pt", weights_only=True)
LOADED = ["ffn_so3_grid", "mini", "ffn_blocks", "edge_norm", "neo", "zbl"]  # the option fixtures dpa4 reproduces


@pytest.fixture(scope="module", params=LOADED)
def loaded(request):
    return request.param, load_checkpoint(FIXTURES / f"dpa4_{request.param}.pt")


def _atoms(frame: dict) -> Atoms:
    return Atoms(frame["symbols"], positions=frame["positions"], cell=frame["cell"], pbc=True)


def _signs(lmax: int) -> torch.Tensor:
    return torch.cat([sh_signs(l) for l in range(lmax + 1)])[None, :, None]


@pytest.mark.parametrize("name, stage, module", [("mini", "descriptor.output_ffn", "readout.grid"),
                                                 ("ffn_so3_grid", "descriptor.blocks.0.ffns.0", "blocks.0.ffn")])
def test_so3_grid_ffn_equals_deepmd_on_its_recorded_input(name, stage, module):
    model = load_checkpoint(FIXTURES / f"dpa4_{name}.pt")
    ffn = model.get_submodule(module)
    assert isinstance(ffn, SO3GridFFN) and ffn.op == ("mlp" if name == "mini" else "branch")
    records = REFERENCE[name]["modules"]
    x, theirs = records[stage + ":input"][:, :, 0], records[stage][:, :, 0]  # [N, (L+1)^2, C], deepmd's signs
    signs = _signs(model.config.lmax)
    with torch.no_grad():
        ours = signs * ffn(signs * x)
    assert theirs.abs().max() > 0.1
    assert (ours - theirs).abs().max() < 1e-12


def test_option_fixtures_equal_deepmd_energy_forces_virial(loaded):
    name, model = loaded
    reference = REFERENCE[name]
    for index, frame in enumerate(FRAMES):
        ours = predict(model, _atoms(frame))
        energy = float(np.asarray(ours["energy"]).reshape(-1)[0])
        theirs = float(reference["energy"][index])
        assert abs(energy - theirs) <= 1e-12 * abs(theirs), frame["source"]
        assert np.abs(ours["forces"] - reference["forces"][index].numpy()).max() < 1e-10, frame["source"]
        virial = np.asarray(ours["virial"]).reshape(3, 3)
        assert np.abs(virial - reference["virial"][index].numpy()).max() < 1e-10, frame["source"]
    first = predict(model, _atoms(FRAMES[0]))["atom_energy"]
    assert np.abs(first - reference["atom_energy"].numpy()).max() < 1e-12


def test_option_fixtures_are_symmetric_and_conservative(loaded):
    _, model = loaded
    atoms = _atoms(FRAMES[1])
    assert_rotation_equivariant(model, atoms, seed=4)
    assert_conservative(model, atoms, indices=[0, 5])


def test_so3_grid_ffn_is_rotation_equivariant_for_every_op():
    from dpa4_core.geometry.frames import edge_quaternion
    from dpa4_core.geometry.wigner import wigner_d

    torch.manual_seed(0)
    q = edge_quaternion(torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64))
    rotation = torch.block_diag(*[block[0] for block in wigner_d(q, 3)])
    x = torch.randn(5, 16, 4, dtype=torch.float64)
    for op in ("glu", "mlp", "branch"):
        ffn = SO3GridFFN(4, 3, 3, 2, op, branches=2).double()
        torch.nn.init.normal_(ffn.project.weight)
        with torch.no_grad():
            out, rotated = ffn(x), ffn(torch.einsum("pq,nqc->npc", rotation, x))
        assert (torch.einsum("pq,nqc->npc", rotation, out) - rotated).abs().max() < 1e-12, op
        assert out.abs().max() > 1e-3


def test_the_message_node_product_changes_the_energy():
    """The Mini fixture exercises message_node_so3: without its product the energy differs."""
    model = load_checkpoint(FIXTURES / "dpa4_mini.pt")
    atoms = _atoms(FRAMES[0])
    energy = float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0])
    assert abs(energy - float(REFERENCE["mini"]["energy"][0])) < 1e-12 * abs(energy)
    model.blocks[0].conv.message_node = None
    assert abs(float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0]) - energy) > 1e-3


def test_the_mini_fixture_has_the_published_mini_options():
    from dpa4_core.io.deepmd import read_deepmd_checkpoint

    descriptor = read_deepmd_checkpoint(FIXTURES / "dpa4_mini.pt").descriptor
    assert {name: descriptor[name] for name in ("edge_norm", "mixing_layers", "message_node_so3", "ffn_so3_grid",
                                                "grid_branch", "ffn_blocks", "so3_readout")} == {
        "edge_norm": False, "mixing_layers": 3, "message_node_so3": True, "ffn_so3_grid": True,
        "grid_branch": [0, 0, 1], "ffn_blocks": 1, "so3_readout": "mlp"}
    assert load_checkpoint(FIXTURES / "dpa4_mini.pt").config.so2_layers == 3


@pytest.mark.parametrize("edit, refused", [
    ({"ffn_so3_grid": True, "grid_branch": 0}, "grid_branch=0 (on this FFN grid dpa4 implements only a positive"),
    ({"grid_mlp": [False, False, True]}, "grid_mlp=[False, False, True], grid_branch=0 (on this FFN grid"),
    ({"so3_readout": "glu"}, "descriptor.so3_readout='glu' (dpa4 implements only 'none', 'mlp' yet)"),
    ({"message_node_so3": True, "grid_branch": [0, 1, 0]}, "(with message_node_so3 dpa4 implements only the grid")])
def test_grid_settings_dpa4_does_not_reproduce_are_refused(tmp_path, edit, refused):
    payload = torch.load(FIXTURES / "dpa4_tiny.pt", map_location="cpu", weights_only=True)
    payload["model"]["_extra_state"]["model_params"]["descriptor"].update(edit)
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "edited.pt")
    assert refused in str(caught.value)


def test_grid_options_default_off_and_are_validated():
    config = DPA4Config()
    assert config.readout_grid == "none" and config.grid_branches == 1 and config.ffn == "bilinear"
    with pytest.raises(ConfigError, match="readout_grid must be"):
        DPA4Config(readout="deepmd", readout_grid="branch")
    with pytest.raises(ConfigError, match="readout_grid needs readout='deepmd'"):
        DPA4Config(readout_grid="mlp")
    with pytest.raises(ConfigError, match="grid_branches must be a positive integer"):
        DPA4Config(grid_branches=0)
    assert config.message_node_so3 is False and config.ffn_blocks == 1 and config.edge_norm is False
    with pytest.raises(ConfigError, match="edge_norm needs block='deepmd'"):
        DPA4Config(edge_norm=True)
    assert config.n_focus == 1
    with pytest.raises(ConfigError, match="n_focus > 1 needs block='deepmd'"):
        DPA4Config(n_focus=2)
    with pytest.raises(ConfigError, match="ffn_blocks > 1 needs block='deepmd'"):
        DPA4Config(ffn_blocks=2)
    with pytest.raises(ConfigError, match="message_node_so3 needs block='deepmd'"):
        DPA4Config(message_node_so3=True)


def test_every_ffn_sub_block_is_mapped_and_used():
    model = load_checkpoint(FIXTURES / "dpa4_ffn_blocks.pt")
    assert model.config.ffn_blocks == 2 and len(model.blocks[0].extra_ffns) == 1
    atoms = _atoms(FRAMES[0])
    energy = float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0])
    with torch.no_grad():
        model.blocks[0].extra_ffns[0].project.weight.zero_()
    assert abs(float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0]) - energy) > 1e-3


def test_edge_norm_norms_are_mapped_and_used():
    from dpa4_core.nn.norm import RMSNorm

    model = load_checkpoint(FIXTURES / "dpa4_edge_norm.pt")
    assert model.config.edge_norm and isinstance(model.radial.mlp[1], RMSNorm)
    assert model.blocks[0].message_norm.eps == 1e-5
    atoms = _atoms(FRAMES[0])
    energy = float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0])
    for norm in (model.radial.mlp[1], model.embedding.film_norm):
        saved = norm.scale.detach().clone()
        with torch.no_grad():
            norm.scale.mul_(1.5)
        assert abs(float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0]) - energy) > 1e-4
        with torch.no_grad():
            norm.scale.copy_(saved)


def _with_sel(tmp_path, sel) -> Path:
    payload = torch.load(FIXTURES / "dpa4_tiny.pt", map_location="cpu", weights_only=True)
    payload["model"]["_extra_state"]["model_params"]["descriptor"]["sel"] = sel
    torch.save(payload, tmp_path / "sel.pt")
    return tmp_path / "sel.pt"


def test_more_neighbours_than_deepmd_keeps_is_not_silent(tmp_path):
    """deepmd-kit keeps the nearest sum(sel) neighbours; dpa4 keeps all, so past sum(sel) the answers differ: the
    loaded model records the cap and warns, naming the atoms' neighbour count and the cap."""
    import warnings

    from dpa4_core.model.domain import NeighborCapWarning

    atoms = _atoms(FRAMES[0])  # bcc alloy: 26 neighbours within 5 A (8 + 6 + 12)
    model = load_checkpoint(_with_sel(tmp_path, [4, 4, 4]))
    assert model.config.neighbor_cap == 12
    with pytest.warns(NeighborCapWarning, match=r"up to \d+ neighbours .* deepmd-kit keeps the nearest 12"):
        predict(model, atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeighborCapWarning)
        assert load_checkpoint(FIXTURES / "dpa4_tiny.pt").config.neighbor_cap == 64
        predict(load_checkpoint(FIXTURES / "dpa4_tiny.pt"), atoms)  # 64 >= every atom's count: no warning
    assert DPA4Config().neighbor_cap == 0


def test_a_float32_file_loads_in_float64_and_runs_in_float32():
    """Released files are float32. dpa4 loads them in float64 (the map folds constants into weights; rounding
    back to float32 would move the energy by ~1e-8 relative) and equals deepmd-kit's float64 evaluation of the same
    stored weights as for float64 files (the folding itself is done in float64); cast to float32, it is as close
    to deepmd-kit's float32 run as float32 allows."""
    model = load_checkpoint(FIXTURES / "dpa4_mini_float32.pt")
    assert next(model.parameters()).dtype == torch.float64
    reference = REFERENCE["mini_float32"]
    single = load_checkpoint(FIXTURES / "dpa4_mini_float32.pt").float()
    for index, frame in enumerate(FRAMES):
        for ours, theirs, (e_tol, f_tol) in ((model, reference["float64"], (1e-12, 1e-10)),
                                            (single, reference["float32"], (1e-6, 1e-6))):
            out = predict(ours, _atoms(frame))
            energy = float(np.asarray(out["energy"]).reshape(-1)[0])
            assert abs(energy - float(theirs["energy"][index])) <= e_tol * abs(energy), frame["source"]
            assert np.abs(out["forces"] - theirs["forces"][index].numpy()).max() < f_tol, frame["source"]
            virial = np.asarray(out["virial"]).reshape(3, 3)
            assert np.abs(virial - theirs["virial"][index].numpy()).max() < 5 * f_tol, frame["source"]


def test_two_foci_compete_and_both_streams_count():
    model = load_checkpoint(FIXTURES / "dpa4_neo.pt")
    conv = model.blocks[0].conv
    assert model.config.n_focus == 2 and conv.compete.shape == (8, 2) and conv.pre_mix.weight.shape == (3, 8, 16)
    atoms = _atoms(FRAMES[0])
    energy = float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0])
    with torch.no_grad():
        conv.compete.zero_()  # uniform competition
    assert abs(float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0]) - energy) > 1e-4


def test_zbl_bridging_equals_deepmd_on_short_pairs(monkeypatch):
    """Pairs at 0.42 A (frozen zone), 0.65 and 0.7 A (bridging window): energies 1e3-4e3 eV, forces up to 2e4
    eV/A, equal to deepmd-kit's to 1e-12 relative. Its source gate reads the bridged length: with the true length
    (dpa4's own convention) the frame with a pair at 0.7 A is off."""
    import dpa4_core.model.energy as energy_module

    model = load_checkpoint(FIXTURES / "dpa4_zbl.pt")
    assert model.config.zbl and model.config.bridging and model.config.zbl_style == "deepmd"
    reference = REFERENCE["zbl"]
    extra = reference["extra_frames"]
    assert len(extra) == 3
    for index, frame in enumerate(extra, start=len(FRAMES)):
        out = predict(model, _atoms(frame))
        energy, theirs = float(np.asarray(out["energy"]).reshape(-1)[0]), float(reference["energy"][index])
        assert abs(energy - theirs) <= 1e-12 * abs(theirs), frame["source"]
        forces = reference["forces"][index].numpy()
        assert np.abs(out["forces"] - forces).max() <= 1e-12 * np.abs(forces).max(), frame["source"]
        virial = reference["virial"][index].numpy()
        assert np.abs(np.asarray(out["virial"]).reshape(3, 3) - virial).max() <= 1e-12 * np.abs(virial).max()
    build = energy_module.build_edge_cache
    monkeypatch.setattr(energy_module, "build_edge_cache", lambda *a, **k: build(*a, **{**k, "gate_from_bridged": False}))
    off = float(np.asarray(predict(model, _atoms(extra[2]))["energy"]).reshape(-1)[0])
    assert abs(off - float(reference["energy"][len(FRAMES) + 2])) > 1e-6


def test_neo_fixture_runs_the_message_node_product_per_focus():
    from dpa4_core.nn.ffn_so3 import SO3CrossGrid

    model = load_checkpoint(FIXTURES / "dpa4_neo.pt")
    grid = model.blocks[0].conv.message_node
    assert isinstance(grid, SO3CrossGrid) and grid.focus == 2 and grid.scalar_gate.weight.shape == (16, 16)
    atoms = _atoms(FRAMES[0])
    energy = float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0])
    with torch.no_grad():
        grid.residual_scale[8:].zero_()  # the second stream's product only
    assert abs(float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0]) - energy) > 1e-4
