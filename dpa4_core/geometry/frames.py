"""Smooth per-edge rotation frames as unit quaternions (spec section 4).

Every edge r_ij gets a unit quaternion ``q = (w, x, y, z)`` whose rotation ``R(q)`` maps the edge direction
``r_hat`` onto ``+z``. No continuous map ``r_hat -> R`` with this property exists on the whole sphere (hairy
ball), but every operation the model does inside the frame commutes with rotations about ``z``, so the energy
does not depend on the roll angle; what matters is that ``q`` has finite, bounded first and second derivatives
everywhere, including edges exactly along ``+z`` and ``-z``. Euler-angle frames (``acos``/``atan2``) have
unbounded roll derivatives at the poles and give NaN or noisy forces, so we blend two quaternion charts:

* ``q+ = normalise(1 + u_z, u_y, -u_x, 0)`` is the shortest-arc rotation ``u -> +z`` (singular only at ``u = -z``);
* ``q- = (0, 0, 1, 0) * normalise(1 - u_z, -u_y, u_x, 0) = normalise(-u_x, 0, 1 - u_z, u_y)``, the shortest arc
  ``u -> -z`` followed by a half turn about ``y`` (singular only at ``u = +z``);
* ``q = normalise((1 - w) q- + w s q+)`` with ``s = sign(q- . q+) = -sign(u_x)`` and ``w = S((u_z + 1) / 2)``,
  ``S(t) = e^(-1/t) / (e^(-1/t) + e^(-1/(1-t)))``. For ``u_z >= 0`` we use the same rotation written as
  ``s (1 - w) q- + w q+`` (``q`` and ``-q`` are one rotation), so that ``q`` is smooth around both poles.

Both charts map ``u`` onto ``+z``, so they differ by a rotation about ``z`` and any normalised combination of them
is again a frame. ``S`` is C^infinity with every derivative zero at ``t = 0`` and ``t = 1``, so each chart is
switched off smoothly before its singular pole. Where ``s`` flips (the half plane ``u_x = 0``) the roll angle
jumps; roll-invariant functions of the frame (everything the model computes) stay smooth.

Quaternion conventions: Hamilton product, ``(w, x, y, z)`` storage, ``R(q) v = q v q*``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "FrameInputError",
    "edge_quaternion",
    "quaternion_conjugate",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "smooth_step",
    "z_rotation_quaternion",
]

# Safe length |r| = sqrt(|r|^2 + eps), spec section 1.
_LENGTH_EPS = 1e-14
# The blend parameter t is clamped to [_T_CLAMP, 1 - _T_CLAMP] inside S. There 1/t - 1/(1-t) ~ 1000, so S is
# exactly 0 or 1 in fp32 and fp64 (e^-1000 underflows) while 1/t^k for k <= 4 stays finite: no inf * 0 = NaN
# in first or second derivatives. The true S differs from the clamped one by less than e^-999.
_T_CLAMP = 1e-3
# Within this distance (in 1 -+ u_z) of its singular pole a chart's squared norm is replaced by 1. That region
# lies strictly inside the clamped region above (1 -+ u_z < 2e-3), where the chart's blend weight is exactly 0
# with zero gradient, so the substitution changes nothing but keeps NaN/inf out of the forward and backward pass.
_POLE_MASK = 1e-3


class FrameInputError(ValueError):
    """An input to the frame functions has the wrong shape or dtype."""


def _check_last_dim(name: str, t: Tensor, size: int) -> None:
    if t.ndim < 1 or t.shape[-1] != size:
        raise FrameInputError(f"{name} must have shape [..., {size}], got {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        # geometry is never computed in half precision (spec sections 1 and 7)
        raise FrameInputError(f"{name} must be a float32 or float64 tensor, got dtype {t.dtype}")


def smooth_step(t: Tensor) -> Tensor:
    """C^infinity step ``S(t) = e^(-1/t) / (e^(-1/t) + e^(-1/(1-t)))``, 0 for t <= 0 and 1 for t >= 1.

    Written as ``sigmoid(1/(1-t) - 1/t)`` on ``t`` clamped to ``[1e-3, 1 - 1e-3]``, so value, first and second
    derivatives are finite everywhere (and exactly 0 near the ends) in fp32 and fp64.

    Args:
        t: any shape.

    Returns:
        ``S(t)``, same shape and dtype.
    """
    t = t.clamp(_T_CLAMP, 1.0 - _T_CLAMP)
    return torch.sigmoid(1.0 / (1.0 - t) - 1.0 / t)


def edge_quaternion(edge_vec: Tensor) -> Tensor:
    """Unit quaternion per edge whose rotation maps the edge direction onto ``+z`` (smooth two-chart blend).

    Args:
        edge_vec: ``[..., 3]`` edge vectors ``r_ij`` (A), fp32 or fp64. Zero vectors give a valid (arbitrary) frame.

    Returns:
        ``[..., 4]`` unit quaternions ``(w, x, y, z)``, same dtype and device. Properties (tested):
        ``quaternion_to_matrix(q) @ r_hat = e_z``; ``|q| = 1``; first and second derivatives finite for every
        input, including ``r_hat = +-z`` exactly, in fp32 and fp64; no Python control flow on values
        (traces with ``make_fx``).
    """
    _check_last_dim("edge_vec", edge_vec, 3)
    # Component planes (contiguous [...] tensors): elementwise work on them vectorises far better than on
    # [..., 3] / [..., 4] tensors with a tiny broadcast last dimension.
    rx, ry, rz = edge_vec.movedim(-1, 0).contiguous().unbind(0)
    inv_length = torch.rsqrt(rx * rx + ry * ry + rz * rz + _LENGTH_EPS)
    ux, uy, uz = rx * inv_length, ry * inv_length, rz * inv_length

    # Charts before normalisation: q+ = (1 + u_z, u_y, -u_x, 0), q- = (-u_x, 0, 1 - u_z, u_y), with squared norms
    # n+ = |q+|^2 -> 0 at u = -z and n- -> 0 at u = +z. Within _POLE_MASK of its pole a chart's blend weight is
    # exactly 0 with zero gradient; replacing its norm there by 1 keeps inf/NaN out of the forward and backward
    # pass ("double where") without changing any value.
    one_plus, one_minus = 1.0 + uz, 1.0 - uz
    n_plus = one_plus * one_plus + ux * ux + uy * uy
    n_minus = one_minus * one_minus + ux * ux + uy * uy
    n_plus = torch.where(one_plus < _POLE_MASK, torch.ones_like(n_plus), n_plus)
    n_minus = torch.where(one_minus < _POLE_MASK, torch.ones_like(n_minus), n_minus)

    # Align hemispheres of S^3 before blending: q- . q+ = -u_x / sqrt(1 - u_z^2), so its sign is -sign(u_x).
    # Using +1 at u_x = 0 keeps |blend| >= 1/sqrt(2) (never 0/0). The sign goes on the chart with the smaller
    # weight (q- in the north, q+ in the south), so q itself (not only R(q)) is smooth around both poles and the
    # unavoidable jumps (roll across u_x = 0, overall sign across u_z = 0) stay away from them.
    flip = ux > 0
    north = uz >= 0
    w = smooth_step(0.5 * one_plus)
    w_plus = torch.where(flip & ~north, -w, w)
    w_minus = torch.where(flip & north, w - 1.0, 1.0 - w)
    c_plus = w_plus * torch.rsqrt(n_plus)  # blend weight over |q+|
    c_minus = w_minus * torch.rsqrt(n_minus)

    qw = c_plus * one_plus - c_minus * ux
    qx = c_plus * uy
    qy = c_minus * one_minus - c_plus * ux
    qz = c_minus * uy
    inv_norm = torch.rsqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    return torch.stack([qw * inv_norm, qx * inv_norm, qy * inv_norm, qz * inv_norm], dim=-1)


def quaternion_conjugate(q: Tensor) -> Tensor:
    """Conjugate ``(w, -x, -y, -z)``, the inverse rotation for unit quaternions. Shape ``[..., 4]``."""
    _check_last_dim("q", q, 4)
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` (rotation ``b`` first, then ``a``): ``R(a * b) = R(a) @ R(b)``.

    Args:
        a: ``[..., 4]`` quaternions ``(w, x, y, z)``.
        b: ``[..., 4]``, broadcastable with ``a``.

    Returns:
        ``[..., 4]`` product.
    """
    _check_last_dim("a", a, 4)
    _check_last_dim("b", b, 4)
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrix of a unit quaternion, ``R v = q v q*``.

    Args:
        q: ``[..., 4]`` unit quaternions ``(w, x, y, z)`` (not renormalised here).

    Returns:
        ``[..., 3, 3]`` rotation matrices; ``q`` and ``-q`` give the same matrix.
    """
    _check_last_dim("q", q, 4)
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def z_rotation_quaternion(angle: Tensor) -> Tensor:
    """Quaternion of a rotation by ``angle`` (radians, right-handed) about ``+z``.

    Args:
        angle: ``[...]`` angles.

    Returns:
        ``[..., 4]`` unit quaternions ``(cos(angle/2), 0, 0, sin(angle/2))``. Left-multiplying an edge frame by
        it (``quaternion_multiply(z_rotation_quaternion(a), q)``) changes only the roll.
    """
    if angle.dtype not in (torch.float32, torch.float64):
        raise FrameInputError(f"angle must be a float32 or float64 tensor, got dtype {angle.dtype}")
    half = 0.5 * angle
    zero = torch.zeros_like(half)
    return torch.stack([torch.cos(half), zero, zero, torch.sin(half)], dim=-1)
