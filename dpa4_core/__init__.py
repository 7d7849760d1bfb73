"""dpa4_core: the DPA4 interatomic potential (model, calculator, trainer). Never imports jobflow."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["DPA4", "DPA4Config", "DPA4Calculator", "AtomsBatch", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import dpa4_core` stays cheap and sub-packages import independently.
    if name == "DPA4":
        from dpa4_core.model.energy import DPA4

        return DPA4
    if name == "DPA4Config":
        from dpa4_core.config import DPA4Config

        return DPA4Config
    if name == "DPA4Calculator":
        from dpa4_core.calculator import DPA4Calculator

        return DPA4Calculator
    if name == "AtomsBatch":
        from dpa4_core.data.batch import AtomsBatch

        return AtomsBatch
    raise AttributeError(f"module 'dpa4_core' has no attribute {name!r}")
