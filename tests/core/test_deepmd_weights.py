"""deepmd-kit DPA4 conventions in dpa4's terms (dpa4_core.io.deepmd_weights), component by component, against
deepmd-kit 3.2.0's own float64 values (tests/fixtures/deepmd/dpa4_tiny_components.pt)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dpa4_core.geometry.envelope import polynomial_envelope
from dpa4_core.geometry.frames import edge_quaternion
from dpa4_core.geometry.radial import RadialBasis
from dpa4_core.geometry.wigner import real_spherical_harmonics, wigner_d
from dpa4_core.io.checkpoint import CheckpointError
from dpa4_core.io.deepmd import read_deepmd_checkpoint
from dpa4_core.io.deepmd_weights import (
    atomic_numbers,
    energy_offsets,
    radial_basis_scale,
    radial_frequencies,
    sh_signs,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"


@pytest.fixture(scope="module")
def deepmd_values() -> dict:
    return torch.load(FIXTURES / "dpa4_tiny_components.pt", weights_only=True)


@pytest.fixture(scope="module")
def checkpoint():
    return read_deepmd_checkpoint(FIXTURES / "dpa4_tiny.pt")


def _t(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def test_edge_frames_are_the_same_rotation_as_deepmd_poles_included(deepmd_values):
    vectors = _t(deepmd_values["edge_vectors"])
    theirs = _t(deepmd_values["edge_quaternion"])
    ours = edge_quaternion(vectors)
    # q and -q are the same rotation; compare each edge up to that sign
    error = torch.minimum((ours - theirs).abs().amax(dim=1), (ours + theirs).abs().amax(dim=1))
    assert error.max() < 1e-12
    assert vectors[:2, :2].abs().max() == 0  # the fixtures hold edges exactly along +z and -z


def test_wigner_d_maps_with_the_sign_per_m(deepmd_values):
    ours = wigner_d(edge_quaternion(_t(deepmd_values["edge_vectors"])), 4)
    for l, block in enumerate(deepmd_values["wigner_blocks"]):  # noqa: E741
        signs = sh_signs(l)
        theirs = _t(block)
        mapped = signs[:, None] * theirs * signs[None, :]
        assert (ours[l] - mapped).abs().max() < 1e-12, l
        if l:
            assert (ours[l] - theirs).abs().max() > 0.5  # the sign map is needed, not a no-op


def test_sign_map_is_the_documented_pattern_and_an_involution():
    assert sh_signs(1).tolist() == [1.0, 1.0, -1.0]
    assert sh_signs(2).tolist() == [-1.0, 1.0, 1.0, -1.0, 1.0]
    assert sh_signs(3).tolist() == [1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0]
    for l in range(7):  # noqa: E741
        assert torch.equal(sh_signs(l) * sh_signs(l), torch.ones(2 * l + 1, dtype=torch.float64))


def test_deepmd_spherical_harmonics_follow_from_the_sign_map(deepmd_values):
    # deepmd's Y_l(r_hat) is the m = 0 column of D^l(q)^T (unit norm); dpa4's real_spherical_harmonics are the
    # orthonormal ones, sqrt((2l+1)/(4 pi)) times that, with the sign map: Y_dpa4 = c_l S Y_deepmd.
    vectors = _t(deepmd_values["edge_vectors"])
    ours = real_spherical_harmonics(vectors / vectors.norm(dim=1, keepdim=True), 4)
    for l, block in enumerate(deepmd_values["wigner_blocks"]):  # noqa: E741
        theirs_y = _t(block)[:, l, :]  # row m = 0 of D = column m = 0 of D^T
        scale = math.sqrt((2 * l + 1) / (4 * math.pi))
        assert (ours[l] - scale * sh_signs(l) * theirs_y).abs().max() < 1e-12, l


def test_radial_basis_and_edge_envelope_equal_deepmd(deepmd_values, checkpoint):
    distances = _t(deepmd_values["distances"])
    cutoff = checkpoint.descriptor["rcut"]
    basis = RadialBasis(checkpoint.descriptor["n_radial"], cutoff).double()
    with torch.no_grad():
        basis.frequencies.copy_(radial_frequencies(checkpoint))
    theirs = _t(deepmd_values["radial_basis"])
    assert (basis(distances) * radial_basis_scale(cutoff) - theirs).abs().max() < 1e-13
    assert theirs.abs().max() > 0.5 and theirs[-1].abs().max() == 0  # nontrivial, and 0 beyond the cutoff
    envelope = polynomial_envelope(distances / cutoff, checkpoint.descriptor["env_exp"][1])
    assert (envelope - _t(deepmd_values["edge_envelope"])).abs().max() < 1e-15


def test_energy_offsets_are_what_deepmd_adds_per_type(deepmd_values, checkpoint):
    offsets = energy_offsets(checkpoint)
    measured = deepmd_values["energy_offset_by_symbol"]  # deepmd's atom energies with its output layer zeroed
    assert atomic_numbers(checkpoint) == [74, 41, 42]
    for symbol, number in zip(checkpoint.type_map, atomic_numbers(checkpoint)):
        assert offsets[number].item() == pytest.approx(measured[symbol], abs=1e-12)
    assert offsets.count_nonzero() == 3


def test_a_type_map_with_a_non_element_is_refused(checkpoint):
    from dataclasses import replace

    with pytest.raises(CheckpointError, match=r"not elements: \['Xx'\]"):
        atomic_numbers(replace(checkpoint, type_map=["W", "Xx", "Mo"]))


def test_block_norms_are_dpa4s_equivariant_rms_norm(deepmd_values, checkpoint):
    # deepmd's post-SO(2) norm (eps 1 with edge_norm off) and pre-FFN norm (eps 1e-5) on its own recorded inputs
    from dpa4_core.nn.norm import EquivariantRMSNorm

    stages = deepmd_values["intermediates"]["stages"]
    block = "atomic_model.descriptor.blocks.0."
    cases = [("post_so2_norm", 1.0, stages["descriptor.blocks.0.so2_conv"]),
             ("pre_ffn_norms.0", 1e-5,
              stages["descriptor.blocks.0:input"][:, :, 0] + stages["descriptor.blocks.0.post_so2_norm"][:, :, 0])]
    for name, eps, inputs in cases:
        norm = EquivariantRMSNorm(8, 2, eps=eps).double()
        with torch.no_grad():
            norm.scale.copy_(checkpoint.state_dict[block + name + ".adam_scale"][:, 0])
            norm.bias.copy_(checkpoint.state_dict[block + name + ".bias"][0])
            ours = norm(inputs)
        theirs = stages[f"descriptor.blocks.0.{name}"][:, :, 0]
        assert (ours - theirs).abs().max() < 1e-13, name
        assert theirs[:, 1:].abs().max() > 1e-3


def test_sphere_product_ffn_equals_deepmd_block_ffn(deepmd_values, checkpoint):
    from dpa4_core.io.deepmd_weights import map_ffn
    from dpa4_core.nn.ffn_s2 import SphereProductFFN

    stages = deepmd_values["intermediates"]["stages"]
    signs = torch.cat([sh_signs(l) for l in range(3)])[None, :, None]  # noqa: E741
    ffn = SphereProductFFN(8, 32, 2).double()
    map_ffn(checkpoint, ffn)
    with torch.no_grad():
        ours = ffn(signs * stages["descriptor.blocks.0.pre_ffn_norms.0"][:, :, 0])
    theirs = signs * stages["descriptor.blocks.0.ffns.0"][:, :, 0]
    assert theirs[:, 1:].abs().max() > 1e-3
    assert (ours - theirs).abs().max() < 1e-12
