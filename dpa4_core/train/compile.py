"""Energy, forces, virial and stress for training, eager or compiled, optionally under bf16 autocast.

Spec section 7 ("Compiled training with forces in the loss"). A force loss needs d2E/(dR dtheta): the
forces come from ``autograd.grad(E, edge_vec, create_graph=True)`` and ``loss.backward()`` differentiates
that gradient again with respect to the weights. ``torch.compile`` cannot differentiate a
``create_graph=True`` gradient taken inside a compiled region, so the compiled path follows the spec's recipe:

1. one pure tensor function ``(params, buffers, numbers, edge_vec, edge_src, edge_dst) ->
   (atom_energy [N], dE/d edge_vec [E, 3])`` built from ``model.atom_energies`` with
   :func:`torch.func.functional_call` (neighbour search and gathers stay outside);
2. traced to an aten graph with ``make_fx(tracing_mode="symbolic")``, decomposing ``aten.silu_backward``
   (it has no double backward) into differentiable ops;
3. the ``aten.detach`` nodes that autograd inserts around saved tensors are removed: left in place, they cut
   the path from the weights to the forces and the force loss silently stops training the weights;
4. the traced graph is compiled with ``torch.compile``, the atom and edge counts marked dynamic (the weights
   keep static shapes: ``dynamic=True`` would make every weight dimension symbolic too, which multiplies
   tracing and compilation time); the training step's ``loss.backward()`` is then an ordinary first-order
   backward through the compiled graph.

The trace is redone only when the model's parameters change identity (or dtype/device, train/eval mode, bf16),
never per step; compilations are counted per predictor (``predictor.recompiles``). If tracing or compiling
fails, the predictor warns once (:class:`CompileFallbackWarning`) and continues eagerly.

bf16: the network runs under ``torch.autocast(dtype=torch.bfloat16)``; the model keeps geometry, Wigner-D,
envelopes, norms and the attention softmax in fp32 by disabling autocast locally. Outputs are returned in the
batch's dtype (fp32 or fp64).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch._dynamo
from torch import nn

from dpa4_core.model.derivatives import forces_and_virial, forces_and_virial_from_gradient, stress_from_virial

if TYPE_CHECKING:
    from collections.abc import Callable

    from dpa4_core.data.batch import AtomsBatch

logger = logging.getLogger(__name__)
aten = torch.ops.aten

# Sizes of the synthetic tracing sample: distinct from each other and from 0/1, so that atoms and edges get
# independent symbols (equal sizes would be unified by duck sizing; 0/1 would be specialised).
_TRACE_ATOMS = 13
_TRACE_EDGES = 97


class CompileFallbackWarning(UserWarning):
    """torch.compile was unavailable or failed; the predictor continues eagerly (same results, slower)."""


def _silu_backward(grad_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d silu(x)/dx * grad written in differentiable ops (aten.silu_backward has no double backward)."""
    s = torch.sigmoid(x)
    return grad_output * s * (1 + x * (1 - s))


_DECOMPOSITIONS = {aten.silu_backward.default: _silu_backward}


def _autocast(device: torch.device, enabled: bool):
    """bf16 autocast for the network on ``device`` (a null context when disabled)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class _AtomEnergyModule(nn.Module):
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
        with _autocast(vec.device, bf16):
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

    wrapper = _AtomEnergyModule(model)
    param_names = [name for name, _ in wrapper.named_parameters()]
    buffer_names = [name for name, _ in wrapper.named_buffers()]
    device = sample[1].device

    def energy_and_gradient(params, buffers, numbers, edge_vec, edge_src, edge_dst):
        weights = dict(zip(param_names, params))
        weights.update(zip(buffer_names, buffers))
        with torch.enable_grad():
            vec = edge_vec.requires_grad_(True) if not edge_vec.requires_grad else edge_vec
            with _autocast(device, bf16):
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


def _trace_sample(numbers: torch.Tensor, edge_vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
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


@dataclass
class _CompiledGraph:
    """One trace + its compiled callable, valid while ``key`` matches the model."""

    key: tuple
    fn: Callable
    params: list[torch.Tensor]
    buffer_names: list[str]
    first_call_done: bool = False


class Predictor:
    """``Predictor(batch) -> dict`` of energy ``[F]``, forces ``[N,3]``, virial/stress ``[F,3,3]``, atom_energy ``[N]``.

    All outputs keep their autograd graph: ``loss.backward()`` on any of them (forces and stress included)
    gives parameter gradients. Units: eV, eV/A, eV, eV/A^3 (ASE sign); dtype of the batch.

    Attributes:
        compiled: True while the compiled path is in use (False when eager or after a fallback).
        recompiles: compilations beyond one per trace (0 when shapes stay symbolic).
        traces: how many times the graph was traced (1 unless the parameters changed identity).
    """

    def __init__(self, model: nn.Module, compile: bool = False, bf16: bool = False, backend: str = "inductor"):
        if not callable(getattr(model, "atom_energies", None)):
            raise TypeError(f"{type(model).__name__} has no atom_energies(numbers, edge_vec, edge_src, edge_dst)")
        self.model = model
        self.bf16 = bool(bf16)
        self.compiled = bool(compile)
        self.backend = backend
        self.traces = 0
        self.compiles = 0
        self._graph: _CompiledGraph | None = None
        self._wrapper = _AtomEnergyModule(model)

    @property
    def recompiles(self) -> int:
        return max(0, self.compiles - self.traces)

    # ------------------------------------------------------------------ compiled path
    def _backend(self, gm, example_inputs):
        """The compiler backend (inductor), counting every compilation dynamo asks for (first and recompiles)."""
        self.compiles += 1
        from torch._dynamo import lookup_backend

        return lookup_backend(self.backend)(gm, example_inputs)

    def _key(self, edge_vec: torch.Tensor) -> tuple:
        params = tuple((id(p), p.dtype, p.device) for p in self.model.parameters())
        buffers = tuple((b.shape, b.dtype, b.device) for b in self.model.buffers())
        return params, buffers, edge_vec.dtype, edge_vec.device, self.model.training, self.bf16

    def _compiled_graph(self, numbers: torch.Tensor, edge_vec: torch.Tensor) -> _CompiledGraph:
        key = self._key(edge_vec)
        if self._graph is None or self._graph.key != key:
            gm, param_names, buffer_names = trace_energy_and_edge_gradient(
                self.model, _trace_sample(numbers, edge_vec), bf16=self.bf16
            )
            self.traces += 1
            fn = torch.compile(gm, backend=self._backend)
            named = dict(self._wrapper.named_parameters())
            self._graph = _CompiledGraph(key, fn, [named[name] for name in param_names], buffer_names)
            logger.info("traced the energy+gradient graph (trace %d)", self.traces)
        return self._graph

    def _compiled_energy_and_gradient(self, numbers, edge_vec, edge_src, edge_dst):
        graph = self._compiled_graph(numbers, edge_vec)
        # Parameters are fixed by the key (identity); buffers are looked up each call since a bias refit may
        # replace them.
        wrapper_buffers = dict(self._wrapper.named_buffers())
        buffers = [wrapper_buffers[name] for name in graph.buffer_names]
        params = graph.params
        # Only the atom and edge counts are dynamic (see _fake_inputs); weights keep static shapes.
        for tensor in (numbers, edge_vec, edge_src, edge_dst):
            torch._dynamo.mark_dynamic(tensor, 0)
        return graph.fn(params, buffers, numbers, edge_vec, edge_src, edge_dst)

    # ------------------------------------------------------------------ public
    def _try_compiled(self, numbers, edge_vec, edge_src, edge_dst) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Compiled ``(atom_energy, dE/d edge_vec)``, or None after falling back to eager (one warning)."""
        graph = self._graph
        if graph is not None and graph.first_call_done and graph.key == self._key(edge_vec):
            return self._compiled_energy_and_gradient(numbers, edge_vec, edge_src, edge_dst)
        try:  # a new trace: tracing and compilation errors mean "compile unavailable", not bad input
            out = self._compiled_energy_and_gradient(numbers, edge_vec, edge_src, edge_dst)
        except Exception as exc:  # noqa: BLE001
            self.compiled = False
            self._graph = None
            warnings.warn(
                f"torch.compile of the energy+force graph failed ({type(exc).__name__}: {exc}); "
                "continuing eagerly (same results, slower)",
                CompileFallbackWarning,
                stacklevel=3,
            )
            return None
        self._graph.first_call_done = True
        return out

    def __call__(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        edge_vec = batch.edge_vectors()
        edge_frame = batch.frame[batch.edge_dst]
        compiled = None
        if self.compiled:
            compiled = self._try_compiled(batch.numbers, edge_vec, batch.edge_src, batch.edge_dst)
        if compiled is not None:
            atom_energy, edge_grad = compiled
            forces, virial = forces_and_virial_from_gradient(
                edge_grad, edge_vec, batch.edge_src, batch.edge_dst, batch.n_atoms, edge_frame, batch.n_frames
            )
        else:
            with torch.enable_grad():
                vec = edge_vec if edge_vec.requires_grad else edge_vec.detach().requires_grad_(True)
                with _autocast(vec.device, self.bf16):
                    atom_energy = self.model.atom_energies(batch.numbers, vec, batch.edge_src, batch.edge_dst)
                atom_energy = atom_energy.to(vec.dtype)
                forces, virial = forces_and_virial(
                    atom_energy, vec, batch.edge_src, batch.edge_dst, batch.n_atoms,
                    edge_frame=edge_frame, n_frames=batch.n_frames, create_graph=True,
                )
        energy = torch.zeros(batch.n_frames, dtype=atom_energy.dtype, device=atom_energy.device)
        energy = energy.index_add(0, batch.frame, atom_energy)
        stress = stress_from_virial(virial, batch.cell, batch.pbc)
        virial = torch.where(batch.pbc.all(dim=-1)[:, None, None], virial, torch.zeros_like(virial))
        return dict(energy=energy, forces=forces, virial=virial, stress=stress, atom_energy=atom_energy)


def make_predictor(model: nn.Module, compile: bool = False, bf16: bool = False,
                   backend: str = "inductor") -> Predictor | nn.Module:
    """Predictor for training: eager or compiled (spec section 7), fp32/fp64 or bf16 autocast.

    Args:
        model: a DPA4 (or any module with the ``atom_energies`` pure function). A custom model without
            ``atom_energies`` is returned as it is: it is its own predictor (``model(batch)``; no compile or bf16).
        compile: trace energy + edge gradient with make_fx and compile it (falls back to eager with one
            :class:`CompileFallbackWarning` if that fails).
        bf16: run the network under bf16 autocast (geometry and normalisations stay fp32 in the model).
        backend: torch.compile backend; ``"aot_eager"`` runs the same traced graph and AOT-autograd backward
            without generating C++ (a cheap check of the recipe: inductor's C++ build of a DPA4 graph takes
            minutes on a small CPU).
    """
    if not callable(getattr(model, "atom_energies", None)):
        return model
    return Predictor(model, compile=compile, bf16=bf16, backend=backend)
