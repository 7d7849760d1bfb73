"""Layer-level properties of dpa4_core/nn (spec sections 2-3), each in fp64 to 1e-12.

- the equivariant RMS norm and degree-wise linear maps commute with rotations (Wigner-D per degree);
- SO(2) layers and the degree coupling commute with rotations about z in the m-major kept layout (so the
  energy does not depend on the roll of the edge frames);
- the SO(3) quadrature of the bilinear FFN is exact (projection of a triple product equals a much finer grid)
  and the FFN is equivariant;
- the envelope-gated attention goes continuously to 0 as the last neighbour leaves (null mass);
- a fresh interaction block is the identity, and a randomised one is rotation-equivariant.
"""

from __future__ import annotations

import math

import pytest
import torch

from dpa4_core.geometry.edge_cache import build_edge_cache, truncated_wigner
from dpa4_core.layout import kept_layout
from dpa4_core.geometry.frames import z_rotation_quaternion
from dpa4_core.geometry.wigner import so3_quadrature, wigner_d
from dpa4_core.nn.attention import EnvelopeAttention
from dpa4_core.nn.block import InteractionBlock
from dpa4_core.nn.ffn import GatedFFN, WignerBilinearFFN, so3_grid_basis
from dpa4_core.nn.linear import DegreeLinear
from dpa4_core.nn.norm import EquivariantRMSNorm
from dpa4_core.nn.so2 import DegreeCoupling, SO2Stack

F64 = torch.float64
LMAX, MMAX = 3, 1


def random_quaternion(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 4, generator=g, dtype=F64)
    return q / q.norm()


def rotate_packed(x: torch.Tensor, q: torch.Tensor, lmax: int) -> torch.Tensor:
    """Apply D^l(q) to every degree of packed features ``x [N, (L+1)^2, C]``."""
    blocks = wigner_d(q, lmax)
    return torch.cat([torch.einsum("mk,nkc->nmc", d[0], x[:, l * l:(l + 1) ** 2]) for l, d in enumerate(blocks)], 1)


def randomise(module: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=F64))
    return module


def assert_equivariant(fn, x: torch.Tensor, lmax: int, seed: int = 3, rtol: float = 1e-12) -> None:
    q = random_quaternion(seed)
    expected = rotate_packed(fn(x), q, lmax)
    actual = fn(rotate_packed(x, q, lmax))
    scale = expected.abs().max()
    assert scale > 1e-3  # non-trivial output: the test can fail
    assert (actual - expected).abs().max() <= rtol * scale


def test_norm_and_degree_linear_are_equivariant():
    torch.manual_seed(0)
    x = torch.randn(5, (LMAX + 1) ** 2, 6, dtype=F64)
    for eps in (1e-6, 1.0):
        norm = randomise(EquivariantRMSNorm(6, LMAX, eps=eps).double(), seed=1)
        assert_equivariant(norm, x, LMAX)
    linear = randomise(DegreeLinear(6, 4, LMAX, bias=True).double(), seed=2)
    assert_equivariant(linear, x, LMAX)


def test_norm_weights_degrees_equally():
    norm = EquivariantRMSNorm(4, 2).double()
    x = torch.zeros(1, 9, 4, dtype=F64)
    x[0, 4:9] = 1.0  # only l = 2, all m and c: weighted mean square = 1 / (L + 1) = 1/3
    y = norm(x)
    assert y[0, 4:9].unique().item() == pytest.approx(math.sqrt(3) / math.sqrt(1 + 3e-6), rel=1e-12)


def _z_roll_kept(angle: torch.Tensor, lmax: int, mmax: int) -> torch.Tensor:
    """Rotation about z as a [E, K, K] matrix on the kept layout (truncation commutes with it)."""
    packed, _, _ = kept_layout(lmax, mmax)
    dense = truncated_wigner(z_rotation_quaternion(angle), lmax, mmax)  # [E, K, P]
    return dense[:, :, list(packed)]


def test_so2_stack_commutes_with_z_rotations():
    torch.manual_seed(0)
    n_edges, hidden = 7, 5
    stack = randomise(SO2Stack(hidden, LMAX, 2, n_layers=2).double(), seed=4)
    n_kept = len(kept_layout(LMAX, 2)[0])
    x = torch.randn(n_edges, n_kept, hidden, dtype=F64)
    roll = _z_roll_kept(torch.rand(n_edges, dtype=F64) * 2 * math.pi, LMAX, 2)
    assert not torch.allclose(roll, torch.eye(n_kept, dtype=F64))
    expected = roll @ stack(x)
    actual = stack(roll @ x)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 2])
def test_degree_coupling_commutes_with_z_rotations_and_mixes_only_degrees(rank):
    torch.manual_seed(0)
    n_edges, hidden = 6, 4
    coupling = randomise(DegreeCoupling(5, hidden, LMAX, 2, rank).double(), seed=8)
    n_kept = len(kept_layout(LMAX, 2)[0])
    x = torch.randn(n_edges, n_kept, hidden, dtype=F64)
    rho0 = torch.randn(n_edges, 5, dtype=F64)
    roll = _z_roll_kept(torch.rand(n_edges, dtype=F64) * 2 * math.pi, LMAX, 2)
    torch.testing.assert_close(coupling(roll @ x, rho0), roll @ coupling(x, rho0), rtol=1e-12, atol=1e-12)
    # rows of different signed order m never mix
    _, _, orders = kept_layout(LMAX, 2)
    orders = torch.tensor(orders)
    matrix = coupling.matrix(rho0)
    assert torch.all(matrix[:, :, orders[:, None] != orders[None, :]] == 0)
    assert matrix[:, :, orders[:, None] == orders[None, :]].abs().min() > 0


def test_quadrature_is_exact_for_triple_products():
    basis, projection, n_k = so3_grid_basis(LMAX, 1)
    assert basis.shape[0] == 38 * 4  # Lebedev order 9 times 4 roll angles
    torch.testing.assert_close(projection @ basis, torch.eye(basis.shape[1], dtype=F64), rtol=0, atol=1e-12)
    # reference: a much finer grid (Lebedev order 15, 7 rolls) projecting the same product
    q_fine, w_fine = so3_quadrature(7, 1, n_roll=7)
    fine = [d[:, :, l - min(l, 1):l + min(l, 1) + 1].reshape(q_fine.shape[0], -1) for l, d in enumerate(wigner_d(q_fine, LMAX))]
    fine_basis = torch.cat(fine, 1)
    scale = torch.cat([torch.full(((2 * l + 1) * nk,), 2.0 * l + 1, dtype=F64) for l, nk in enumerate(n_k)])
    fine_projection = (scale[:, None] * fine_basis.T) * w_fine[None, :]
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(2, basis.shape[1], 3, generator=g, dtype=F64)
    coarse = projection @ ((basis @ u) * (basis @ v))
    reference = fine_projection @ ((fine_basis @ u) * (fine_basis @ v))
    torch.testing.assert_close(coarse, reference, rtol=0, atol=1e-12)
    assert reference.abs().max() > 0.1


@pytest.mark.parametrize("kind", ["bilinear", "gated"])
def test_ffn_is_equivariant(kind):
    torch.manual_seed(0)
    ffn = WignerBilinearFFN(6, 8, LMAX, kmax=1) if kind == "bilinear" else GatedFFN(6, 8, LMAX)
    ffn = randomise(ffn.double(), seed=5)
    x = torch.randn(4, (LMAX + 1) ** 2, 6, dtype=F64)
    assert_equivariant(ffn, x, LMAX)


def test_fresh_ffn_outputs_zero():
    x = torch.randn(3, (LMAX + 1) ** 2, 6, dtype=F64)
    for ffn in (WignerBilinearFFN(6, 8, LMAX).double(), GatedFFN(6, 8, LMAX).double()):
        assert torch.equal(ffn(x), torch.zeros_like(x))


def test_attention_is_continuous_as_the_last_neighbour_leaves():
    torch.manual_seed(0)
    attention = randomise(EnvelopeAttention(6, 6, heads=2, dim=3).double(), seed=6)
    scalars = torch.randn(3, 6, dtype=F64)
    rho0 = torch.randn(2, 6, dtype=F64)
    src, dst = torch.tensor([1, 2]), torch.tensor([0, 0])
    weights = []
    for a in (1e-2, 1e-4, 1e-6, 0.0):
        w = attention(scalars, rho0, torch.tensor([0.7, a], dtype=F64), src, dst)
        weights.append(w)
        assert torch.all(w.sum(0) < 1)  # the null mass takes the rest
    # weight of the leaving edge is proportional to its envelope factor, exactly 0 at 0
    ratios = [weights[i][1] / a for i, a in enumerate((1e-2, 1e-4, 1e-6))]
    torch.testing.assert_close(ratios[1], ratios[2], rtol=1e-3, atol=0)
    assert torch.equal(weights[-1][1], torch.zeros(2, dtype=F64))
    torch.testing.assert_close(weights[2][0], weights[3][0], rtol=1e-5, atol=0)  # the other weight is continuous
    # the last neighbour leaving: only envelope -> 0, weight -> 0 (no 0/0, no jump to 1 as in plain softmax)
    w_last = attention(scalars, rho0[:1], torch.tensor([1e-8], dtype=F64), src[:1], dst[:1])
    assert torch.all(w_last < 1e-7)


def _graph(seed: int = 0, n_atoms: int = 6):
    g = torch.Generator().manual_seed(seed)
    positions = 2.5 * torch.rand(n_atoms, 3, generator=g, dtype=F64)
    src, dst = torch.meshgrid(torch.arange(n_atoms), torch.arange(n_atoms), indexing="ij")
    keep = src != dst
    src, dst = src[keep], dst[keep]
    return positions, src, dst


def _block_on(positions, src, dst, block, x, q=None, mmax=MMAX):
    vec = positions[src] - positions[dst]
    if q is not None:
        from dpa4_core.geometry.frames import quaternion_to_matrix

        vec = vec @ quaternion_to_matrix(q)[0].T
    cache = build_edge_cache(vec, src, dst, positions.shape[0], cutoff=4.0, r_in=0.5, r_out=0.8, lmax=LMAX, mmax=mmax)
    rho0 = torch.sin(cache.length)[:, None] * torch.arange(1, 7, dtype=F64) * cache.envelope[:, None]
    return block(x, cache, rho0)


@pytest.mark.parametrize("rank,mmax", [(1, 1), (2, 2)])
def test_fresh_block_is_identity_and_random_block_is_equivariant(rank, mmax):
    torch.manual_seed(0)
    positions, src, dst = _graph()
    block = InteractionBlock(6, 4, LMAX, mmax, so2_layers=2, rank=rank, heads=2, attn_dim=3, ffn="bilinear",
                             ffn_hidden=8, kmax=1).double()
    x = torch.randn(positions.shape[0], (LMAX + 1) ** 2, 6, dtype=F64)
    assert torch.equal(_block_on(positions, src, dst, block, x, mmax=mmax), x)
    randomise(block, seed=7)
    q = random_quaternion(11)
    out = _block_on(positions, src, dst, block, x, mmax=mmax)
    rotated = _block_on(positions, src, dst, block, rotate_packed(x, q, LMAX), q=q, mmax=mmax)
    expected = rotate_packed(out, q, LMAX)
    assert (out - x).abs().max() > 1e-2
    assert (rotated - expected).abs().max() <= 1e-11 * expected.abs().max()
