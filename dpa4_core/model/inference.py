"""Compiled inference: ``torch.compile`` of the pure energy function, forces still by one autograd pass.

Compiling ``DPA4.forward`` as a whole breaks the graph at ``torch.autograd.grad``; compiling only
:meth:`DPA4.atom_energies` (a pure tensor function, dynamic shapes) lets inductor fuse the many per-edge
element-wise operations, and AOTAutograd supplies the backward that gives forces and virial.
Compilation costs minutes on a CPU, so it pays off for long MD runs or large screening batches, not single calls.
"""

from __future__ import annotations

import torch


def compile_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Replace ``model.atom_energies`` by its compiled version (in place) and return the model.

    Use on an inference copy (``model.eval()``, parameters not requiring grad); results equal eager to round-off.
    """
    if getattr(model, "_compiled_for_inference", False):
        return model
    model.atom_energies = torch.compile(model.atom_energies, dynamic=True)
    model._compiled_for_inference = True
    return model
