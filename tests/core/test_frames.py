"""Edge frames (dpa4_core.geometry.frames), grouped by property.

Checks that the two-chart quaternion frame maps every edge onto +z (random, exactly +-z, near the poles, on the
sign-flip plane u_x = 0), is a unit quaternion, has finite first and second derivatives everywhere in fp32 and
fp64 (gradcheck/gradgradcheck at the poles), and that roll-invariant functions of the frame are smooth across
the chart blend while a roll-dependent one is not (so the smoothness test can fail).
"""

from __future__ import annotations

import math

import pytest
import torch

from dpa4_core.geometry.frames import (
    FrameInputError,
    edge_quaternion,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_matrix,
    smooth_step,
    z_rotation_quaternion,
)
from dpa4_core.geometry.wigner import wigner_d

F64 = torch.float64
EZ = torch.tensor([0.0, 0.0, 1.0], dtype=F64)


def _directions(n: int = 400, seed: int = 0) -> torch.Tensor:
    """Random edges (lengths 0.5..6 A) plus hard cases: exactly +-z, near the poles, the plane u_x = 0."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=F64)
    v = v / v.norm(dim=-1, keepdim=True) * (0.5 + 5.5 * torch.rand(n, 1, generator=g, dtype=F64))
    special = []
    for sz in (1.0, -1.0):
        special += [[0, 0, sz], [0, 0, 3 * sz], [1e-9, 0, sz], [0, -1e-9, sz], [1e-6, 1e-6, sz], [-1e-4, 2e-4, sz]]
        # around the chart mask / clamp boundaries (1 - |u_z| ~ 1e-3)
        for gap in (5e-4, 1e-3, 2e-3, 4e-3):
            theta = math.acos(1 - gap)
            special.append([math.sin(theta), 0.0, sz * (1 - gap)])
    special += [[0, 1, 0], [0, -1, 0], [0, 0.6, 0.8], [0, -0.6, -0.8], [1, 0, 0], [-1, 0, 0]]
    return torch.cat([v, torch.tensor(special, dtype=F64)])


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


# ------------------------------------------------------------------ maps the edge onto +z, unit norm


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_unit_and_maps_edge_to_z(dtype, tol):
    v = _directions().to(dtype)
    q = edge_quaternion(v)
    assert q.shape == (v.shape[0], 4) and q.dtype == dtype
    assert torch.allclose(q.norm(dim=-1), torch.ones(len(q), dtype=dtype), atol=tol)
    rotated = (quaternion_to_matrix(q) @ _unit(v).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(rotated, EZ.to(dtype).expand_as(rotated), atol=tol)


def test_exact_poles():
    q = edge_quaternion(torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0]], dtype=F64))
    r = quaternion_to_matrix(q)
    assert torch.allclose(r[0], torch.eye(3, dtype=F64), atol=1e-14)  # +z: the identity chart
    assert torch.allclose(r[1] @ torch.tensor([0.0, 0.0, -1.0], dtype=F64), EZ, atol=1e-14)


def test_each_chart_maps_edge_to_z():
    """q+ and q- of the spec individually satisfy R(q) u = e_z (checked via the blend at w = 0 and w = 1)."""
    u = _unit(torch.randn(200, 3, dtype=F64, generator=torch.Generator().manual_seed(1)))
    ux, uy, uz = u.unbind(-1)
    q_plus = _unit(torch.stack([1 + uz, uy, -ux, 0 * ux], -1))
    q_minus = _unit(torch.stack([-ux, 0 * ux, 1 - uz, uy], -1))
    for q in (q_plus, q_minus):
        rotated = (quaternion_to_matrix(q) @ u.unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(rotated, EZ.expand_as(rotated), atol=1e-12)


def test_blend_equals_pure_charts_near_poles():
    """Within the clamp region only one chart contributes: q = q+ near +z (and a unit frame near -z)."""
    v = torch.tensor([[1e-3, 2e-3, 1.0], [0.3, -0.2, 50.0]], dtype=F64)
    u = _unit(v)
    ux, uy, uz = u.unbind(-1)
    q_plus = _unit(torch.stack([1 + uz, uy, -ux, 0 * ux], -1))
    assert torch.allclose(edge_quaternion(v), q_plus, atol=1e-15)


def test_translation_of_length_does_not_matter():
    v = _directions(50)
    assert torch.allclose(edge_quaternion(v), edge_quaternion(3.7 * v), atol=1e-13)


# ------------------------------------------------------------------ quaternion algebra


def test_quaternion_algebra():
    g = torch.Generator().manual_seed(2)
    a = _unit(torch.randn(30, 4, generator=g, dtype=F64))
    b = _unit(torch.randn(30, 4, generator=g, dtype=F64))
    ra, rb = quaternion_to_matrix(a), quaternion_to_matrix(b)
    assert torch.allclose(quaternion_to_matrix(quaternion_multiply(a, b)), ra @ rb, atol=1e-13)
    assert torch.allclose(quaternion_to_matrix(quaternion_conjugate(a)), ra.transpose(-1, -2), atol=1e-13)
    assert torch.allclose(ra @ ra.transpose(-1, -2), torch.eye(3, dtype=F64).expand(30, 3, 3), atol=1e-13)
    assert torch.allclose(torch.linalg.det(ra), torch.ones(30, dtype=F64), atol=1e-13)
    angle = torch.tensor([0.3, -1.2], dtype=F64)
    rz = quaternion_to_matrix(z_rotation_quaternion(angle))
    c, s = torch.cos(angle), torch.sin(angle)
    expected = torch.zeros(2, 3, 3, dtype=F64)
    expected[:, 0, 0], expected[:, 0, 1], expected[:, 1, 0], expected[:, 1, 1], expected[:, 2, 2] = c, -s, s, c, 1
    assert torch.allclose(rz, expected, atol=1e-14)


def test_random_roll_keeps_edge_on_z():
    v = _directions(100)
    q = edge_quaternion(v)
    roll = z_rotation_quaternion(torch.rand(len(q), dtype=F64) * 2 * math.pi)
    rotated = (quaternion_to_matrix(quaternion_multiply(roll, q)) @ _unit(v).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(rotated, EZ.expand_as(rotated), atol=1e-12)


def test_smooth_step():
    t = torch.linspace(-0.5, 1.5, 2001, dtype=F64)
    s = smooth_step(t)
    assert torch.all(s[t <= 0] == 0) and torch.all(s[t >= 1] == 1)
    assert torch.allclose(s + smooth_step(1 - t), torch.ones_like(s), atol=1e-15)
    assert torch.all(torch.diff(s) >= 0)
    assert s[1000] == pytest.approx(0.5)


# ------------------------------------------------------------------ derivatives


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_first_and_second_derivatives_finite(dtype):
    v = _directions(50).to(dtype).requires_grad_(True)
    q = edge_quaternion(v)
    weights = torch.randn(q.shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    (g,) = torch.autograd.grad((q * weights).sum(), v, create_graph=True)
    (gg,) = torch.autograd.grad((g * g).sum(), v)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()
    # bounded: lengths are >= 0.5 A, so |dq/dr| stays O(1/|r|) except through S' in the blend
    assert g.abs().max() < 1e3 and gg.abs().max() < 1e7


def test_gradient_of_zero_vector_is_finite():
    v = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(edge_quaternion(v).sum(), v)
    assert torch.isfinite(g).all()


def test_gradcheck_at_and_near_poles():
    v = torch.tensor(
        [[0.0, 0.0, 1.3], [0.0, 0.0, -0.9], [1e-5, -2e-5, 1.0], [-3e-5, 1e-5, -2.0], [0.4, -0.7, 0.5],
         [-0.2, 0.3, -1.1]],
        dtype=F64,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(edge_quaternion, (v,), eps=1e-7, atol=1e-6)
    assert torch.autograd.gradgradcheck(edge_quaternion, (v,), eps=1e-7, atol=1e-5)


# ------------------------------------------------------------------ smoothness of roll-invariant functions


def _path(n: int = 720) -> torch.Tensor:
    """Edges along a closed loop through +z and -z that crosses u_x = 0 in the blend region several times."""
    s = torch.linspace(0, 2 * math.pi, n + 1, dtype=F64)[:-1]
    theta = s  # polar angle sweeps 0 -> 2 pi: passes +z (s = 0) and -z (s = pi) exactly
    phi = 0.7 + 0.9 * torch.sin(3 * s)  # wobble in azimuth
    return torch.stack([torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta)], -1)


def _second_difference_ratio(fn) -> float:
    """max |second difference| along the loop on n points over that on 2n points: ~4 for a C^2 function
    (O(h^2)), ~1 if the function jumps anywhere on the loop."""

    def max_second(n):
        value = fn(_path(n))
        return (torch.roll(value, 1) - 2 * value + torch.roll(value, -1)).abs().max().item()

    return max_second(360) / max_second(720)


def _roll_invariant(v: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
    """Energy-like function using rows m = 0 and the pair m = +-1 of D @ f (invariant to z-rolls)."""
    blocks = wigner_d(edge_quaternion(v), len(feats) - 1)
    out = 0.0
    for l, (d, f) in enumerate(zip(blocks, feats)):
        y = d @ f  # [E, 2l+1]
        out = out + torch.tanh(y[:, l]) * (l + 1)
        if l >= 1:
            out = out + (y[:, l - 1] ** 2 + y[:, l + 1] ** 2) * torch.sin(y[:, l])
    return out


def test_roll_invariant_function_is_smooth_across_blend():
    g = torch.Generator().manual_seed(4)
    feats = [torch.randn(2 * l + 1, dtype=F64, generator=g) for l in range(4)]
    v = _path().requires_grad_(True)
    value = _roll_invariant(v, feats)
    (grad,) = torch.autograd.grad(value.sum(), v)
    # central finite differences along all three directions agree with autograd everywhere on the path
    h = 1e-6
    for axis in range(3):
        dv = torch.zeros(3, dtype=F64)
        dv[axis] = h
        fd = (_roll_invariant(v.detach() + dv, feats) - _roll_invariant(v.detach() - dv, feats)) / (2 * h)
        assert torch.allclose(fd, grad[:, axis], atol=1e-6, rtol=1e-6)
    # and the value itself is C^2 along the loop: second differences shrink as h^2
    assert _second_difference_ratio(lambda x: _roll_invariant(x, feats)) > 3.5


def test_roll_dependent_function_detects_the_roll_jump():
    """Control: the single component m = +1 depends on the roll, which jumps where u_x changes sign in the
    blend region; the same finite-difference check must fail there (so the smoothness test above can fail)."""
    g = torch.Generator().manual_seed(5)
    f = torch.randn(3, dtype=F64, generator=g)

    def component(x):
        return (wigner_d(edge_quaternion(x), 1)[1] @ f)[:, 2]

    assert _second_difference_ratio(component) < 1.5


def test_fp32_gradients_finite_at_poles_through_wigner():
    v = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1e-7, 0.0, 1.0], [0.0, 1e-7, -1.0]], requires_grad=True)
    blocks = wigner_d(edge_quaternion(v), 3)
    (g,) = torch.autograd.grad(sum(b.sum() for b in blocks), v, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), v)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()


# ------------------------------------------------------------------ bad input


def test_bad_input_raises():
    with pytest.raises(FrameInputError, match=r"\[\.\.\., 3\]"):
        edge_quaternion(torch.zeros(4, 2))
    with pytest.raises(FrameInputError, match="float32 or float64"):
        edge_quaternion(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(FrameInputError, match="bfloat16"):
        edge_quaternion(torch.zeros(4, 3, dtype=torch.bfloat16))
    with pytest.raises(FrameInputError, match=r"\[\.\.\., 4\], got \(3, 3\)"):
        quaternion_to_matrix(torch.zeros(3, 3))
    # Callers that catch ValueError see the same message.
    with pytest.raises(ValueError, match=r"must have shape \[\.\.\., 3\], got \(4, 2\)"):
        edge_quaternion(torch.zeros(4, 2))
