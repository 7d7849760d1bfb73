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

Steps 1-3 (the pure function, its trace, the decompositions and detach removal) live in
:mod:`dpa4_core.train.trace`; this module compiles the trace and calls it (:class:`Predictor`).

The trace is redone only when the model's parameters change identity (or dtype/device, train/eval mode, bf16),
never per step; compilations are counted per predictor (``predictor.recompiles``). If tracing or compiling
fails, the predictor warns once (:class:`CompileFallbackWarning`) and continues eagerly.

bf16: the network runs under ``torch.autocast(dtype=torch.bfloat16)``; the model keeps geometry, Wigner-D,
envelopes, norms and the attention softmax in fp32 by disabling autocast locally. Outputs are returned in the
batch's dtype (fp32 or fp64).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch._dynamo
from torch import nn

from dpa4_core.model.derivatives import forces_and_virial, forces_and_virial_from_gradient, stress_from_virial
from dpa4_core.model.domain import check_neighbor_cap
from dpa4_core.train.trace import AtomEnergyModule, bf16_autocast, trace_energy_and_edge_gradient, trace_sample

if TYPE_CHECKING:
    from collections.abc import Callable

    from dpa4_core.data.batch import AtomsBatch

logger = logging.getLogger(__name__)


class CompileFallbackWarning(UserWarning):
    """torch.compile was unavailable or failed; the predictor continues eagerly (same results, slower)."""


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
        self._wrapper = AtomEnergyModule(model)

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
                self.model, trace_sample(numbers, edge_vec), bf16=self.bf16
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
        config = getattr(self.model, "config", None)
        check_neighbor_cap(getattr(config, "neighbor_cap", 0), batch.edge_dst, batch.n_atoms)
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
                with bf16_autocast(vec.device, self.bf16):
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
