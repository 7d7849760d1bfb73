"""Speed guards for the deepmd-kit-compatible modules (benchmarks/deepmd/speed.py): the patterns that profiling
found slow on CPU stay out. Each test inspects the aten operations a module dispatches, so it does not depend on
the machine's speed."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dpa4_core.nn.ffn_so3 import SO3GridFFN


class Recorder(TorchDispatchMode):
    """Records (op name, tensor arguments) of every aten call."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, list[torch.Tensor]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func.__name__, [a for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def broadcast_bmms(calls) -> list[tuple]:
    """Batched products over several matrices one of which is a broadcast (stride-0) copy of one matrix: a single
    matrix product in disguise, several times slower on CPU."""
    return [tuple(t.shape for t in tensors) for name, tensors in calls if name.startswith("bmm")
            and tensors[0].shape[0] > 1 and any(t.stride(0) == 0 for t in tensors)]


@pytest.mark.parametrize("op", ["glu", "mlp", "branch"])
def test_so3_grid_ffn_channel_maps_are_plain_matrix_products(op):
    """As in inference (frozen weights, inputs carrying the force graph), where torch.matmul would not fold the
    non-contiguous rows of the lift and runs a batched product per (atom, degree row) instead."""
    torch.manual_seed(0)
    ffn = SO3GridFFN(8, 6, 2, 1, op, branches=2).requires_grad_(False)
    x = torch.randn(5, 9, 8, requires_grad=True)
    with Recorder() as recorder:
        ffn(x).square().sum().backward()
    assert broadcast_bmms(recorder.calls) == []


@pytest.mark.parametrize("op", ["glu", "mlp", "branch"])
def test_so3_grid_ffn_scalar_row_alone_equals_the_full_result(op):
    """The read-out (``so3_readout``) needs only the l = 0 row: computing that row alone gives the full FFN's."""
    torch.manual_seed(1)
    ffn = SO3GridFFN(8, 6, 2, 1, op, branches=2).double()
    with torch.no_grad():
        ffn.project.weight.normal_()  # zero-initialised: would hide the rows
    x = torch.randn(5, 9, 8, dtype=torch.float64)
    row = ffn(x, scalar_only=True)
    assert row.shape == (5, 1, 8)
    torch.testing.assert_close(row[:, 0], ffn(x)[:, 0], rtol=1e-13, atol=1e-13)


def test_deepmd_convolution_scales_the_rotation_not_the_edge_features():
    """The sign map, the degree rescaling and (one attention stream) the attention weight multiply the [E, K, P]
    rotation, and the SO(2) layers split their input once: no elementwise product or slice gradient of a per-edge
    feature tensor [E, rows, (1,) C] remains for them, forward or backward."""
    from dpa4_core.geometry.edge_cache import build_edge_cache
    from dpa4_core.nn.block_deepmd import DeepmdConvolution

    torch.manual_seed(0)
    conv = DeepmdConvolution(8, 2, 1, 2, 1, 1).requires_grad_(False)
    positions = torch.randn(6, 3) * 1.5
    src, dst = (t.flatten() for t in torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij"))
    src, dst = src[src != dst], dst[src != dst]
    vectors = (positions[src] - positions[dst]).requires_grad_(True)
    cache = build_edge_cache(vectors, src, dst, 6, cutoff=5.0, r_in=0.5, r_out=0.8, lmax=2, mmax=1)
    with Recorder() as recorder:
        conv(torch.randn(6, 9, 8), cache, torch.randn(30, 3, 8)).square().sum().backward()
    row_scalings = [tuple(t.shape for t in tensors) for name, tensors in recorder.calls
                    if name.startswith("mul") and len(tensors) == 2
                    and {tuple(t.shape) for t in tensors} & {(1, 7, 1), (1, 9, 1), (30, 1, 1, 1)}
                    and any(t.shape[0] == 30 and t.shape[-1] == 8 for t in tensors)]  # features, C = 8
    slice_gradients = [tuple(t.shape for t in tensors) for name, tensors in recorder.calls
                       if name.startswith(("slice_backward", "select_backward")) and tensors[0].shape[0] == 30]
    assert row_scalings == [] and slice_gradients == []
