"""What every checkpoint reader shares: the errors, the validated content, and the one safe way to unpickle.

Split from :mod:`dpa4_core.io.checkpoint` so that the readers of foreign formats (:mod:`dpa4_core.io.deepmd`) and
the checkpoint module can use them without importing each other.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT_TAG = "dpa4-checkpoint"
FORMAT_VERSION = 1
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A file that is not a readable DPA4 checkpoint (corrupt, truncated, foreign or too new)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist (also a ``FileNotFoundError``)."""


@dataclass
class CheckpointData:
    """The validated content of a checkpoint file (see the module docstring for the meaning of each field)."""

    path: Path
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    dtype: torch.dtype
    energy_bias: torch.Tensor | None
    elements: list[int] | None
    versions: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def check_plain(value: Any, where: str) -> None:
    """Raise ``CheckpointError`` unless ``value`` is made of tensors and plain types (``weights_only`` safe)."""
    # Exact types: subclasses (numpy.float64, torch's TorchVersion str) pickle as their class and would
    # make the file unreadable with weights_only=True.
    if type(value) in _PLAIN_SCALARS or isinstance(value, torch.Tensor):
        return
    if type(value) in (dict, OrderedDict):  # a module's state_dict is an OrderedDict, which weights_only reads
        for key, item in value.items():
            if type(key) not in (str, int):
                raise CheckpointError(f"{where}: key {key!r} is not a str or int")
            check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    raise CheckpointError(
        f"{where}: value of type {type(value).__name__} cannot be stored; use tensors, str, int, float, "
        "bool, None, lists, tuples and dicts"
    )


def safe_load(path: Path, map_location: str | torch.device, error: type[ValueError], what: str,
              advice: str = "") -> Any:
    """``torch.load(path, weights_only=True)``: only tensors and plain types are unpickled, never code.

    Any failure (damaged file, or a pickle that needs other classes, i.e. one that could run code) raises
    ``error(f"{path} {what}: <reason>. {advice}")``; the file is never unpickled with ``weights_only=False``.
    """
    try:
        # Files written before versions were stored as plain str hold a TorchVersion (a str subclass).
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            AttributeError, TypeError, KeyError, IndexError, UnicodeDecodeError) as exc:
        # torch raises many different types for damaged files; all mean "not readable".
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        # torch's own text suggests weights_only=False, exactly what must not be done: keep only its detail.
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed|\n\n|$)", str(exc), re.S)
        if isinstance(exc, pickle.UnpicklingError):
            reason = (f"{detail.group(1).strip()[:200] if detail else 'damaged'}; only tensors and plain types are "
                      "read from such files, as anything else could run code")
        raise error(f"{path} {what}: {reason}" + (f". {advice}" if advice else "")) from exc
