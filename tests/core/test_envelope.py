"""Envelopes, zone bridging and the source gate (dpa4_core/geometry/envelope.py, spec section 1).

Checks the C^3 envelope against an independent closed form (a regularised incomplete beta function), its
behaviour at both ends, the C^3 joins of the zone bridging, and the source gate against a direct product,
including its gradients when a factor is exactly zero.
"""

from __future__ import annotations

import math
import numpy as np
import pytest
import torch
from scipy.special import betainc

from dpa4_core.geometry.envelope import bridged_distance, polynomial_envelope, smoothstep7, source_gate

R_IN, R_OUT = 0.5, 0.8


def _derivatives(fn, x: torch.Tensor, order: int) -> list[torch.Tensor]:
    """Values of fn and its first ``order`` derivatives at the points x (elementwise functions only)."""
    x = x.clone().requires_grad_(True)
    out = [fn(x)]
    for _ in range(order):
        (grad,) = torch.autograd.grad(out[-1].sum(), x, create_graph=True)
        out.append(grad)
    return [o.detach() for o in out]


@pytest.mark.parametrize("p", [5, 7])
def test_envelope_equals_incomplete_beta(p):
    # (1-x)^4 sum_{k<p} C(k+3,3) x^k is the negative-binomial CDF I_{1-x}(4, p): an independent closed form.
    x = np.linspace(0.0, 1.0, 41)
    expected = betainc(4, p, 1.0 - x)
    actual = polynomial_envelope(torch.tensor(x), p).numpy()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("p", [5, 7])
def test_envelope_is_c3_at_the_cutoff_and_zero_beyond(p):
    # Just inside the cutoff E ~ C(p+3, 4) h^4, so the k-th derivative is at most 24 C(p+3, 4) h^(4-k) (times a
    # little for the neighbouring terms); beyond the cutoff everything is exactly 0.
    bound = 30 * math.comb(p + 3, 4)
    for h in (1e-2, 1e-3):
        values = _derivatives(lambda x: polynomial_envelope(x, p), torch.tensor([1.0 - h], dtype=torch.float64), 4)
        for k in range(4):
            assert abs(values[k].item()) < bound * h ** (4 - k), (k, h, values[k].item())
        assert abs(values[4].item()) > 1.0  # the 4th derivative does not vanish: exactly C^3, the test can fail
    beyond = _derivatives(lambda x: polynomial_envelope(x, p), torch.tensor([1.0, 1.3, 7.0], dtype=torch.float64), 3)
    for v in beyond:
        assert torch.equal(v, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("p", [5, 7])
def test_envelope_is_flat_at_zero(p):
    # E_p(x) = 1 - O(x^p): halving x divides 1 - E_p by 2^p.
    x = torch.tensor([1e-2, 5e-3], dtype=torch.float64)
    deficit = 1.0 - polynomial_envelope(x, p)
    assert polynomial_envelope(torch.zeros(1, dtype=torch.float64), p).item() == 1.0
    assert deficit[0] / deficit[1] == pytest.approx(2.0**p, rel=0.02)


def test_bridged_distance_ends_and_c3_joins():
    r = torch.tensor([0.1, 0.3, 0.5, 0.8, 1.0, 3.0], dtype=torch.float64)
    out = bridged_distance(r, R_IN, R_OUT)
    np.testing.assert_allclose(out.numpy(), [0.5, 0.5, 0.5, 0.8, 1.0, 3.0], atol=1e-15)
    inner = torch.linspace(R_IN, R_OUT, 50, dtype=torch.float64)
    values = bridged_distance(inner, R_IN, R_OUT)
    assert torch.all(values[1:] >= values[:-1])  # monotone
    for joint, slope in ((R_IN, 0.0), (R_OUT, 1.0)):
        for side in (-1e-7, 1e-7):
            d = _derivatives(lambda x: bridged_distance(x, R_IN, R_OUT), torch.tensor([joint + side], dtype=torch.float64), 3)
            assert d[1].item() == pytest.approx(slope, abs=1e-5)
            assert abs(d[2].item()) < 1e-4 and abs(d[3].item()) < 1e-2 + 1e3 * abs(side)


def test_smoothstep7_is_c3_at_both_ends():
    for t0, value in ((0.0, 0.0), (1.0, 1.0)):
        d = _derivatives(smoothstep7, torch.tensor([t0], dtype=torch.float64), 3)
        assert d[0].item() == pytest.approx(value, abs=1e-15)
        assert all(abs(v.item()) < 1e-12 for v in d[1:])


def _pairs(lengths):
    """Symmetric neighbour list of atom 0 with atoms 1..n at the given distances (both directions)."""
    n = len(lengths)
    src = torch.tensor(list(range(1, n + 1)) + [0] * n)
    dst = torch.tensor([0] * n + list(range(1, n + 1)))
    r = torch.tensor(list(lengths) * 2, dtype=torch.float64)
    return r, src, dst, n + 1


def test_source_gate_is_the_product_of_switches():
    r, src, dst, n_atoms = _pairs([0.55, 0.62, 0.75, 2.0, 7.0])
    eta = source_gate(r, dst, n_atoms, R_IN, R_OUT)
    t = ((r - R_IN) / (R_OUT - R_IN)).clamp(0, 1)
    w = 35 * t**4 - 84 * t**5 + 70 * t**6 - 20 * t**7
    expected = torch.ones(n_atoms, dtype=torch.float64)
    for e in range(len(r)):
        expected[dst[e]] *= w[e]
    torch.testing.assert_close(eta, expected, rtol=1e-13, atol=0)
    assert 0 < eta[0] < 1 and eta[4] == 1.0  # atom 4 (2 A away) is only gated by atom 0's edge: w = 1


def test_source_gate_zero_factor_gives_zero_with_finite_gradients():
    r, src, dst, n_atoms = _pairs([0.3, 0.9, 1.5])
    r = r.clone().requires_grad_(True)
    eta = source_gate(r, dst, n_atoms, R_IN, R_OUT)
    assert eta[0].item() == 0.0 and eta[1].item() == 0.0  # the pair at 0.3 A < r_in switches both off
    assert eta[2].item() == 1.0
    (grad,) = torch.autograd.grad(eta.sum(), r)
    assert torch.isfinite(grad).all()


def test_source_gate_second_derivatives():
    r, src, dst, n_atoms = _pairs([0.52, 0.7, 0.79, 1.2])
    r = r.clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x: source_gate(x, dst, n_atoms, R_IN, R_OUT), (r,))
