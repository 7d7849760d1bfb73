"""dpa4_flows: DPA4 as jobflow jobs and flows (relax, static, MD, stability, fine-tuning, screening).

Flow: structures -> Makers in :mod:`dpa4_flows.jobs` -> flows in :mod:`dpa4_flows.flows` -> a jobflow ``JobStore``
(:mod:`dpa4_flows.execution.stores`) -> resumable execution (:func:`run_resumable`) -> tables
(:mod:`dpa4_flows.execution.results`). :mod:`dpa4_flows.execution` knows nothing of DPA4.
"""

from __future__ import annotations

__all__ = ["run_resumable", "embedded_store", "compute_stability"]


def __getattr__(name: str):
    # Lazy re-exports keep `import dpa4_flows` light (atomate2 and torch load only when used).
    if name == "run_resumable":
        from dpa4_flows.execution.runner import run_resumable

        return run_resumable
    if name == "embedded_store":
        from dpa4_flows.execution.stores import embedded_store

        return embedded_store
    if name == "compute_stability":
        from dpa4_flows.analysis.stability import compute_stability

        return compute_stability
    raise AttributeError(f"module 'dpa4_flows' has no attribute {name!r}")
