"""Fine-tuning from a checkpoint onto a new element (Mo model -> Nb surfaces, real DFT): the bias refit absorbs
the new element's reference energy, frozen blocks stay put, the rest trains, and base and fine-tuned errors are
reported on the same validation split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpa4_core.data.paths import vendored
from dpa4_core.io.checkpoint import save_checkpoint
from dpa4_core.train import finetune, load_dataset
from dpa4_core.train.finetune import FinetuneError
from dpa4_core.train.setup import fit_composition_bias, set_energy_bias
from dpa4_core.io.checkpoint import load_checkpoint
from train_models import small_model

MO = str(vendored("maml_MoNbTaW", "Mo_Surface.json.gz"))
NB = str(vendored("maml_MoNbTaW", "Nb_Surface.json.gz"))


def _common(tmp_path, name: str) -> dict:
    return {"steps": 4, "batch_size": 2, "valid_every": 4, "checkpoint_every": 4, "valid_batch_size": 8,
            "output_dir": str(tmp_path / name), "progress": False, "plots": False, "seed": 0}


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A tiny DPA4 whose bias was fitted on Mo surfaces only, saved as a checkpoint."""
    model = small_model()
    set_energy_bias(model, fit_composition_bias(load_dataset(MO)))
    return save_checkpoint(model, tmp_path_factory.mktemp("base") / "base.pt", elements=[42])


def test_finetune_to_a_new_element_reports_base_and_finetuned_errors(tmp_path, base_checkpoint):
    base = load_checkpoint(base_checkpoint)
    assert float(base.energy_bias[41]) == 0.0  # Nb was never seen
    config = {"data": {"train": [NB], "split": {"valid": 0.3, "seed": 1}}, "freeze_blocks": 1,
              "optim": {"lr": 1e-3}, **_common(tmp_path, "ft")}
    result = finetune(config, base_checkpoint=base_checkpoint)
    metrics = result.metrics
    assert set(metrics) >= {"valid", "base", "base_refit"}
    assert metrics["base"]["n_frames"] == metrics["valid"]["n_frames"] == metrics["base_refit"]["n_frames"] > 0
    # Without an Nb reference energy the base model is off by eV/atom; the least-squares refit removes that.
    assert metrics["base"]["energy_mae_mev_per_atom"] > 1000.0
    assert metrics["base_refit"]["energy_mae_mev_per_atom"] < 0.05 * metrics["base"]["energy_mae_mev_per_atom"]
    tuned = load_checkpoint(result.checkpoint)
    assert float(tuned.energy_bias[41]) < -5.0  # Nb's DFT energy per atom is about -10 eV
    frozen = [n for n, _ in base.named_parameters() if n.startswith(("embedding", "radial", "blocks.0."))]
    trained = [n for n, _ in base.named_parameters() if n.startswith(("blocks.1.", "readout"))]
    assert frozen and trained
    base_params, tuned_params = dict(base.named_parameters()), dict(tuned.named_parameters())
    for name in frozen:
        torch.testing.assert_close(tuned_params[name], base_params[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(tuned_params[n], base_params[n]) for n in trained)


def test_finetune_needs_a_base_checkpoint(tmp_path):
    with pytest.raises(FinetuneError, match="no base checkpoint"):
        finetune({"data": {"train": [NB]}, **_common(tmp_path, "x")})
    with pytest.raises(FinetuneError, match="freeze_blocks=5"):
        finetune({"data": {"train": [NB]}, "freeze_blocks": 5, **_common(tmp_path, "y")}, model=small_model())


def test_bias_refit_of_a_model_with_an_e0_reference_keeps_the_free_atom_at_e0():
    """A model trained with ``bias.method: e0`` has energy_bias = E0 and its cohesive energy in energy_shift; the
    fine-tuning refit must absorb the residuals without moving the isolated atom off E0."""
    from dpa4_core.pretrained.physics import isolated_energy
    from dpa4_core.train.finetune import predicted_energies, refit_bias
    from dpa4_core.train.setup import set_e0_reference

    data = load_dataset(MO)
    model = small_model(dtype=torch.float64)
    set_e0_reference(model, data, {"Mo": -4.607})
    with torch.no_grad():
        model.energy_shift[42] += 0.3  # a base model 0.3 eV/atom off on these data: the refit has work to do
    model.eval()
    before = np.abs(data.energy - predicted_energies(model, data)) / data.n_atoms
    bias = model.energy_bias.clone()
    refit_bias(model, data)
    after = np.abs(data.energy - predicted_energies(model, data)) / data.n_atoms
    assert after.mean() < 0.5 * before.mean()
    torch.testing.assert_close(model.energy_bias, bias, rtol=0, atol=0)
    assert isolated_energy(model, "Mo") == pytest.approx(-4.607, abs=1e-9)
