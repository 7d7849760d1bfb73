"""Dynamics: batched relaxation and the MD family (one system through ASE, many through the batched engine).

``relax_batch`` relaxes structures (FIRE or L-BFGS, optional Frechet cell filter) with in-flight batching and
results identical to ASE's one-at-a-time optimisers; ``md_batch`` runs Langevin NVT for many candidates at once as
a quick stability check. Both take ASE Atoms or pymatgen structures and a DPA4 model or checkpoint path.
``run_md``/``make_dynamics`` run one system through ASE's integrators; the ensemble names of all MD entry points
(and of the atomate2 job in ``dpa4_flows.jobs.md``) are defined once in :mod:`dpa4_core.dynamics.ensembles`.

Why our own engine and not torch-sim (``torch-sim-atomistic`` 0.3.0 installs on Python 3.11 / torch 2.13 and DPA4
could implement its ``ModelInterface``): its ``optimize`` has one global ``max_steps`` and no per-structure step
count or converged flag, tests convergence only every ``steps_between_swaps`` steps (so results differ from ASE's
one-at-a-time runs), leaves neighbour lists to the model on every call (no skin reuse across steps, where most of
the per-step time of small cells goes), keeps cells as columns beside ASE's rows, and pulls in h5py and PyTables.
Ours follows ASE's FIRE/LBFGS + FrechetCellFilter step for step (same step counts, energies to round-off).
"""

from __future__ import annotations

from dpa4_core.dynamics.ase_md import MDLog, MDSetupError, make_dynamics, run_md
from dpa4_core.dynamics.ensembles import ENSEMBLES, Ensemble, parse_ensemble
from dpa4_core.dynamics.md import MDResult, md_batch
from dpa4_core.dynamics.optimizers import FIRE, LBFGS, OptimizerConfigError
from dpa4_core.dynamics.relax import RelaxResult, relax_batch
from dpa4_core.dynamics.runner import BatchSetupError, ModelRunner
from dpa4_core.dynamics.snapshot import as_input_type, snapshot

__all__ = [
    "ENSEMBLES",
    "FIRE",
    "LBFGS",
    "BatchSetupError",
    "Ensemble",
    "MDLog",
    "MDResult",
    "MDSetupError",
    "ModelRunner",
    "OptimizerConfigError",
    "RelaxResult",
    "as_input_type",
    "make_dynamics",
    "md_batch",
    "parse_ensemble",
    "relax_batch",
    "run_md",
    "snapshot",
]
