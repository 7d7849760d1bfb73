"""Real spherical harmonics, Wigner-D blocks and the SO(3) quadrature (dpa4_core.geometry.wigner).

Properties, each independent of how D is computed: spherical harmonics orthonormal (exact Lebedev quadrature) with
the documented l = 1 order; D orthogonal, a representation (composition, identity, inverse = transpose), equal to
the permuted rotation matrix for l = 1, and satisfying Y_l(R x) = D^l Y_l(x) to 1e-10 for l <= 6; the m = 0 row of
an edge frame's D is the edge's harmonic; fp32 agrees with fp64; twice differentiable; traces with make_fx. The
quadrature integrates D^l_mk D^l'_m'k' to delta/(2l+1) and band-limited products as exactly as a much finer grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import lebedev_rule
from torch.fx.experimental.proxy_tensor import make_fx

from dpa4_core.geometry.frames import edge_quaternion, quaternion_conjugate, quaternion_multiply, quaternion_to_matrix
from dpa4_core.geometry.wigner import (
    MAX_L,
    WignerInputError,
    real_spherical_harmonics,
    so3_quadrature,
    wigner_d,
)

F64 = torch.float64
PERM = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)  # (x, y, z) -> (y, z, x)


def _random_quaternions(n: int, seed: int, dtype=F64) -> torch.Tensor:
    q = torch.randn(n, 4, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return (q / q.norm(dim=-1, keepdim=True)).to(dtype)


def _random_units(n: int, seed: int) -> torch.Tensor:
    v = torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=-1, keepdim=True)


def _eye(l: int, n: int) -> torch.Tensor:
    return torch.eye(2 * l + 1, dtype=F64).expand(n, -1, -1)


# ------------------------------------------------------------------ spherical harmonics


def test_spherical_harmonics_orthonormal():
    points, weights = lebedev_rule(17)  # exact for degree <= 17 > 2 * 6
    n = torch.as_tensor(points.T, dtype=F64)
    w = torch.as_tensor(weights, dtype=F64)
    assert w.sum().item() == pytest.approx(4 * math.pi)
    y = torch.cat(real_spherical_harmonics(n, MAX_L), dim=-1)  # [P, 49]
    gram = y.T @ (w[:, None] * y)
    assert torch.allclose(gram, torch.eye(y.shape[1], dtype=F64), atol=1e-12)


def test_spherical_harmonics_l1_order_and_values():
    u = _random_units(20, 0)
    y = real_spherical_harmonics(u, 2)
    assert [t.shape for t in y] == [(20, 1), (20, 3), (20, 5)]
    assert torch.allclose(y[0], torch.full((20, 1), 0.5 / math.sqrt(math.pi), dtype=F64))
    assert torch.allclose(y[1], math.sqrt(3 / (4 * math.pi)) * u[:, [1, 2, 0]], atol=1e-15)
    # independent closed form for l = 2, m = 0 and m = 2
    x, yy, z = u.unbind(-1)
    assert torch.allclose(y[2][:, 2], math.sqrt(5 / (16 * math.pi)) * (3 * z**2 - 1), atol=1e-14)
    assert torch.allclose(y[2][:, 4], math.sqrt(15 / (16 * math.pi)) * (x**2 - yy**2), atol=1e-14)
    assert torch.allclose(y[2][:, 0], math.sqrt(15 / (4 * math.pi)) * x * yy, atol=1e-14)


# ------------------------------------------------------------------ Wigner-D: representation properties


def test_rotates_spherical_harmonics_all_degrees():
    q = _random_quaternions(64, 1)
    x = _random_units(64, 2)
    rx = (quaternion_to_matrix(q) @ x.unsqueeze(-1)).squeeze(-1)
    blocks = wigner_d(q, MAX_L)
    y_x, y_rx = real_spherical_harmonics(x, MAX_L), real_spherical_harmonics(rx, MAX_L)
    for l in range(MAX_L + 1):
        assert blocks[l].shape == (64, 2 * l + 1, 2 * l + 1)
        assert torch.allclose(y_rx[l], (blocks[l] @ y_x[l].unsqueeze(-1)).squeeze(-1), atol=1e-10), l


def test_orthogonal_and_identity():
    q = _random_quaternions(64, 3)
    for l, d in enumerate(wigner_d(q, MAX_L)):
        assert torch.allclose(d @ d.transpose(1, 2), _eye(l, 64), atol=1e-10)
        assert torch.allclose(torch.linalg.det(d), torch.ones(64, dtype=F64), atol=1e-9)
    identity = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]], dtype=F64)  # q and -q
    for l, d in enumerate(wigner_d(identity, MAX_L)):
        assert torch.allclose(d, _eye(l, 2), atol=1e-12)


def test_composition_inverse_and_sign():
    a, b = _random_quaternions(32, 4), _random_quaternions(32, 5)
    da, db, dab = wigner_d(a, MAX_L), wigner_d(b, MAX_L), wigner_d(quaternion_multiply(a, b), MAX_L)
    d_inv, d_neg = wigner_d(quaternion_conjugate(a), MAX_L), wigner_d(-a, MAX_L)
    for l in range(MAX_L + 1):
        assert torch.allclose(dab[l], da[l] @ db[l], atol=1e-10)
        assert torch.allclose(d_inv[l], da[l].transpose(1, 2), atol=1e-10)
        assert torch.allclose(d_neg[l], da[l], atol=1e-12)


def test_l1_is_permuted_rotation_matrix():
    q = _random_quaternions(32, 6)
    assert torch.allclose(wigner_d(q, 1)[1], PERM @ quaternion_to_matrix(q) @ PERM.T, atol=1e-13)


def test_edge_frame_row_m0_is_edge_harmonic():
    """D^l(q_edge)[m=0, :] = D^l(q_edge)^T[:, m=0] = sqrt(4 pi / (2l+1)) Y_l(r_hat), the initial embedding."""
    v = torch.cat([_random_units(40, 7) * 2.5, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -2.0]], dtype=F64)])
    blocks = wigner_d(edge_quaternion(v), MAX_L)
    harmonics = real_spherical_harmonics(v / v.norm(dim=-1, keepdim=True), MAX_L)
    for l in range(MAX_L + 1):
        assert torch.allclose(blocks[l][:, l, :], math.sqrt(4 * math.pi / (2 * l + 1)) * harmonics[l], atol=1e-12)


def test_every_point_set_exact_and_well_conditioned():
    """wigner_d(q, lmax) uses its own 2 lmax + 1 points per lmax: every set must give the same exact blocks, and
    its Y_l(P) must stay well conditioned (this bounds the fp32 error)."""
    from dpa4_core.geometry.wigner import _point_constants, _sh_numpy

    q = _random_quaternions(16, 11)
    reference = wigner_d(q, MAX_L)
    for lmax in range(1, MAX_L + 1):
        points = _point_constants(lmax)[0]
        assert points.shape == (2 * lmax + 1, 3)
        for l, d in enumerate(wigner_d(q, lmax)):
            assert torch.allclose(d, reference[l], atol=1e-12), (lmax, l)
            assert np.linalg.cond(_sh_numpy(points, l)) < 3.5, (lmax, l)


def test_mmax_rows_match_full_blocks():
    q = _random_quaternions(16, 8)
    full = wigner_d(q, MAX_L)
    for mmax in (0, 1, 2):
        rows = wigner_d(q, MAX_L, mmax=mmax)
        for l in range(MAX_L + 1):
            m = min(l, mmax)
            assert torch.allclose(rows[l], full[l][:, l - m : l + m + 1, :], atol=1e-14)


def test_fp32_matches_fp64():
    v = torch.cat([_random_units(64, 9) * 3.0, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=F64)])
    d64 = wigner_d(edge_quaternion(v), MAX_L)
    d32 = wigner_d(edge_quaternion(v.float()), MAX_L)
    for a, b in zip(d32, d64):
        assert a.dtype == torch.float32
        assert torch.allclose(a.double(), b, atol=1e-5)


def test_autocast_does_not_lower_precision():
    v = _random_units(32, 12) * 2.0
    reference = wigner_d(edge_quaternion(v), 4)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        blocks = wigner_d(edge_quaternion(v.float()), 4)
    for a, b in zip(blocks, reference):
        assert a.dtype == torch.float32
        assert torch.allclose(a.double(), b, atol=1e-5)


def test_empty_edges():
    blocks = wigner_d(torch.zeros(0, 4), 3)
    assert [tuple(b.shape) for b in blocks] == [(0, 2 * l + 1, 2 * l + 1) for l in range(4)]


def test_twice_differentiable():
    v = torch.tensor([[0.3, -0.4, 1.2], [0.0, 0.0, 1.0], [0.0, 0.0, -0.8]], dtype=F64)
    v.requires_grad_(True)

    def fn(x):
        return torch.cat([d.flatten(1) for d in wigner_d(edge_quaternion(x), 2)], dim=1)

    assert torch.autograd.gradcheck(fn, (v,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(fn, (v,), eps=1e-6, atol=1e-5)


def test_make_fx_symbolic_two_edge_counts():
    def fn(v):
        return wigner_d(edge_quaternion(v), 3)

    traced = make_fx(fn, tracing_mode="symbolic")(torch.randn(7, 3))
    for n in (5, 23):
        v = torch.randn(n, 3, generator=torch.Generator().manual_seed(n))
        for a, b in zip(traced(v), fn(v)):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)


def test_bad_input_raises():
    with pytest.raises(WignerInputError, match="lmax"):
        wigner_d(_random_quaternions(2, 0), MAX_L + 1)
    with pytest.raises(WignerInputError, match="lmax"):
        wigner_d(_random_quaternions(2, 0), -1)
    with pytest.raises(WignerInputError, match=r"\[E, 4\]"):
        wigner_d(torch.zeros(3, 3), 2)
    with pytest.raises(WignerInputError, match="bfloat16"):
        wigner_d(torch.zeros(3, 4, dtype=torch.bfloat16), 2)
    with pytest.raises(WignerInputError, match="n_roll"):
        so3_quadrature(2, 1, n_roll=2)
    with pytest.raises(WignerInputError, match="kmax"):
        so3_quadrature(2, 3)
    # Callers that catch ValueError see the same message.
    with pytest.raises(ValueError, match=rf"lmax must be an int in .*got {MAX_L + 1}"):
        wigner_d(_random_quaternions(2, 0), MAX_L + 1)


# ------------------------------------------------------------------ SO(3) quadrature


@pytest.mark.parametrize("lmax,kmax", [(3, 1), (4, 2), (6, 1)])
def test_quadrature_orthogonality(lmax, kmax):
    q, w = so3_quadrature(lmax, kmax)
    assert q.shape[0] == w.shape[0] and w.sum().item() == pytest.approx(1.0, abs=1e-14)
    assert torch.all(w > 0)
    # all D^l_mk with |k| <= kmax as columns of one matrix, scaled so the Gram matrix should be the identity
    cols = []
    for l, d in enumerate(wigner_d(q, lmax)):
        k = min(l, kmax)
        cols.append(math.sqrt(2 * l + 1) * d[:, :, l - k : l + k + 1].flatten(1))
    f = torch.cat(cols, dim=1)
    gram = f.T @ (w[:, None] * f)
    assert torch.allclose(gram, torch.eye(f.shape[1], dtype=F64), atol=1e-12)


def _band_limited(q: torch.Tensor, coeffs: list[torch.Tensor], kmax: int) -> torch.Tensor:
    """f(g) = sum_l sum_{m, |k|<=kmax} u^l_mk D^l_mk(g)."""
    out = 0.0
    for l, d in enumerate(wigner_d(q, len(coeffs) - 1)):
        k = min(l, kmax)
        out = out + (d[:, :, l - k : l + k + 1] * coeffs[l]).sum((1, 2))
    return out


@pytest.mark.parametrize("lmax,kmax", [(3, 1), (5, 2)])
def test_quadrature_exact_for_products(lmax, kmax):
    g = torch.Generator().manual_seed(10 + lmax)

    def coeffs():
        return [torch.randn(2 * l + 1, 2 * min(l, kmax) + 1, dtype=F64, generator=g) for l in range(lmax + 1)]

    u_left, u_right, u_out = coeffs(), coeffs(), coeffs()
    fine_q, fine_w = so3_quadrature(MAX_L, MAX_L, n_factors=3, n_roll=25)  # much finer, exact a fortiori

    def integral(q, w, factors):
        return (w * torch.stack([_band_limited(q, u, kmax) for u in factors]).prod(0)).sum()

    q, w = so3_quadrature(lmax, kmax)
    assert q.shape[0] < fine_q.shape[0] / 4
    pair = integral(q, w, [u_left, u_right])
    assert pair.item() == pytest.approx(integral(fine_q, fine_w, [u_left, u_right]).item(), abs=1e-12)
    # analytic value from Schur orthogonality: sum u_L * u_R / (2l+1)
    analytic = sum((a * b).sum() / (2 * l + 1) for l, (a, b) in enumerate(zip(u_left, u_right)))
    assert pair.item() == pytest.approx(analytic.item(), abs=1e-12)
    # the FFN's projection is a triple product: n_factors=3
    q3, w3 = so3_quadrature(lmax, kmax, n_factors=3)
    triple = integral(q3, w3, [u_left, u_right, u_out])
    assert triple.item() == pytest.approx(integral(fine_q, fine_w, [u_left, u_right, u_out]).item(), abs=1e-12)
    # control: the pair grid is too coarse for the triple product (so the comparison can fail)
    assert abs(integral(q, w, [u_left, u_right, u_out]) - triple).item() > 1e-6


def test_quadrature_dtype_and_unit_quaternions():
    q, w = so3_quadrature(3, 1, dtype=torch.float32)
    assert q.dtype == w.dtype == torch.float32
    assert np.allclose(q.norm(dim=-1).numpy(), 1.0, atol=1e-6)
    assert q.shape == (26 * 3, 4)  # Lebedev order 7 (26 points) x 3 roll angles
