"""Fast batched inference for screening: many structures per model call.

``relax_batch`` relaxes structures (FIRE or L-BFGS, optional Frechet cell filter) with in-flight batching and
results identical to ASE's one-at-a-time optimisers; ``md_batch`` runs Langevin NVT for many candidates at once as
a quick stability check. Both take ASE Atoms or pymatgen structures and a DPA4 model or checkpoint path.
"""

from __future__ import annotations

from dpa4_core.batch.md import MDResult, md_batch
from dpa4_core.batch.optimizers import FIRE, LBFGS, OptimizerConfigError
from dpa4_core.batch.relax import RelaxResult, relax_batch
from dpa4_core.batch.runner import BatchSetupError, ModelRunner

__all__ = [
    "FIRE",
    "LBFGS",
    "BatchSetupError",
    "MDResult",
    "ModelRunner",
    "OptimizerConfigError",
    "RelaxResult",
    "md_batch",
    "relax_batch",
]
