"""Public name from DEVELOPING.md for the batched engine; the code lives in :mod:`dpa4_core.batch`.

``from dpa4_core.batched import relax_batch, md_batch, RelaxResult`` and ``from dpa4_core.batch import ...``
give the same objects.
"""

from __future__ import annotations

from dpa4_core.batch import *  # noqa: F403 - a pure alias of the package's public names
from dpa4_core.batch import __all__  # noqa: F401
