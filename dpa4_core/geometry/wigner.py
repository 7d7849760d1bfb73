"""Real spherical harmonics, real Wigner-D matrices from quaternions, and an exact SO(3) quadrature (spec 1, 2, 4).

Conventions (used by every other module):

* Real spherical harmonics ``Y_lm``, ``m = -l..l`` in that order, orthonormal on the unit sphere
  (``int Y_lm Y_l'm' dOmega = delta``), no Condon-Shortley phase: ``Y_l,m>0 ~ cos(m phi)``, ``Y_l,m<0 ~ sin(|m| phi)``,
  so ``Y_1 = sqrt(3 / (4 pi)) (y, z, x)``.
* ``D^l(q)`` is the real orthogonal ``(2l+1) x (2l+1)`` matrix with ``Y_l(R x) = D^l(q) @ Y_l(x)`` for
  ``R = quaternion_to_matrix(q)``. It is a representation, ``D(q1 q2) = D(q1) D(q2)``, ``D(q*) = D(q)^T``, and
  ``D^1 = P R P^T`` with ``P`` the permutation ``(x, y, z) -> (y, z, x)``.
* ``D^l`` is a homogeneous polynomial of degree ``2l`` in ``(w, x, y, z)`` (so ``D(-q) = D(q)``). Its
  coefficients over the ``C(2l+3, 3)`` monomials are fitted once per ``l`` in fp64 NumPy (least squares against
  ``D(R) = Y(R P) pinv(Y(P))`` on spread points ``P``; exact to ~1e-14), cached, and evaluated as
  ``monomials(q) @ coefficients``: a few elementwise products plus one matrix product per ``l``, twice
  differentiable, no control flow on values, traceable with ``make_fx(tracing_mode="symbolic")``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

from dpa4_core.geometry.frames import edge_quaternion, quaternion_conjugate, quaternion_multiply

__all__ = [
    "MAX_L",
    "WignerInputError",
    "real_spherical_harmonics",
    "so3_quadrature",
    "wigner_d",
]

MAX_L = 6
_FIT_SEED = 20260602  # fixed: the fit is deterministic across processes


class WignerInputError(ValueError):
    """Bad degree, shape or dtype passed to a function of this module."""


def _check_lmax(lmax: int, upper: int | None = None, name: str = "lmax") -> None:
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0 or (upper is not None and lmax > upper):
        allowed = f"0..{upper}" if upper is not None else ">= 0"
        raise WignerInputError(f"{name} must be an int in {allowed}, got {lmax!r}")


# ---------------------------------------------------------------------------------------------------------------
# Real spherical harmonics (works on NumPy arrays and torch tensors alike: only + and * on x, y, z)
# ---------------------------------------------------------------------------------------------------------------


def _sh_components(x, y, z, lmax: int) -> list[list]:
    """Per degree the list of ``2l+1`` arrays ``Y_l,-l .. Y_l,l`` for unit ``(x, y, z)``.

    ``Y_l,+-m = N_lm P_l^m(z) {cos, sin}(m phi) sin^m(theta)`` with ``P_l^m`` the m-th derivative of the Legendre
    polynomial (no ``(1-z^2)^(m/2)`` factor) and ``Re/Im (x + i y)^m`` supplying ``cos/sin(m phi) sin^m(theta)``:
    everything stays a polynomial, so it is exact and smooth at the poles.
    """
    # cos_m[m] + i sin_m[m] = (x + i y)^m
    cos_m, sin_m = [1.0], [0.0]
    for m in range(1, lmax + 1):
        c, s = cos_m[-1], sin_m[-1]
        cos_m.append(x * c - y * s)
        sin_m.append(x * s + y * c)
    # legendre[l][m] = d^m P_l / dz^m via the three-term recurrence in l at fixed m
    legendre = [[None] * (lmax + 1) for _ in range(lmax + 1)]
    for m in range(lmax + 1):
        legendre[m][m] = float(math.prod(range(1, 2 * m, 2)))  # (2m-1)!!
        if m + 1 <= lmax:
            legendre[m + 1][m] = (2 * m + 1) * z * legendre[m][m]
        for l in range(m + 2, lmax + 1):
            legendre[l][m] = ((2 * l - 1) * z * legendre[l - 1][m] - (l + m - 1) * legendre[l - 2][m]) / (l - m)
    out = []
    for l in range(lmax + 1):
        row = [None] * (2 * l + 1)
        for m in range(l + 1):
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
            if m == 0:
                row[l] = norm * legendre[l][0] + 0.0 * z  # keep array type for l = 0
            else:
                norm *= math.sqrt(2.0)
                row[l + m] = norm * legendre[l][m] * cos_m[m]
                row[l - m] = norm * legendre[l][m] * sin_m[m]
        out.append(row)
    return out


def real_spherical_harmonics(unit_vec: Tensor, lmax: int) -> list[Tensor]:
    """Orthonormal real spherical harmonics of a unit vector.

    Args:
        unit_vec: ``[..., 3]`` unit vectors (not renormalised: the polynomials are evaluated as given).
        lmax: highest degree, ``>= 0``.

    Returns:
        List over ``l = 0..lmax`` of ``[..., 2l+1]`` tensors ordered ``m = -l..l``; ``Y_0 = 1/sqrt(4 pi)``,
        ``Y_1 = sqrt(3/(4 pi)) (y, z, x)``. ``Y_l(e_z) = sqrt((2l+1)/(4 pi)) delta_m0``.
    """
    _check_lmax(lmax)
    if unit_vec.ndim < 1 or unit_vec.shape[-1] != 3 or not unit_vec.is_floating_point():
        raise WignerInputError(f"unit_vec must be a float tensor [..., 3], got {tuple(unit_vec.shape)} {unit_vec.dtype}")
    x, y, z = unit_vec.unbind(-1)
    return [torch.stack(row, dim=-1) for row in _sh_components(x, y, z, lmax)]


def _sh_numpy(points: np.ndarray, l: int) -> np.ndarray:
    """``Y_l`` of ``points [..., 3]`` as ``[..., 2l+1]`` (fp64 NumPy)."""
    rows = _sh_components(points[..., 0], points[..., 1], points[..., 2], l)
    return np.stack(rows[l], axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# Monomials of the quaternion and the fitted Wigner-D coefficients
# ---------------------------------------------------------------------------------------------------------------


@functools.cache
def _monomial_exponents(degree: int) -> np.ndarray:
    """Exponent table ``[n_mono, 4]`` of all degree-``degree`` monomials of ``(w, x, y, z)``, in the order that
    ``_monomials`` produces them (recursively: ``q_i * (degree-1 monomials using only variables >= i)``)."""
    if degree == 0:
        return np.zeros((1, 4), dtype=np.int64)
    prev = _monomial_exponents(degree - 1)
    first = _first_variable(prev)
    blocks = []
    for i in range(4):
        block = prev[first >= i].copy()
        block[:, i] += 1
        blocks.append(block)
    return np.concatenate(blocks)


def _first_variable(exponents: np.ndarray) -> np.ndarray:
    """Index of the lowest variable with a non-zero exponent (4 for the constant monomial)."""
    nonzero = exponents > 0
    return np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 4)


@functools.cache
def _suffix_starts(degree: int) -> tuple[int, ...]:
    """For the degree-``degree`` monomial list: start index of the suffix whose lowest variable is ``>= i``."""
    first = _first_variable(_monomial_exponents(degree))
    # the list is sorted by lowest variable (non-decreasing), so each suffix is contiguous
    return tuple(int(np.searchsorted(first, i)) for i in range(4))


def _monomials(q: Tensor, degree: int) -> list[Tensor]:
    """Monomials of degree ``0..degree`` of ``q [E, 4]``: list of ``[E, n_mono(d)]``. No value-dependent control flow."""
    out = [torch.ones_like(q[:, :1])]
    for d in range(1, degree + 1):
        starts = _suffix_starts(d - 1)
        prev = out[-1]
        out.append(torch.cat([q[:, i : i + 1] * prev[:, starts[i] :] for i in range(4)], dim=1))
    return out


def _rotation_matrix_numpy(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


@functools.cache
def _fitted_coefficients(l: int) -> np.ndarray:
    """``[n_mono(2l), (2l+1)^2]`` fp64 coefficients with ``D^l(q).flatten() = monomials_2l(q) @ C`` (row-major)."""
    rng = np.random.default_rng(_FIT_SEED + l)
    n_mono = len(_monomial_exponents(2 * l))
    # Reference blocks D(R) = Y(R P) pinv(Y(P)) on 4(2l+1) random points: Y(P) has full row rank and is well
    # conditioned, so D is exact to round-off.
    points = rng.normal(size=(4 * (2 * l + 1), 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    y_p = _sh_numpy(points, l).T  # [2l+1, P]
    n_samples = 2 * n_mono + 64
    quats = rng.normal(size=(n_samples, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    rotated = np.einsum("sij,pj->spi", _rotation_matrix_numpy(quats), points)
    d_ref = _sh_numpy(rotated, l).transpose(0, 2, 1) @ np.linalg.pinv(y_p)  # [S, 2l+1, 2l+1]
    mono = np.prod(quats[:, None, :] ** _monomial_exponents(2 * l)[None], axis=-1)  # [S, n_mono]
    coeffs, *_ = np.linalg.lstsq(mono, d_ref.reshape(n_samples, -1), rcond=None)
    coeffs[np.abs(coeffs) < 1e-12] = 0.0  # exact zeros: round-off of the fit
    return coeffs


_TORCH_COEFFS: dict[tuple[int, int | None, torch.dtype, torch.device], Tensor] = {}


def _row_indices(l: int, mmax: int | None) -> np.ndarray:
    rows = np.arange(2 * l + 1) if mmax is None else np.arange(l - min(l, mmax), l + min(l, mmax) + 1)
    return (rows[:, None] * (2 * l + 1) + np.arange(2 * l + 1)[None, :]).reshape(-1)


def _coefficients(l: int, mmax: int | None, like: Tensor) -> Tensor:
    """Torch copy of the fitted coefficients (only rows ``|m| <= mmax``) in ``like``'s dtype and device.

    Cached per ``(l, mmax, dtype, device)`` for real tensors. Under ``make_fx`` / fake-tensor tracing a fresh
    tensor is made instead: it becomes a constant of the traced graph, and the cache never holds a fake tensor.
    """
    array = np.ascontiguousarray(_fitted_coefficients(l)[:, _row_indices(l, mmax)])
    if is_fake(like):
        return torch.tensor(array, dtype=like.dtype, device=like.device)
    key = (l, mmax, like.dtype, like.device)
    cached = _TORCH_COEFFS.get(key)
    if cached is None:
        cached = _TORCH_COEFFS[key] = torch.tensor(array, dtype=like.dtype, device=like.device)
    return cached


def wigner_d(q: Tensor, lmax: int, mmax: int | None = None) -> list[Tensor]:
    """Real Wigner-D blocks of unit quaternions, ``Y_l(R(q) x) = D^l(q) @ Y_l(x)``.

    Args:
        q: ``[E, 4]`` unit quaternions ``(w, x, y, z)``, fp32 or fp64 (edge frames from ``edge_quaternion``).
        lmax: highest degree, ``0 <= lmax <= MAX_L``.
        mmax: if given, return only the rows ``|m| <= mmax`` (what the SO(2) convolution uses:
            ``x_ij = P_M D x_j`` and back ``D^T P_M^T``), which is ``(2l+1)/(2 min(l, mmax)+1)`` times cheaper.

    Returns:
        List over ``l = 0..lmax`` of ``[E, 2l+1, 2l+1]`` (or ``[E, 2 min(l, mmax)+1, 2l+1]``) real orthogonal
        matrices in ``q``'s dtype. Properties (tested): ``D(q1 q2) = D(q1) D(q2)``, ``D(1) = I``,
        ``D^1 = P R P^T``. For an edge frame (``R(q) r_hat = e_z``) the row ``m = 0`` is the harmonic of the edge:
        ``D^l(q)[m=0, :] = D^l(q)^T[:, m=0] = Y_l(r_hat) / Y_l0(e_z) = sqrt(4 pi / (2l+1)) Y_l(r_hat)``.
    """
    _check_lmax(lmax, MAX_L)
    if mmax is not None:
        _check_lmax(mmax, name="mmax")
    if q.ndim != 2 or q.shape[-1] != 4 or not q.is_floating_point():
        raise WignerInputError(f"q must be a float tensor [E, 4], got {tuple(q.shape)} {q.dtype}")
    monomials = _monomials(q, 2 * lmax)
    blocks = []
    for l in range(lmax + 1):
        coeffs = _coefficients(l, mmax, q)
        rows = 2 * l + 1 if mmax is None else 2 * min(l, mmax) + 1
        blocks.append((monomials[2 * l] @ coeffs).view(-1, rows, 2 * l + 1))
    return blocks


# ---------------------------------------------------------------------------------------------------------------
# SO(3) quadrature
# ---------------------------------------------------------------------------------------------------------------

_LEBEDEV_ORDERS = (3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 35, 41, 47, 53, 59, 65, 71, 77, 83, 89,
                   95, 101, 107, 113, 119, 125, 131)  # fmt: skip


def so3_quadrature(
    lmax: int, kmax: int, dtype: torch.dtype = torch.float64, n_factors: int = 2, n_roll: int | None = None
) -> tuple[Tensor, Tensor]:
    """Quadrature on SO(3) (normalised Haar measure) exact for products of ``n_factors`` band-limited functions.

    A function ``f(g) = sum_{l <= lmax, |m| <= l, |k| <= kmax} u^l_mk D^l_mk(g)`` uses the *column* index ``k`` of
    ``D^l(g)`` as the roll index: writing ``g = h(n) Rz(gamma)`` with ``h(n) e_z = n``, ``D(g) = D(h) D(Rz(gamma))``
    and ``D(Rz)`` mixes only ``+-k`` with frequency ``|k|`` in ``gamma``; the row index ``m`` transforms under left
    rotations like ``Y_lm`` (``D^l_m0(g) = sqrt(4 pi/(2l+1)) Y_lm(g e_z)``). A product of ``p = n_factors`` such
    functions has roll frequencies ``<= p kmax`` and, once the roll is integrated out, is a polynomial of degree
    ``<= p lmax`` in ``n``. So a Lebedev rule of order ``>= p lmax`` on ``n`` times ``n_roll >= p kmax + 1``
    equally spaced roll angles is exact (the trapezoid rule on ``N`` points is exact for frequencies ``< N``).

    ``n_factors=2`` integrates ``f_L f_R`` (and gives ``<D^l_mk, D^l'_m'k'> = delta/(2l+1)``). The Wigner bilinear
    FFN's projection ``z^l_mk = (2l+1) sum_g w_g D^l_mk(g) f_L(g) f_R(g)`` integrates a product of three, so it
    needs ``n_factors=3`` (Lebedev order ``>= 3L``, ``3 kmax + 1`` roll angles, as in spec section 3).

    Args:
        lmax: highest degree of the factors, ``>= 0``.
        kmax: highest roll index of the factors, ``0 <= kmax <= lmax``.
        dtype: floating dtype of the result.
        n_factors: how many band-limited factors the integrand multiplies, ``>= 1``.
        n_roll: number of roll angles, default (and minimum) ``n_factors * kmax + 1``.

    Returns:
        ``q [G, 4]`` unit quaternions ``h(n) * Rz(gamma)`` (sphere-major, roll-minor; ``h(n)`` is the inverse
        edge frame of ``n``) and ``weights [G]`` summing to 1, with ``G = n_lebedev * n_roll``. For
        ``l, l' <= lmax`` and ``|k|, |k'| <= kmax``: ``sum_g w_g D^l_mk(g) D^l'_m'k'(g) = delta / (2l+1)``.
    """
    from scipy.integrate import lebedev_rule

    _check_lmax(lmax)
    _check_lmax(kmax, lmax, name="kmax")
    if isinstance(n_factors, bool) or not isinstance(n_factors, int) or n_factors < 1:
        raise WignerInputError(f"n_factors must be an int >= 1, got {n_factors!r}")
    min_roll = n_factors * kmax + 1
    if n_roll is None:
        n_roll = min_roll
    if isinstance(n_roll, bool) or not isinstance(n_roll, int) or n_roll < min_roll:
        raise WignerInputError(f"n_roll must be an int >= n_factors * kmax + 1 = {min_roll}, got {n_roll!r}")
    # Smallest rule of sufficient order with positive weights (the 74-point order-13 rule has negative ones).
    for order in _LEBEDEV_ORDERS:
        if order >= n_factors * lmax:
            points, sphere_w = lebedev_rule(order)  # [3, n], [n]
            if (sphere_w > 0).all():
                break
    else:
        raise WignerInputError(f"degree {n_factors * lmax} needs a Lebedev order beyond scipy's largest (131)")
    n = torch.as_tensor(points.T, dtype=torch.float64)
    sphere_w = torch.as_tensor(sphere_w / sphere_w.sum(), dtype=torch.float64)
    gamma = torch.arange(n_roll, dtype=torch.float64) * (2 * math.pi / n_roll)
    h = quaternion_conjugate(edge_quaternion(n))  # [n, 4], h(n) e_z = n
    roll = torch.stack([torch.cos(gamma / 2), 0 * gamma, 0 * gamma, torch.sin(gamma / 2)], dim=-1)  # [N, 4]
    q = quaternion_multiply(h[:, None, :], roll[None, :, :]).reshape(-1, 4)
    weights = (sphere_w[:, None] / n_roll).expand(-1, n_roll).reshape(-1)
    return q.to(dtype), weights.to(dtype)
