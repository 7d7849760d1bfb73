"""The sphere-grid product FFN (dpa4_core.nn.ffn_s2, ``DPA4Config.ffn = "s2"``): rotation-equivariant to machine
precision (its quadrature is exact for the band-limited product) and usable in the model. Its equality with
deepmd-kit's block FFN is in tests/core/test_deepmd_weights.py."""

from __future__ import annotations

import pytest
import torch

from dpa4_core.config import ConfigError, DPA4Config
from dpa4_core.geometry.frames import edge_quaternion
from dpa4_core.geometry.wigner import wigner_d
from dpa4_core.nn.ffn_s2 import SphereProductFFN
from dpa4_core.testing import assert_rotation_equivariant, seeded_model

from _vendored import read_vendored


def _rotate(x: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    rows = [torch.einsum("mk,nkc->nmc", block, x[:, l * l:(l + 1) ** 2]) for l, block in enumerate(blocks)]  # noqa: E741
    return torch.cat(rows, dim=1)


@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_sphere_product_ffn_is_rotation_equivariant(lmax):
    torch.manual_seed(lmax)
    ffn = SphereProductFFN(6, 5, lmax).double()
    with torch.no_grad():
        for parameter in ffn.parameters():
            parameter.normal_()
    x = torch.randn(4, (lmax + 1) ** 2, 6, dtype=torch.float64)
    q = edge_quaternion(torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64))
    blocks = [block[0] for block in wigner_d(q, lmax)]
    with torch.no_grad():
        rotated_then = ffn(_rotate(x, blocks))
        then_rotated = _rotate(ffn(x), blocks)
    assert (rotated_then - then_rotated).abs().max() < 1e-12 * (1 + then_rotated.abs().max())
    assert then_rotated[:, 1:].abs().max() > 1e-2  # the equivariant part is not zero


def test_model_with_s2_ffn_is_rotation_equivariant():
    model = seeded_model(DPA4Config.preset("tiny", ffn="s2"), seed=4)
    assert_rotation_equivariant(model, read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=334), seed=3)


def test_unknown_ffn_is_refused():
    with pytest.raises(ConfigError, match="ffn must be one of .*'s2', 'so3_glu'"):
        DPA4Config(ffn="s3")
