"""Tapered ZBL repulsion and the composition bias (dpa4_core/model/zbl.py, dpa4_core/model/bias.py, spec 5).

ZBL is compared with an independent restatement of the formula (``zbl_pair_energy/force`` below) and with its
exact short-range limit ``k_e Z_i Z_j / r``; the taper is checked to be 1 at short range, exactly 0 past its end (a fraction of
the covalent-radius sum, or the zone-bridging radius r_out if larger) and continuous in between; ended at half
the sum it leaves the bonds of real DFT frames alone. The bias fit is checked on real DFT energies through the normal
equations of least squares, which hold only at the minimiser. In the full model, two atoms at 0.3 A are repelled
by ZBL.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from ase import Atoms

from dpa4_core.data.paths import vendored
from dpa4_core.model.bias import BiasFitError, fit_energy_bias
from dpa4_core.model.zbl import ZBL, zbl_potential
from dpa4_core.testing import assert_close, predict

PAIRS = [(1, 1), (8, 8), (14, 14), (42, 74)]

# ZBL universal screening function (Ziegler, Biersack, Littmark 1985), restated from the formula.
ZBL_COULOMB = 14.399645  # e^2 / (4 pi eps0) in eV A
ZBL_COEFFICIENTS = ((0.18175, 3.19980), (0.50986, 0.94229), (0.28022, 0.40290), (0.02817, 0.20162))


def zbl_pair_energy(z1: int, z2: int, r: float | np.ndarray) -> np.ndarray:
    """Untapered ZBL repulsion ``V(r)`` in eV for a pair of atomic numbers at distance ``r`` (A)."""
    r = np.asarray(r, dtype=float)
    screening_length = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / screening_length
    phi = sum(c * np.exp(-d * x) for c, d in ZBL_COEFFICIENTS)
    return ZBL_COULOMB * z1 * z2 / r * phi


def zbl_pair_force(z1: int, z2: int, r: float | np.ndarray) -> np.ndarray:
    """``-dV/dr`` of :func:`zbl_pair_energy` in eV/A (positive = repulsive), differentiated analytically."""
    r = np.asarray(r, dtype=float)
    screening_length = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / screening_length
    phi = sum(c * np.exp(-d * x) for c, d in ZBL_COEFFICIENTS)
    dphi = sum(-c * d * np.exp(-d * x) for c, d in ZBL_COEFFICIENTS) / screening_length
    prefactor = ZBL_COULOMB * z1 * z2
    return -(prefactor * (dphi / r - phi / r**2))


@pytest.mark.parametrize("z1,z2", PAIRS)
def test_zbl_matches_reference_and_coulomb_limit(z1, z2):
    r = torch.tensor([1e-4, 0.1, 0.3, 0.8, 1.5, 3.0], dtype=torch.float64)
    z_i = torch.full_like(r, z1, dtype=torch.long)
    z_j = torch.full_like(r, z2, dtype=torch.long)
    v = zbl_potential(r, z_i, z_j).numpy()
    np.testing.assert_allclose(v, zbl_pair_energy(z1, z2, r.numpy()), rtol=1e-12)
    coulomb = 14.399645 * z1 * z2 / 1e-4
    assert v[0] / coulomb == pytest.approx(1.0, abs=3e-3)  # Phi(0) = sum of coefficients = 1


@pytest.mark.parametrize("z1,z2", PAIRS)
def test_tapered_dimer_energy_and_force(z1, z2):
    zbl = ZBL(cutoff=6.0).double()
    numbers = torch.tensor([z1, z2])
    src, dst = torch.tensor([1, 0]), torch.tensor([0, 1])
    r = torch.tensor([0.2, 0.2], dtype=torch.float64, requires_grad=True)
    energy = zbl(r, numbers, src, dst, 2).sum()
    # at 0.2 A the taper is exactly 1 for every pair (it starts at r_b / 2 >= r_min / 2 = 0.4 A)
    assert energy.item() == pytest.approx(float(zbl_pair_energy(z1, z2, 0.2)), rel=1e-12)
    (g,) = torch.autograd.grad(energy, r)
    # dE/dr summed over both edge directions is the pair derivative -F
    assert (g.sum()).item() == pytest.approx(-float(zbl_pair_force(z1, z2, 0.2)), rel=1e-10)


@pytest.mark.parametrize("taper_end", [1.0, 0.5])
def test_taper_is_one_then_smoothly_zero(taper_end):
    zbl = ZBL(cutoff=6.0, taper_end=taper_end).double()
    z = torch.tensor([14])
    r = torch.linspace(0.05, 6.5, 2001, dtype=torch.float64, requires_grad=True)
    taper = zbl.taper(r, z.expand(r.shape[0]), z.expand(r.shape[0]))
    r_b = taper_end * 2 * zbl.covalent_radii[14].item()  # Si-Si: 2.22 or 1.11 A, both > r_min = 0.8 A
    t = taper.detach()
    assert torch.all(t[r.detach() <= 0.5 * r_b] == 1.0)
    assert torch.all(t[r.detach() >= r_b] == 0.0)
    assert torch.all(t[1:] <= t[:-1])  # monotone
    (g,) = torch.autograd.grad(taper.sum(), r, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), r)
    assert torch.isfinite(g).all() and torch.isfinite(h).all()
    dr = (r[1] - r[0]).item()
    assert (g[1:] - g[:-1]).abs().max() < 50 * dr * (h.abs().max() + 1)  # first derivative continuous


def test_zbl_is_zero_beyond_cutoff_even_for_large_radii():
    zbl = ZBL(cutoff=2.0, taper_end=0.5).double()
    numbers = torch.tensor([55, 55])  # Cs: half the covalent-radius sum is 2.44 A > cutoff: the taper ends at r_c
    r = torch.tensor([2.0, 2.0], dtype=torch.float64)
    assert torch.equal(zbl(r, numbers, torch.tensor([1, 0]), torch.tensor([0, 1]), 2), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("dataset", ["botnet/dataset_acac/train_300K.xyz.gz", "maml_MoNbTaW/W_AIMD.json.gz", "maml_MoNbTaW/Ta_AIMD.json.gz"])
def test_zbl_ended_at_half_the_covalent_sum_leaves_real_bonds_alone(dataset):
    """With ``taper_end=0.5`` ZBL adds no force on DFT frames (acetylacetone at 300 K: C=O, C-H, O-H...O; W and Ta
    AIMD). Ended at the full sum it puts 3.4 eV/A RMS on acetylacetone, which the network has to cancel."""
    from dpa4_core.train import load_dataset
    from dpa4_core.train.setup import zbl_force_share

    frames = load_dataset(vendored(dataset)).subset(np.arange(50))
    assert zbl_force_share(ZBL(cutoff=5.0, taper_end=0.5), frames) == 0.0  # RMS 0: every force exactly 0


def test_taper_covers_the_zone_bridging_window_for_light_pairs():
    """H-H: half the covalent-radius sum (0.31 A) is inside r_out, where the network is blind; r_b is r_out."""
    zbl = ZBL(cutoff=5.0, r_min=0.8).double()
    h = torch.tensor([1])
    r = torch.tensor([0.39, 0.6, 0.79, 0.8], dtype=torch.float64)
    taper = zbl.taper(r, h.expand(4), h.expand(4))
    assert taper[0] == 1.0 and 0.0 < taper[2] < taper[1] < 1.0 and taper[3] == 0.0
    with pytest.raises(ValueError, match="r_min"):
        ZBL(cutoff=5.0, r_min=6.0)
    with pytest.raises(ValueError, match="taper_end"):
        ZBL(cutoff=5.0, taper_end=0.0)


def test_model_passes_its_taper_settings_to_zbl():
    from dpa4_core.config import ConfigError, DPA4Config
    from dpa4_core.model.energy import DPA4

    model = DPA4(DPA4Config.preset("tiny", r_out=0.9, zbl_taper_end=0.5))
    assert (model.zbl.r_min, model.zbl.taper_end) == (0.9, 0.5)
    with pytest.raises(ConfigError, match="zbl_taper_end"):
        DPA4Config.preset("tiny", zbl_taper_end=-1.0)


def _maml_frames(name: str):
    with gzip.open(vendored("maml_MoNbTaW", name), "rt") as stream:
        records = json.load(stream)
    numbers, energies = [], []
    from pymatgen.core import Structure

    for record in records:
        structure = Structure.from_dict(record["structure"])
        numbers.append(np.array(structure.atomic_numbers))
        energies.append(record["outputs"]["energy"])
    return numbers, np.array(energies)


def test_bias_satisfies_normal_equations_on_real_data():
    numbers, energies = _maml_frames("NbMo_SS.json.gz")
    bias = fit_energy_bias(numbers, energies)
    assert bias.shape == (119,) and bias.dtype == torch.float64
    counts = np.stack([np.bincount(z, minlength=119) for z in numbers])
    residual = counts @ bias.numpy() - energies
    present = counts.sum(0) > 0
    # least squares optimality: residual orthogonal to every composition column (relative to the energy scale)
    assert np.abs(counts[:, present].T @ residual).max() < 1e-8 * np.abs(energies).sum()
    assert np.all(bias.numpy()[~present] == 0) and set(np.nonzero(present)[0]) == {41, 42}
    assert -15 < bias[41] < -5 and -15 < bias[42] < -5  # eV per atom: plausible PBE energies of Nb, Mo


def test_bias_single_element_is_mean_energy_per_atom():
    numbers, energies = _maml_frames("Mo_Elastic.json.gz")
    bias = fit_energy_bias(numbers, energies)
    n = np.array([len(z) for z in numbers])
    expected = (n * energies).sum() / (n * n).sum()  # least squares slope through the origin
    assert bias[42].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "numbers,energies,match",
    [([], [], "at least one"), ([np.array([1])], [1.0, 2.0], "frames but"), ([np.array([0, 1])], [1.0], "1..118"),
     ([np.array([1])], [float("nan")], "NaN")],
)
def test_bias_bad_input(numbers, energies, match):
    with pytest.raises(BiasFitError, match=match):
        fit_energy_bias(numbers, energies)


def test_trainer_warns_when_zbl_acts_on_the_training_bonds(caplog):
    """Acetylacetone: ZBL ended at the covalent-radius sum exerts ~3x the DFT force RMS; at half the sum, none."""
    import logging

    from dpa4_core.config import DPA4Config
    from dpa4_core.model.energy import DPA4
    from dpa4_core.train import load_dataset
    from dpa4_core.train.setup import zbl_force_share
    from dpa4_core.train.trainer import _warn_if_zbl_acts_on_bonds

    frames = load_dataset(vendored("botnet", "dataset_acac", "train_300K.xyz.gz")).subset(np.arange(0, 500, 25))
    at_sum = DPA4(DPA4Config.preset("tiny", cutoff=5.0))
    at_half = DPA4(DPA4Config.preset("tiny", cutoff=5.0, zbl_taper_end=0.5))
    assert zbl_force_share(at_sum.zbl, frames) > 2.0
    assert zbl_force_share(at_half.zbl, frames) == 0.0
    assert zbl_force_share(DPA4(DPA4Config.preset("tiny", zbl=False)).zbl, frames) is None
    with caplog.at_level(logging.WARNING, logger="dpa4_core.train.trainer"):
        _warn_if_zbl_acts_on_bonds(at_half, frames)
        _warn_if_zbl_acts_on_bonds(at_sum, frames, chosen=True)  # the recipe chose 1.0: not a warning
        assert not caplog.records
        _warn_if_zbl_acts_on_bonds(at_sum, frames)
    assert "zbl_taper_end: 0.5" in caplog.text


@pytest.mark.parametrize("symbols", ["Mo2", "NbW"])
def test_close_contact_is_zbl_repulsion(tiny_model, symbols):
    """Two atoms at 0.3 A: energy above the two biases and force both within 1% of bare ZBL.

    The network sees the clamped distance r_in there and contributes a few eV at most, against ~1e4 eV of
    Coulomb-like repulsion; the reference is the bias (the isolated-atom energy, see test_model_derivatives.py).
    """
    distance = 0.3
    dimer = Atoms(symbols, positions=[[0.0, 0.0, 0.0], [0.1, -0.2, 0.0]])
    dimer.positions[1] *= distance / np.linalg.norm(dimer.positions[1])
    z1, z2 = dimer.numbers
    out = predict(tiny_model, dimer, compute_stress=False)
    isolated = float(tiny_model.energy_bias[z1] + tiny_model.energy_bias[z2])
    assert np.isfinite(out["forces"]).all()
    repulsion = out["energy"][0] - isolated
    expected = zbl_pair_energy(z1, z2, distance)
    assert repulsion == pytest.approx(expected, rel=1e-2)
    # Force on atom 1 points away from atom 0 with the ZBL magnitude.
    bond = dimer.positions[1] / distance
    along = float(out["forces"][1] @ bond)
    assert along == pytest.approx(zbl_pair_force(z1, z2, distance), rel=1e-2)
    assert_close(out["forces"][0], -out["forces"][1], 1e-10, "Newton's third law")
