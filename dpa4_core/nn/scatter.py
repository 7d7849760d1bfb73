"""Sums of per-edge values into their atoms, with a backward that keeps only the index.

``torch.index_add`` saves its whole ``source`` for backward (its derivative formula refers to the source's
shape through the tensor), so every per-edge message summed with it is held twice: once by the op that made it
and once as a copy in the sum's dtype. ``scatter_add`` with the index expanded as a stride-0 view needs only the
index (an ``[E]`` integer vector) for its gradient, ``grad.gather(index)``, which is itself differentiable, so the
force double backward works unchanged. Same result; the saving is the largest per-edge tensor of every block (the
biggest single item of training memory under bf16 autocast). The gradient is taken by ``index_select`` (a
custom autograd function): autograd's own ``gather`` with the expanded index is ~15x slower on CPU.
"""

from __future__ import annotations

import torch


def scatter_sum(values: torch.Tensor, index: torch.Tensor, n_out: int, dtype: torch.dtype | None = None
                ) -> torch.Tensor:
    """``out[i] = sum_{e: index[e] = i} values[e]``: ``values [E, ...]``, ``index [E]`` -> ``[n_out, ...]``.

    Args:
        dtype: accumulate and return in this dtype (default ``values.dtype``); the cast copy is not saved.
    """
    dtype = values.dtype if dtype is None else dtype
    return _ScatterSum.apply(values.to(dtype), index, n_out)


class _ScatterSum(torch.autograd.Function):
    """The sum, saving only ``index``; its gradient ``grad[index]`` by ``index_select`` (a row copy), itself
    differentiable (the force double backward). autograd's own gradient of ``scatter_add``, a ``gather`` with the
    stride-0 expanded index, is ~15x slower on CPU (54 atoms x 16 rows x 64 channels: 16 ms against 1.1 ms)."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, index: torch.Tensor, n_out: int) -> torch.Tensor:
        ctx.save_for_backward(index)
        expanded = index.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
        out = torch.zeros((n_out, *values.shape[1:]), dtype=values.dtype, device=values.device)
        return out.scatter_add(0, expanded, values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None
