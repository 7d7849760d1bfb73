"""Tracing DPA4's energy and edge gradient into one pure aten graph (steps 1-3 of the recipe in
:mod:`dpa4_core.train.compile`): the pure function built from ``model.atom_energies`` with
:func:`torch.func.functional_call`, traced by ``make_fx(tracing_mode="symbolic")`` with the atom and edge counts
symbolic, ``aten.silu_backward`` decomposed (it has no double backward) and the ``aten.detach`` nodes removed.
:func:`energy_and_edge_gradient` is the eager reference of the same function.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)
aten = torch.ops.aten

# Sizes of the synthetic tracing sample: distinct from each other and from 0/1, so that atoms and edges get
# independent symbols (equal sizes would be unified by duck sizing; 0/1 would be specialised).
_TRACE_ATOMS = 13
_TRACE_EDGES = 97


def _silu_backward(grad_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d silu(x)/dx * grad written in differentiable ops (aten.silu_backward has no double backward)."""
    s = torch.sigmoid(x)
    return grad_output * s * (1 + x * (1 - s))


_DECOMPOSITIONS = {aten.silu_backward.default: _silu_backward}


def bf16_autocast(device: torch.device, enabled: bool):
    """bf16 autocast for the network on ``device`` (a null context when disabled)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class AtomEnergyModule(nn.Module):
    """``forward`` = ``model.atom_energies`` so :func:`torch.func.functional_call` can swap its weights."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, numbers, edge_vec, edge_src, edge_dst):
        return self.model.atom_energies(numbers, edge_vec, edge_src, edge_dst)


def energy_and_edge_gradient(
    model: nn.Module,
    numbers: torch.Tensor,
    edge_vec: torch.Tensor,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager reference: per-atom energy ``[N]`` (eV) and ``dE/d edge_vec`` ``[E, 3]`` (eV/A), with graph.

    Both outputs keep their autograd graph (``create_graph=True``), so a loss on forces trains the weights.
    Outputs are cast to ``edge_vec.dtype``.
    """
    with torch.enable_grad():
        vec = edge_vec if edge_vec.requires_grad else edge_vec.detach().requires_grad_(True)
        with bf16_autocast(vec.device, bf16):
            atom_energy = model.atom_energies(numbers, vec, edge_src, edge_dst)
        atom_energy = atom_energy.to(vec.dtype)
        (edge_grad,) = torch.autograd.grad(atom_energy.sum(), vec, create_graph=True)
    return atom_energy, edge_grad.to(vec.dtype)


def _fake_inputs(params, buffers, sample):
    """Fake tensors for tracing: weights with static shapes, atom and edge counts symbolic.

    Making only the leading dimension of ``numbers``, ``edge_vec``, ``edge_src`` and ``edge_dst`` symbolic
    keeps symbolic reasoning cheap (a fully symbolic trace of DPA4 "tiny" takes ~6x longer) and avoids duck
    sizing unifying a batch size with an equal weight dimension (then specialising both).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=False)

    def dynamic_first_dim(t):
        sizes = [DimDynamic.DYNAMIC] + [DimDynamic.STATIC] * (t.dim() - 1)
        return mode.from_tensor(t, symbolic_context=StatelessSymbolicContext(dynamic_sizes=sizes))

    fake_params = [mode.from_tensor(p, static_shapes=True) for p in params]
    fake_buffers = [mode.from_tensor(b, static_shapes=True) for b in buffers]
    return fake_params, fake_buffers, [dynamic_first_dim(t) for t in sample]


def _check_symbolic(gm: torch.fx.GraphModule, n_inputs: int) -> None:
    """Raise if the atom or edge count was specialised to a constant in the trace (it would not generalise)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for name, node in zip(("numbers", "edge_vec", "edge_src", "edge_dst"), placeholders[n_inputs:]):
        value = node.meta.get("val")
        if value is not None and isinstance(value.shape[0], int):
            raise RuntimeError(
                f"the traced graph specialised {name}.shape[0] to {value.shape[0]}; the model has a shape-dependent"
                " Python branch or conversion (int(...)) on the atom/edge count"
            )


def _strip_detach(gm: torch.fx.GraphModule) -> int:
    """Remove ``aten.detach`` nodes in place (spec section 7, step 3); returns how many were removed.

    This also removes detaches written in the model. DPA4's only one (the attention's per-destination max
    shift) multiplies a quantity its output does not depend on, so its extra gradient is zero up to round-off;
    a model relying on a stop-gradient for its value would need a different marker.
    """
    removed = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in (aten.detach.default, aten.detach):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed += 1
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return removed


def trace_energy_and_edge_gradient(
    model: nn.Module, sample: tuple[torch.Tensor, ...], bf16: bool = False
) -> tuple[torch.fx.GraphModule, list[str], list[str]]:
    """Trace the pure function ``(params, buffers, numbers, edge_vec, edge_src, edge_dst) -> (E_i, dE/dr)``.

    Args:
        model: a module with ``atom_energies(numbers, edge_vec, edge_src, edge_dst)``.
        sample: ``(numbers [N], edge_vec [E, 3], edge_src [E], edge_dst [E])`` with N, E distinct and > 1.
        bf16: trace under bf16 autocast (the casts are recorded in the graph).

    Returns:
        The traced graph (detach nodes removed) and the parameter and buffer names, in the order the graph
        expects them.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    wrapper = AtomEnergyModule(model)
    param_names = [name for name, _ in wrapper.named_parameters()]
    buffer_names = [name for name, _ in wrapper.named_buffers()]
    device = sample[1].device

    def energy_and_gradient(params, buffers, numbers, edge_vec, edge_src, edge_dst):
        weights = dict(zip(param_names, params))
        weights.update(zip(buffer_names, buffers))
        with torch.enable_grad():
            vec = edge_vec.requires_grad_(True) if not edge_vec.requires_grad else edge_vec
            with bf16_autocast(device, bf16):
                atom_energy = torch.func.functional_call(wrapper, weights, (numbers, vec, edge_src, edge_dst))
            atom_energy = atom_energy.to(vec.dtype)
            (edge_grad,) = torch.autograd.grad(atom_energy.sum(), vec, create_graph=True)
        return atom_energy, edge_grad.to(vec.dtype)

    params = [p for _, p in wrapper.named_parameters()]
    buffers = [b for _, b in wrapper.named_buffers()]
    fake_params, fake_buffers, fake_sample = _fake_inputs(params, buffers, sample)
    gm = make_fx(energy_and_gradient, tracing_mode="symbolic", decomposition_table=_DECOMPOSITIONS)(
        fake_params, fake_buffers, *fake_sample
    )
    _check_symbolic(gm, n_inputs=len(params) + len(buffers))
    removed = _strip_detach(gm)
    logger.debug("traced energy+gradient graph: %d nodes, %d detach nodes removed", len(gm.graph.nodes), removed)
    return gm, param_names, buffer_names


def trace_sample(numbers: torch.Tensor, edge_vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A synthetic tracing sample with the batch's elements, dtype and device and sizes 13 atoms / 97 edges.

    Values do not matter (the model has no control flow on values); edge lengths lie in 1.5-3.5 A.
    """
    generator = torch.Generator().manual_seed(0)
    pick = torch.randint(0, numbers.shape[0], (_TRACE_ATOMS,), generator=generator)
    direction = torch.nn.functional.normalize(torch.randn(_TRACE_EDGES, 3, generator=generator, dtype=torch.float64), dim=1)
    length = 1.5 + 2.0 * torch.rand(_TRACE_EDGES, 1, generator=generator, dtype=torch.float64)
    src = torch.randint(0, _TRACE_ATOMS, (_TRACE_EDGES,), generator=generator)
    dst = (src + torch.randint(1, _TRACE_ATOMS, (_TRACE_EDGES,), generator=generator)) % _TRACE_ATOMS
    device = edge_vec.device
    return (
        numbers.detach()[pick.to(numbers.device)],
        (direction * length).to(device=device, dtype=edge_vec.dtype),
        src.to(device),
        dst.to(device),
    )
