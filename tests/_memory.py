"""Memory profiling for the tests: what autograd keeps for the backward pass."""

from __future__ import annotations

import torch


def saved_tensor_bytes(fn):
    """``(fn(), bytes)``: the result of ``fn`` and the bytes of the distinct storages autograd saved for backward
    while it ran (views of one storage count once; a dtype cast is a new storage)."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())
