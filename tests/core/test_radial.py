"""Sinc radial basis and radial features (dpa4_core/geometry/radial.py, spec section 1)."""

from __future__ import annotations

import math

import numpy as np
import torch

from dpa4_core.geometry.envelope import polynomial_envelope
from dpa4_core.geometry.radial import RadialBasis, RadialEmbedding

CUTOFF = 6.0


def test_basis_matches_sin_over_r_and_is_finite_at_zero():
    basis = RadialBasis(8, CUTOFF).double()
    r = torch.tensor([0.0, 1e-9, 0.7, 2.3, 5.9], dtype=torch.float64)
    phi = basis(r)
    n = torch.arange(1, 9, dtype=torch.float64)
    w = basis.frequencies.detach()
    torch.testing.assert_close(w, n * math.pi / CUTOFF, rtol=1e-7, atol=0)  # initialised to n pi / r_c
    expected = math.sqrt(2 / CUTOFF) * torch.sin(w * r[2:, None]) / r[2:, None] * polynomial_envelope(r[2:] / CUTOFF, 7)[:, None]
    torch.testing.assert_close(phi[2:], expected, rtol=1e-12, atol=1e-14)
    # r -> 0: sin(w r)/r -> w
    torch.testing.assert_close(phi[0], math.sqrt(2 / CUTOFF) * w, rtol=1e-12, atol=0)
    torch.testing.assert_close(phi[1], phi[0], rtol=1e-9, atol=0)
    r0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(basis(r0).sum(), r0)
    assert torch.isfinite(g).all()


def test_basis_frequencies_are_learnable():
    basis = RadialBasis(4, CUTOFF).double()
    r = torch.tensor([1.0, 2.0], dtype=torch.float64)
    basis(r).sum().backward()
    assert basis.frequencies.grad is not None and basis.frequencies.grad.abs().sum() > 0


def test_radial_features_vanish_beyond_cutoff_with_zero_gradient():
    torch.manual_seed(0)
    embed = RadialEmbedding(8, 16, lmax=2, channels=5, cutoff=CUTOFF).double()
    r = torch.tensor([1.0, 5.99, 6.0, 6.5], dtype=torch.float64, requires_grad=True)
    env = polynomial_envelope(r / CUTOFF, 5)
    z = torch.tensor([14, 8, 1, 74])
    phi, rho = embed(r, env, z, z.flip(0))
    assert rho.shape == (4, 3, 5) and phi.shape == (4, 8)
    assert rho[0].abs().sum() > 0  # control: inside the cutoff the features are non-zero
    assert rho[1].abs().max() < 1e-8  # C^3 approach: (1 - x)^4 ~ 8e-13 times O(1) weights
    assert torch.equal(rho[2:], torch.zeros_like(rho[2:]))
    (g,) = torch.autograd.grad(rho.sum(), r)
    assert g[0] != 0 and torch.equal(g[2:], torch.zeros(2, dtype=torch.float64))


def test_radial_features_gradcheck():
    torch.manual_seed(1)
    embed = RadialEmbedding(6, 8, lmax=1, channels=3, cutoff=CUTOFF).double()
    z = torch.tensor([6, 8, 26])
    r = torch.tensor([0.9, 3.1, 5.7], dtype=torch.float64, requires_grad=True)
    fn = lambda x: embed(x, polynomial_envelope(x / CUTOFF, 5), z, z)[1]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (r,))
    assert torch.autograd.gradgradcheck(fn, (r,))
    assert np.isfinite(fn(r).detach().numpy()).all()
