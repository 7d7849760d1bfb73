"""A foundation model in deepmd-kit's format: converted with provenance (``dpa4 convert-deepmd``) and fine-tuned on
in-house DFT data (``dpa4 finetune --from FILE.pt``), elements matched by atomic number over a 118-type map.

The file is a stand-in for the authors' OMat24 checkpoints (tests/fixtures/deepmd/dpa4_foundation_standin.pt,
written by deepmd-kit 3.2.0 with benchmarks/deepmd/make_foundation_standin.py): every element H-Og, the published
Mini options, float32, random weights; deepmd-kit's energies and forces on two real VASP runs are stored with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from dpa4_core.cli import main
from dpa4_core.data.paths import vendored
from dpa4_core.io.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from dpa4_core.io.deepmd_convert import convert_deepmd
from dpa4_core.io.files import file_sha256
from dpa4_core.testing import predict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"
STANDIN = FIXTURES / "dpa4_foundation_standin.pt"
REFERENCE = torch.load(FIXTURES / "dpa4_foundation_standin_reference.pt", weights_only=True)


def _frame(file: str):
    return ase.io.read(vendored("pymatgen_vasprun", file), index=REFERENCE[file]["index"], format="vasp-xml")


def _energy(model, atoms) -> float:
    return float(np.asarray(predict(model, atoms)["energy"]).reshape(-1)[0])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert_deepmd(STANDIN, tmp_path_factory.mktemp("convert") / "standin.pt")


@pytest.mark.parametrize("file", sorted(REFERENCE))
def test_elements_are_matched_by_atomic_number_over_the_118_type_map(converted, file):
    """LiFePO4 and Si64 (types 2, 7, 14, 25 of deepmd's map) give deepmd-kit's energy and forces of the same
    float32 weights evaluated in float64, from the deepmd file and from the converted one."""
    atoms, theirs = _frame(file), REFERENCE[file]["float64"]
    for model in (load_checkpoint(STANDIN), load_checkpoint(converted)):
        ours = predict(model, atoms)
        assert abs(_energy(model, atoms) - theirs["energy"]) <= 1e-10 * abs(theirs["energy"])
        assert np.abs(ours["forces"] - theirs["forces"].numpy()).max() < 1e-9


def test_converted_file_records_where_it_came_from(converted, capsys):
    data = read_checkpoint(converted)
    origin = data.metadata["converted_from"]
    assert origin["sha256"] == file_sha256(STANDIN) and origin["file"] == str(STANDIN.resolve())
    assert origin["type_map"][:3] == ["H", "He", "Li"] and len(origin["type_map"]) == 118
    assert origin["descriptor_version"] == pytest.approx(1.2) and origin["head"] is None
    assert data.dtype == torch.float64 and len(data.elements) == 118
    assert main(["info", str(converted)]) == 0
    assert f"sha256 {file_sha256(STANDIN)[:16]}" in capsys.readouterr().out


def test_float32_conversion_is_within_float32_rounding_of_deepmd(tmp_path):
    atoms, theirs = _frame("vasprun.lifepo4.xml.gz"), REFERENCE["vasprun.lifepo4.xml.gz"]["float32"]
    assert main(["-q", "convert-deepmd", str(STANDIN), str(tmp_path / "f32.pt"), "--dtype", "float32"]) == 0
    model = load_checkpoint(tmp_path / "f32.pt")
    assert next(model.parameters()).dtype == torch.float32
    assert abs(_energy(model, atoms) - theirs["energy"]) <= 2e-6 * abs(theirs["energy"])


def test_convert_refuses_what_it_cannot_convert(tmp_path, converted, capsys):
    with pytest.raises(CheckpointError, match="not a deepmd-kit checkpoint"):
        convert_deepmd(converted, tmp_path / "again.pt")  # already dpa4's
    with pytest.raises(CheckpointError, match="must not replace its source"):
        convert_deepmd(STANDIN, STANDIN)
    with pytest.raises(CheckpointError, match="multi-task .* heads \\[Alloy, Other\\]"):
        convert_deepmd(FIXTURES / "dpa4_tiny_multitask.pt", tmp_path / "m.pt")
    assert main(["convert-deepmd", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    written = convert_deepmd(FIXTURES / "dpa4_tiny_multitask.pt", tmp_path / "alloy.pt", head="MoNbW")
    assert read_checkpoint(written).metadata["converted_from"]["head"] == "Alloy"


def test_finetune_from_a_deepmd_file_refits_offsets_and_keeps_frozen_blocks(tmp_path, capsys):
    config = {
        "data": {"train": [str(vendored("pymatgen_vasprun", "vasprun.lifepo4.xml.gz"))],
                 "split": {"valid": 0.2, "test": 0.0, "seed": 0}},
        "model": {"dtype": "float32"}, "freeze_blocks": 1, "steps": 4, "batch_size": 2, "valid_every": 2,
        "checkpoint_every": 2, "plots": False, "progress": False, "output_dir": str(tmp_path / "run"),
        "optim": {"lr": 1e-2},
    }
    (tmp_path / "ft.yaml").write_text(json.dumps(config))  # JSON is YAML
    assert main(["-q", "finetune", str(tmp_path / "ft.yaml"), "--from", str(STANDIN)]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    # random weights put the offsets eV/atom away from PBE's LiFePO4; the offset refit alone brings them to meV
    assert metrics["base"]["energy_mae_mev_per_atom"] > 1000
    assert metrics["base_refit"]["energy_mae_mev_per_atom"] < 20
    base, tuned = load_checkpoint(STANDIN).float(), load_checkpoint(tmp_path / "run" / "last.pt")
    before, after = dict(base.named_parameters()), dict(tuned.named_parameters())
    frozen = [n for n in after if n.startswith(("embedding", "type_embedding", "edge", "radial", "blocks.0."))]
    trained = [n for n in after if n not in frozen]
    assert frozen and trained
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in trained)
    assert len(tuned.trained_elements) == 118  # the base's elements stay usable (its competence, not ours)
    origin = read_checkpoint(tmp_path / "run" / "best.pt").metadata["base"]
    assert origin["sha256"] == file_sha256(STANDIN) and origin["converted_from"]["type_map"][25] == "Fe"
    assert np.isfinite(_energy(tuned, _frame("vasprun.md.xml.gz")))


def test_a_dpa4_checkpoint_saved_from_a_converted_model_keeps_its_function(tmp_path, converted):
    model = load_checkpoint(converted)
    save_checkpoint(model, tmp_path / "again.pt")
    atoms = _frame("vasprun.md.xml.gz")
    assert _energy(load_checkpoint(tmp_path / "again.pt"), atoms) == _energy(model, atoms)


def test_loading_a_deepmd_file_twice_gives_the_same_weights():
    """Rows of elements outside a type map used to keep the constructor's random values: each load differed."""
    torch.manual_seed(1)
    first = load_checkpoint(FIXTURES / "dpa4_tiny.pt").state_dict()
    torch.manual_seed(2)
    second = load_checkpoint(FIXTURES / "dpa4_tiny.pt").state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_file_with_weights_dpa4_would_not_read_is_refused_naming_them(tmp_path):
    """An option newer than deepmd-kit 3.2.0 (or one its config does not announce) may add weights: dropping them
    would give another model's numbers, so the file is refused; the known layout of every fixture still loads."""
    payload = torch.load(STANDIN, weights_only=True)
    payload["model"]["model.Default.atomic_model.descriptor.blocks.0.so2_conv.sandwich_norm.adam_scale"] = torch.ones(8)
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match=r"does not know where to put .*blocks\.0\.so2_conv\.sandwich_norm"):
        load_checkpoint(tmp_path / "newer.pt")
    assert load_checkpoint(STANDIN).config.channels == 8
