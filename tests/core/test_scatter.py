"""scatter_sum: the per-edge -> per-atom sum used by the model, and why it exists (memory of the backward)."""

from __future__ import annotations

import torch

from dpa4_core.nn.scatter import scatter_sum
from _memory import saved_tensor_bytes


def test_scatter_sum_equals_index_add_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(40, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.randint(0, 7, (40,), generator=gen)
    ref = torch.zeros(7, 5, 3, dtype=torch.float64).index_add(0, index, values)
    out = scatter_sum(values, index, 7)
    torch.testing.assert_close(out, ref, rtol=1e-15, atol=1e-15)
    weights = torch.randn(7, 5, 3, dtype=torch.float64, generator=gen)
    (g_out,) = torch.autograd.grad((out * weights).sum(), values)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), values)
    torch.testing.assert_close(g_out, g_ref)
    assert torch.autograd.gradgradcheck(lambda v: scatter_sum(v ** 2, index, 7), (values,))


def test_scatter_sum_accumulates_in_the_requested_dtype_and_saves_only_the_index():
    values = torch.randn(500, 16, 8, dtype=torch.bfloat16, requires_grad=True)
    index = torch.randint(0, 20, (500,))
    out, saved = saved_tensor_bytes(lambda: scatter_sum(values, index, 20, dtype=torch.float32))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.zeros(20, 16, 8).index_add(0, index, values.float()))
    assert saved <= index.numel() * index.element_size()  # no copy of the [500, 16, 8] values is kept
    _, saved_index_add = saved_tensor_bytes(lambda: torch.zeros(20, 16, 8).index_add(0, index, values.float()))
    assert saved_index_add >= values.numel() * 4  # the control: index_add keeps the fp32 copy


def test_scatter_sum_gradient_copies_rows_instead_of_gathering_elements():
    """The gradient is ``grad[index]`` by index_select; autograd's own (a gather with the stride-0 expanded index,
    one index per element) is ~15x slower on CPU (benchmarks/deepmd/speed.py profile)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    values = torch.randn(40, 5, 3, requires_grad=True)
    index = torch.randint(0, 7, (40,))
    out = scatter_sum(values, index, 7)
    with Ops() as ops:
        out.backward(torch.randn(7, 5, 3))
    assert "gather" not in ops.names and "index_select" in ops.names
