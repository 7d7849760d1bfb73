"""A deepmd-kit DPA4 ``.pt`` written as dpa4's own checkpoint, with where it came from (``dpa4 convert-deepmd``).

Every loader already takes a deepmd-kit file directly; converting once saves the option check and weight map on
each load, fixes the head of a multi-task file, and keeps the provenance in the file itself
(``metadata["converted_from"]``: the source's path and sha256, deepmd-kit's descriptor version tag, the type map,
head and training step; :func:`dpa4_core.io.deepmd.provenance`). The result is a plain dpa4 checkpoint
(``torch.load(weights_only=True)``), so ``dpa4 info`` shows all of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dpa4_core.io.checkpoint import model_from_data, save_checkpoint
from dpa4_core.io.checkpoint_data import CheckpointError
from dpa4_core.io.deepmd_weights import deepmd_checkpoint_data


def convert_deepmd(source: str | os.PathLike, destination: str | os.PathLike, head: str | None = None,
                   dtype: torch.dtype = torch.float64) -> Path:
    """Write the deepmd-kit DPA4 checkpoint ``source`` (its head ``head`` if multi-task) to ``destination`` as a
    dpa4 checkpoint in ``dtype``; returns the path written.

    float64 (default) keeps the weight map's folded constants exact (see ``deepmd_checkpoint_data``); float32
    halves the file and differs from the source's function by float32 rounding.

    Raises:
        CheckpointNotFoundError: no ``source``.
        CheckpointError: ``source`` is not a deepmd-kit DPA4 file (a dpa4 checkpoint included: nothing to convert),
            uses an option dpa4 does not reproduce (named), or has no head ``head``; ``destination`` is ``source``.
    """
    source = Path(source).expanduser().resolve()
    destination = Path(destination).expanduser().resolve()
    if destination == source:
        raise CheckpointError(f"{destination}: the converted file must not replace its source")
    data = deepmd_checkpoint_data(source, None, head=head)  # a dpa4 checkpoint is refused here: not deepmd-kit's
    origin = data.metadata["converted_from"]
    model = model_from_data(data).to(dtype)
    note = f"converted from deepmd-kit DPA4 checkpoint {source.name}" + (f", head {origin['head']}"
                                                                          if origin.get("head") else "")
    return save_checkpoint(model, destination, metadata={"converted_from": origin, "note": note})
