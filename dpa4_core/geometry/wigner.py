"""Real spherical harmonics, real Wigner-D matrices from quaternions, and an exact SO(3) quadrature (spec 1, 2, 4).

Conventions (used by every other module):

* Real spherical harmonics ``Y_lm``, ``m = -l..l`` in that order, orthonormal on the unit sphere
  (``int Y_lm Y_l'm' dOmega = delta``), no Condon-Shortley phase: ``Y_l,m>0 ~ cos(m phi)``, ``Y_l,m<0 ~ sin(|m| phi)``,
  so ``Y_1 = sqrt(3 / (4 pi)) (y, z, x)``.
* ``D^l(q)`` is the real orthogonal ``(2l+1) x (2l+1)`` matrix with ``Y_l(R x) = D^l(q) @ Y_l(x)`` for
  ``R = quaternion_to_matrix(q)``. It is a representation, ``D(q1 q2) = D(q1) D(q2)``, ``D(q*) = D(q)^T``,
  ``D(-q) = D(q)``, and ``D^1 = P R P^T`` with ``P`` the permutation ``(x, y, z) -> (y, z, x)``.

How D is computed (spec section 4, second option): for a fixed set of ``K = 2 lmax + 1`` unit points ``P``,
``D^l(R) Y_l(P) = Y_l(R P)``, so ``D^l(R) = Y_l(R P) pinv(Y_l(P))`` exactly (``Y_l(P)`` has full row rank). The
points were chosen once (numerically, see ``_POINTS``) so that ``Y_l(P)`` is well conditioned (condition number
<= 3 for every ``l <= lmax``), which keeps fp32 accurate to ~1e-6. Per edge this costs one ``[16] x [16, 3K]``
product (the rotated points are a quadratic form in q), polynomial spherical harmonics at K points (no division,
sqrt or trig: smooth, twice differentiable) and one small matrix product per degree; asking only for the rows
``|m| <= mmax`` (all the SO(2) convolution uses) evaluates only those harmonics. Everything is elementwise or
matmul, so it traces with ``make_fx(tracing_mode="symbolic")`` and fuses well under ``torch.compile``.
(A first version fitted D^l as a degree-2l polynomial over the monomials of q; it was 3-7x slower on CPU, partly
because degree-12 monomials of small quaternion components are fp32 denormals.)
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


class WignerInputError(ValueError):
    """Bad degree, shape or dtype passed to a function of this module."""


def _check_lmax(lmax: int, upper: int | None = None, name: str = "lmax") -> None:
    if isinstance(lmax, bool) or not isinstance(lmax, int) or lmax < 0 or (upper is not None and lmax > upper):
        allowed = f"0..{upper}" if upper is not None else ">= 0"
        raise WignerInputError(f"{name} must be an int in {allowed}, got {lmax!r}")


# ---------------------------------------------------------------------------------------------------------------
# Real spherical harmonics (works on NumPy arrays and torch tensors alike: only + and * on x, y, z)
# ---------------------------------------------------------------------------------------------------------------


@functools.cache
def _legendre_coefficients(lmax: int) -> dict:
    """Constants of the normalised recurrence ``Q_l^m = a z Q_{l-1}^m - b Q_{l-2}^m`` for the polynomial part
    ``Q_l^m = N_lm d^m P_l / dz^m`` of ``Y_l,+-m = Q_l^m {Re, Im}(x + i y)^m``; ``N_lm`` includes ``sqrt 2`` for m > 0.

    Returns ``{"diag": {m: Q_m^m}, (l, m): (a, b)}`` (``b = 0`` for ``l = m + 1``).
    """

    def norm(l: int, m: int) -> float:
        n = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
        return n * math.sqrt(2.0) if m > 0 else n

    out: dict = {"diag": {m: norm(m, m) * float(math.prod(range(1, 2 * m, 2))) for m in range(lmax + 1)}}
    for m in range(lmax + 1):
        for l in range(m + 1, lmax + 1):
            a = norm(l, m) / norm(l - 1, m) * (2 * l - 1) / (l - m)
            b = norm(l, m) / norm(l - 2, m) * (l + m - 1) / (l - m) if l >= m + 2 else 0.0
            out[(l, m)] = (a, b)
    return out


def _axpby(a: float, x, u, b: float, y, v):
    """``a x u + b y v`` for arrays ``x, u`` and arrays or floats ``y, v``, with fused torch kernels (fewer passes
    over memory and fewer temporaries than the plain expression; the same value)."""
    if not isinstance(x, Tensor):
        return a * x * u + b * y * v
    if isinstance(y, Tensor) and isinstance(v, Tensor):
        return torch.addcmul(torch.mul(y, v).mul_(b), x, u, value=a)
    second = b * y * v  # tensor or float
    if isinstance(second, Tensor):
        return torch.addcmul(second, x, u, value=a)
    return torch.mul(x, u).mul_(a).add_(second)


def _sh_components(x, y, z, lmax: int, mmax: int | None = None) -> list[list]:
    """Per degree ``l <= lmax`` the list of ``Y_l,m`` for ``m = -mu..mu``, ``mu = min(l, mmax)``, of unit
    ``(x, y, z)``. Entries are arrays, or Python floats where the harmonic is constant (``Y_00``).

    Everything stays a polynomial (``Re/Im (x + i y)^m`` carry ``cos/sin(m phi) sin^m(theta)``), so it is exact,
    smooth at the poles and needs no sqrt, division or trig.
    """
    mtop = lmax if mmax is None else min(mmax, lmax)
    coef = _legendre_coefficients(lmax)
    cos_m, sin_m = [1.0, x], [0.0, y]  # cos_m[m] + i sin_m[m] = (x + i y)^m
    for _ in range(2, mtop + 1):
        c, s = cos_m[-1], sin_m[-1]
        cos_m.append(_axpby(1.0, x, c, -1.0, y, s))
        sin_m.append(_axpby(1.0, x, s, 1.0, y, c))
    out: list[list] = [[None] * (2 * min(l, mtop) + 1) for l in range(lmax + 1)]
    for m in range(mtop + 1):
        prev2, prev = None, coef["diag"][m]  # Q_{m-1}^m (unused), Q_m^m (a constant)
        for l in range(m, lmax + 1):
            if l == m + 1:
                prev2, prev = prev, (coef[(l, m)][0] * prev) * z
            elif l >= m + 2:
                a, b = coef[(l, m)]
                prev2, prev = prev, _axpby(a, z, prev, -b, 1.0, prev2)
            mu = min(l, mtop)
            if m == 0:
                out[l][mu] = prev
            else:
                out[l][mu + m] = prev * cos_m[m]
                out[l][mu - m] = prev * sin_m[m]
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
        shape, dtype = tuple(unit_vec.shape), unit_vec.dtype
        raise WignerInputError(f"unit_vec must be a float tensor [..., 3], got {shape} {dtype}")
    x, y, z = unit_vec.unbind(-1)
    return [torch.stack([_as_tensor(c, x) for c in row], dim=-1) for row in _sh_components(x, y, z, lmax)]


def _as_tensor(value, like: Tensor) -> Tensor:
    return value if isinstance(value, Tensor) else torch.full_like(like, value)


def _sh_numpy(points: np.ndarray, l: int) -> np.ndarray:
    """``Y_l`` of unit ``points [..., 3]`` as ``[..., 2l+1]`` (fp64 NumPy)."""
    row = _sh_components(points[..., 0], points[..., 1], points[..., 2], l)[l]
    return np.stack([np.broadcast_to(c, points.shape[:-1]) for c in row], axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# Wigner-D from spherical harmonics at K fixed points
# ---------------------------------------------------------------------------------------------------------------

# K = 2 lmax + 1 unit points per lmax (rounded to 4 digits, renormalised at use; any points with Y_l(P) of full
# rank give the exact D, these were found by minimising max_{l <= lmax} cond(Y_l(P)) with L-BFGS from random starts).
_POINTS: dict[int, list[list[float]]] = {
    1: [[-0.4583, -0.1327, -0.8788], [-0.8014, 0.4892, 0.3441], [0.3842, 0.8621, -0.3305]],
    2: [[0.1796, -0.1402, -0.9737], [-0.7766, 0.5043, 0.3777], [-0.0083, 0.9691, 0.2464], [-0.311, 0.7351, -0.6025],
        [-0.6326, -0.5681, 0.5263]],
    3: [[0.5531, 0.8328, -0.0214], [-0.8648, 0.4624, 0.1957], [-0.157, 0.959, 0.2361], [0.5445, -0.7617, 0.3512],
        [-0.4018, -0.6203, -0.6736], [0.7394, 0.1628, -0.6533], [-0.9575, -0.2876, -0.0232]],
    4: [[0.2586, -0.8764, 0.4062], [0.0434, -0.0374, 0.9984], [0.6603, 0.5111, -0.5503], [-0.8116, -0.5663, -0.1435],
        [-0.8601, -0.0375, -0.5087], [-0.5116, -0.4757, -0.7155], [0.3174, 0.9192, -0.2331], [0.8768, -0.4401, 0.1938],
        [0.5895, -0.0995, -0.8016]],
    5: [[-0.0246, 0.8961, 0.4432], [-0.6495, 0.7593, 0.039], [-0.1947, 0.8603, -0.4712], [0.6441, 0.0069, 0.7649],
        [-0.973, 0.1297, -0.191], [0.4332, -0.741, -0.5131], [-0.9492, -0.295, 0.1095], [0.0174, 0.6186, 0.7855],
        [-0.7631, -0.6348, -0.1212], [-0.6579, -0.6881, 0.3061], [0.8985, -0.3608, -0.25]],
    6: [[0.3895, 0.901, 0.191], [-0.5752, 0.8019, 0.1619], [-0.2383, 0.8189, 0.5221], [0.3649, 0.3075, 0.8788],
        [-0.7999, -0.3013, -0.519], [0.9583, -0.0003, -0.2858], [-0.8585, -0.4829, 0.1727], [0.0549, 0.6474, 0.7601],
        [-0.7748, -0.606, -0.1802], [-0.7654, 0.4752, 0.434], [0.9223, -0.3778, -0.0809], [0.951, 0.2792, 0.1327],
        [-0.2277, -0.9559, 0.1853]],
}  # fmt: skip


def _rotation_quadratic_form() -> np.ndarray:
    """``M [4, 4, 3, 3]`` with ``R(q)_ij = sum_ab M_abij q_a q_b`` for unit ``q`` (the homogeneous form of
    ``quaternion_to_matrix``: ``1 = |q|^2`` is folded in), by polarisation of the quadratic map."""

    def rot(q: np.ndarray) -> np.ndarray:
        w, x, y, z = q
        return np.array(
            [
                [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
            ]
        )

    eye = np.eye(4)
    form = np.empty((4, 4, 3, 3))
    for a in range(4):
        for b in range(4):
            form[a, b] = rot(eye[a]) if a == b else 0.5 * (rot(eye[a] + eye[b]) - rot(eye[a]) - rot(eye[b]))
    return form


@functools.cache
def _point_constants(lmax: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """fp64 constants of ``wigner_d(., lmax)``: unit points ``[K, 3]``; ``[3, 16, K]`` mapping ``q_a q_b``
    (flattened ``a, b``) to the coordinates ``(R(q) p_k)_i``; per degree ``pinv(Y_l(P))`` ``[K, 2l+1]``."""
    points = np.asarray(_POINTS[lmax], dtype=np.float64)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    to_points = np.einsum("abij,kj->iabk", _rotation_quadratic_form(), points).reshape(3, 16, len(points))
    projections = [np.linalg.pinv(_sh_numpy(points, l).T) for l in range(lmax + 1)]  # Y_l(P): [2l+1, K]
    return points, to_points, projections


_TORCH_CONSTANTS: dict[tuple, tuple[Tensor, list[Tensor]]] = {}


def _constants(lmax: int, like: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Torch copies of the ``_point_constants`` used at run time, in ``like``'s dtype and device.

    Cached per ``(lmax, dtype, device)`` for real tensors. Under ``make_fx`` / fake-tensor tracing fresh tensors
    are made instead: they become constants of the traced graph, and the cache never holds a fake tensor.
    """
    _, to_points, projections = _point_constants(lmax)

    def build():
        kw = {"dtype": like.dtype, "device": like.device}
        return torch.tensor(to_points, **kw), [torch.tensor(p, **kw) for p in projections]

    if is_fake(like):
        return build()
    key = (lmax, like.dtype, like.device)
    if key not in _TORCH_CONSTANTS:
        _TORCH_CONSTANTS[key] = build()
    return _TORCH_CONSTANTS[key]


def wigner_d(q: Tensor, lmax: int, mmax: int | None = None) -> list[Tensor]:
    """Real Wigner-D blocks of unit quaternions, ``Y_l(R(q) x) = D^l(q) @ Y_l(x)``.

    Args:
        q: ``[E, 4]`` unit quaternions ``(w, x, y, z)``, fp32 or fp64 (edge frames from ``edge_quaternion``).
        lmax: highest degree, ``0 <= lmax <= MAX_L``.
        mmax: if given, return only the rows ``|m| <= mmax`` (what the SO(2) convolution uses:
            ``x_ij = P_M D x_j`` and back ``D^T P_M^T``), which is several times cheaper.

    Returns:
        List over ``l = 0..lmax`` of ``[E, 2l+1, 2l+1]`` (or ``[E, 2 min(l, mmax)+1, 2l+1]``) real orthogonal
        matrices in ``q``'s dtype. Properties (tested): ``D(q1 q2) = D(q1) D(q2)``, ``D(1) = I``,
        ``D^1 = P R P^T``. For an edge frame (``R(q) r_hat = e_z``) the row ``m = 0`` is the harmonic of the edge:
        ``D^l(q)[m=0, :] = D^l(q)^T[:, m=0] = Y_l(r_hat) / Y_l0(e_z) = sqrt(4 pi / (2l+1)) Y_l(r_hat)``.
    """
    _check_lmax(lmax, MAX_L)
    if mmax is not None:
        _check_lmax(mmax, name="mmax")
    if q.ndim != 2 or q.shape[-1] != 4 or q.dtype not in (torch.float32, torch.float64):
        raise WignerInputError(f"q must be a float32/float64 tensor [E, 4], got {tuple(q.shape)} {q.dtype}")
    blocks = [torch.ones_like(q[:, :1]).unsqueeze(-1)]
    if lmax == 0:
        return blocks
    to_points, projections = _constants(lmax, q)
    # Geometry never runs in bf16 (spec section 7): the matmuls below would otherwise be autocast.
    with torch.autocast(device_type=q.device.type, enabled=False):
        # Rotated points R(q) p_k straight from the quadratic form q_a q_b (no 3 x 3 matrix needed), as three
        # contiguous [E, K] planes (elementwise work on contiguous planes vectorises best).
        qq = (q.unsqueeze(2) * q.unsqueeze(1)).flatten(1)  # [E, 16]
        x, y, z = (qq @ to_points[i] for i in range(3))
        harmonics = _sh_components(x, y, z, lmax, mmax)
        for l in range(1, lmax + 1):
            y_rot = torch.stack(harmonics[l], dim=1)  # [E, rows, K]
            blocks.append(y_rot @ projections[l])  # [E, rows, 2l+1]
    return blocks


# ---------------------------------------------------------------------------------------------------------------
# SO(3) quadrature
# ---------------------------------------------------------------------------------------------------------------

_LEBEDEV_ORDERS = (3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 35, 41, 47, 53, 59, 65, 71, 77, 83, 89,
                   95, 101, 107, 113, 119, 125, 131)  # fmt: skip


def sphere_quadrature(degree: int) -> tuple[Tensor, Tensor]:
    """The smallest Lebedev rule exact to ``degree`` with positive weights (the 74-point order-13 rule has negative
    ones): unit points ``[n, 3]`` and weights ``[n]`` summing to 1, float64."""
    from scipy.integrate import lebedev_rule

    for order in _LEBEDEV_ORDERS:
        if order >= degree:
            points, weights = lebedev_rule(order)  # [3, n], [n]
            if (weights > 0).all():
                return (torch.as_tensor(points.T, dtype=torch.float64),
                        torch.as_tensor(weights / weights.sum(), dtype=torch.float64))
    raise WignerInputError(f"degree {degree} needs a Lebedev order beyond scipy's largest (131)")


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
    _check_lmax(lmax)
    _check_lmax(kmax, lmax, name="kmax")
    if isinstance(n_factors, bool) or not isinstance(n_factors, int) or n_factors < 1:
        raise WignerInputError(f"n_factors must be an int >= 1, got {n_factors!r}")
    min_roll = n_factors * kmax + 1
    if n_roll is None:
        n_roll = min_roll
    if isinstance(n_roll, bool) or not isinstance(n_roll, int) or n_roll < min_roll:
        raise WignerInputError(f"n_roll must be an int >= n_factors * kmax + 1 = {min_roll}, got {n_roll!r}")
    n, sphere_w = sphere_quadrature(n_factors * lmax)
    gamma = torch.arange(n_roll, dtype=torch.float64) * (2 * math.pi / n_roll)
    h = quaternion_conjugate(edge_quaternion(n))  # [n, 4], h(n) e_z = n
    roll = torch.stack([torch.cos(gamma / 2), 0 * gamma, 0 * gamma, torch.sin(gamma / 2)], dim=-1)  # [N, 4]
    q = quaternion_multiply(h[:, None, :], roll[None, :, :]).reshape(-1, 4)
    weights = (sphere_w[:, None] / n_roll).expand(-1, n_roll).reshape(-1)
    return q.to(dtype), weights.to(dtype)
