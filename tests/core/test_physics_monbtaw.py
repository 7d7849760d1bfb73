"""Physics checks (dpa4_core.pretrained.physics) on real PBE data, and the shipped models' physics.

The DFT side must reproduce published PBE numbers for bcc Mo (a0 3.16 A, C11 ~ 470, C12 ~ 160, C44 ~ 105 GPa),
so a unit or sign mistake in the strain-stress fit fails here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpa4_core.data.paths import vendored
from dpa4_core.io.checkpoint import load_for_inference
from dpa4_core.model.bias import dimer_e0
from dpa4_core.pretrained import MODELS, physics
from dpa4_core.train import load_dataset


@pytest.fixture(scope="module")
def mo_elastic():
    return load_dataset(str(vendored("maml_MoNbTaW", "Mo_Elastic.json.gz")))


def _reference(frames) -> int:
    cubic = [i for i in range(len(frames)) if np.abs(frames.cell[i] - np.eye(3) * frames.cell[i][0, 0]).max() < 1e-9]
    return min(cubic, key=lambda i: abs(np.trace(frames.stress[i])))


def test_strain_of_a_sheared_cell_is_engineering_voigt():
    ref = np.eye(3) * 3.0
    sheared = ref.copy()
    sheared[0, 2] = 0.03  # a gains a z component: u_z = 0.01 x
    np.testing.assert_allclose(physics.small_strain(sheared, ref), [0, 0, 0, 0, 0.01, 0], atol=1e-12)


def test_dft_strain_stress_fit_gives_pbe_elastic_constants_of_mo(mo_elastic):
    ref = _reference(mo_elastic)
    c, sigma0 = physics.strain_stress_fit(mo_elastic.cell, mo_elastic.stress, mo_elastic.cell[ref])
    constants = physics.cubic_constants(c)
    assert 420 < constants["C11"] < 520 and 130 < constants["C12"] < 190 and 90 < constants["C44"] < 125
    assert constants["C'"] > 0
    a0 = mo_elastic.cell[ref][0, 0] * (1 + physics.isotropic_equilibrium(c, sigma0))
    assert a0 == pytest.approx(3.16, abs=0.015)
    # cubic symmetry of the fit itself: the three diagonal constants agree
    assert np.ptp(np.diag(c)[:3]) < 0.05 * constants["C11"]


def test_fit_refuses_too_few_small_strains(mo_elastic):
    ref = _reference(mo_elastic)
    with pytest.raises(ValueError, match="cannot fit"):
        physics.strain_stress_fit(mo_elastic.cell[:5], mo_elastic.stress[:5], mo_elastic.cell[ref], max_strain=1e-4)


# ------------------------------------------------------------------------------ shipped models with an E0 reference
E0_MODELS = [m.name for m in MODELS.values() if m.reference.startswith("E0")]
ELEMENTS = ("Nb", "Mo", "Ta", "W")


def test_a_model_with_isolated_atom_reference_is_shipped():
    assert E0_MODELS, "no shipped model has E0 (isolated-atom) energies as its reference"


@pytest.mark.parametrize("name", E0_MODELS)
def test_shipped_model_binds_bcc_with_the_dft_cohesive_energy_and_rises_monotonically_to_the_free_atom(name):
    model = load_for_inference(name, torch.float64)
    e0 = dimer_e0(vendored("matbench_discovery_refs", "diatomics-dft.json.gz"), ELEMENTS)
    for el in ELEMENTS:
        frames = load_dataset(str(vendored("maml_MoNbTaW", f"{el}_Elastic.json.gz")))
        ref = _reference(frames)
        dft_cohesive = e0[el] - frames.energy[ref] / frames.n_atoms[ref]
        e_iso = physics.isolated_energy(model, el)
        assert e_iso == pytest.approx(e0[el], abs=1e-6)  # the free atom is the PBE E0 (fp32-stored bias)
        a0, e_bulk = physics.lattice_constant(model, el, frames.cell[ref][0, 0])
        assert e_iso - e_bulk == pytest.approx(dft_cohesive, rel=0.10), el
        curve = physics.expansion_curve(model, el, a0, (1.0, 1.1, 1.25, 1.5, 1.73, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0))
        assert np.all(np.diff(np.append(curve, e_iso)) >= -1e-4), (el, curve - e_iso)


@pytest.mark.parametrize("name", E0_MODELS)
def test_shipped_model_keeps_bcc_mechanically_stable(name):
    """C' = (C11 - C12)/2 > 0 for bcc Nb, Mo, Ta, W (the DFT values are 49-165 GPa): the model's stresses on the
    DFT ``{El}_Elastic`` cells, the same strain-stress fit as the DFT side (|strain| <= 2%)."""
    model = load_for_inference(name, torch.float64)
    c_prime = {}
    for el in ELEMENTS:
        frames = load_dataset(str(vendored("maml_MoNbTaW", f"{el}_Elastic.json.gz")))
        ref = _reference(frames)
        near = [i for i in range(len(frames))
                if np.abs(physics.small_strain(frames.cell[i], frames.cell[ref])).max() <= 0.021]
        stress = physics.stresses(model, [frames.atoms(i) for i in near])
        c, _ = physics.strain_stress_fit(frames.cell[near], stress, frames.cell[ref])
        c_prime[el] = physics.cubic_constants(c)["C'"]
    assert all(v > 0 for v in c_prime.values()), {el: round(v, 1) for el, v in c_prime.items()}
