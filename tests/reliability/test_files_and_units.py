"""Model files and training data a user can trust (issue 16, area G).

- ``train_state.pt`` is never unpickled: a planted pickle in ``output_dir`` is refused before it can run code;
- a checkpoint with NaN/inf weights is refused at load, naming the tensor;
- labels in the wrong units (Hartree, per-atom vs total energies, GPa as eV/A^3, bohr coordinates) and Z = 0
  are refused with the likely mistake named; the real vendored data passes;
- ``dpa4 eval`` / ``evaluate`` refuse elements outside the checkpoint's trained set unless told otherwise,
  while fine-tuning (the way to add an element) does not.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from dpa4_core import DPA4, DPA4Config
from dpa4_core.data.labels import BOHR_A, HARTREE_EV, DataError, check_units
from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_frames

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


# ------------------------------------------------------------------------------------ units of the data
# Positive controls are the vendored DFT sets; every bad case is one of them converted to a wrong unit.
VENDORED = [vendored("maml_MoNbTaW", f"{name}.json.gz") for name in (
    "Mo_AIMD", "Mo_Elastic", "Mo_Surface", "Nb_AIMD", "Nb_Surface", "Ta_AIMD", "Ta_Surface", "W_AIMD",
    "W_Elastic", "W_Surface", "MoTa_SS", "NbW_SS", "TaW_SS")] + [vendored("mlearn", e, "training.json.gz")
                                                                  for e in ("Li", "Mo", "Si", "Ge")]
MOLECULES = vendored("botnet", "dataset_acac", "train_300K.xyz.gz")  # all-electron ORCA: -626 eV/atom


def _frames(path, n=8, **kwargs):
    return list(itertools.islice(read_frames(str(path), **kwargs), n))


def _converted(frames, energy=1.0, forces=1.0, stress=1.0, length=1.0):
    """Copies of ``frames`` with labels and coordinates multiplied (checked again only by check_units)."""
    from dpa4_core.data.labels import Frame

    out = []
    for f in frames:
        atoms = f.atoms.copy()
        atoms.set_cell(atoms.cell.array * length, scale_atoms=False)
        atoms.positions = atoms.positions * length
        out.append(Frame(atoms, f.energy * energy, f.forces * forces, None if f.stress is None else f.stress * stress,
                         source=f.source))
    return out


@pytest.mark.parametrize("path", VENDORED + [MOLECULES], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_dft_data_passes_the_units_check(path):
    assert len(check_units(_frames(path))) == 8


@pytest.mark.parametrize("change, message", [
    ({"forces": 1000.0}, r"meV/A \(x1000\)"),
    ({"stress": 160.21766}, r"GPa \(x160\)"),
    ({"length": 1 / BOHR_A}, r"bohr read as A"),
    ({"length": BOHR_A}, r"converted to bohr, or fractional"),
])
def test_wrong_units_are_refused_naming_the_mistake(change, message):
    frames = _frames(vendored("maml_MoNbTaW", "Mo_AIMD.json.gz"))
    with pytest.raises(DataError, match=message):
        check_units(_converted(frames, **change))


def test_stress_in_kbar_read_as_ev_per_a3_and_kcal_per_mol_energies_are_refused_at_read():
    with pytest.raises(DataError, match=r"Mo_Elastic.*GPa \(x160\) or kbar"):
        _frames(vendored("maml_MoNbTaW", "Mo_Elastic.json.gz"), stress_unit="ev/a^3")
    molecules = _converted(_frames(MOLECULES, n=2), energy=23.0605)  # eV -> kcal/mol
    with pytest.raises(DataError, match=r"train_300K.*kJ/mol or kcal/mol"):
        check_units(molecules)


def test_z_zero_is_refused():
    frames = _frames(vendored("maml_MoNbTaW", "Mo_Surface.json.gz"), n=1)
    frames[0].atoms.numbers[0] = 0
    with pytest.raises(DataError, match=r"Mo_Surface.*frame 0.*\[0\].*not elements"):
        check_units(frames)


@pytest.fixture(scope="module")
def starter():
    from dpa4_core.pretrained import starter_checkpoint

    return starter_checkpoint()  # trained on Mo, Nb, Ta, W


def _write(frames, path):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    images = []
    for f in frames:
        atoms = f.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=f.energy, forces=f.forces)
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return str(path)


@pytest.mark.parametrize("energy, message", [
    (1 / HARTREE_EV, "Hartree"),
    ("per_atom", "per-atom energies given as total"),
])
def test_eval_refuses_energies_that_match_the_model_only_after_a_unit_mistake(tmp_path, starter, capsys,
                                                                              energy, message):
    from dpa4_core.cli import main
    from dpa4_core.train import evaluate

    frames = _frames(vendored("maml_MoNbTaW", "Mo_Surface.json.gz"), n=11)
    good = _write(frames, tmp_path / "good.extxyz")
    assert evaluate(starter, good)["energy_mae_mev_per_atom"] < 100  # control: the right units pass
    if energy == "per_atom":
        bad = [_converted([f], energy=1 / len(f.atoms))[0] for f in frames]
    else:
        bad = _converted(frames, energy=energy)
    path = _write(bad, tmp_path / "bad.extxyz")
    with pytest.raises(DataError, match=message):
        evaluate(starter, path)
    assert main(["eval", str(starter), path]) == 2
    assert message in capsys.readouterr().err


def test_training_refuses_coordinates_in_bohr(tmp_path):
    from dpa4_core.train import train

    frames = _frames(vendored("maml_MoNbTaW", "Mo_AIMD.json.gz"))
    path = _write(_converted(frames, length=1 / BOHR_A), tmp_path / "bohr.extxyz")
    with pytest.raises(DataError, match="bohr read as A"):
        train(_train_config(tmp_path / "run", data={"train": [path], "split": {"valid": 0.25}}), model=tiny_model())
    assert not (tmp_path / "run" / "last.pt").exists()


# ------------------------------------------------------------------------------------ untrained elements
def test_eval_refuses_untrained_elements_unless_allowed(tmp_path, starter, capsys, caplog):
    from dpa4_core.cli import main
    from dpa4_core.model.domain import UntrainedElementError
    from dpa4_core.train import evaluate

    silicon = str(vendored("mlearn", "Si", "training.json.gz"))
    with pytest.raises(UntrainedElementError, match=r"Si, which the model was not trained on"):
        evaluate(starter, silicon)
    assert main(["eval", str(starter), silicon]) == 2
    assert "Si" in capsys.readouterr().err
    small = _write(_frames(silicon, n=2), tmp_path / "si.extxyz")
    with caplog.at_level("WARNING"):
        metrics = evaluate(starter, small, allow_untrained_elements=True)
    assert metrics["n_frames"] == 2 and "allow_untrained_elements=True" in caplog.text
    assert main(["eval", str(starter), small, "--allow-untrained-elements"]) == 0
