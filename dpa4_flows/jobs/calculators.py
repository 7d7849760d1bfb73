"""One loaded model (and its calculator) per process, keyed by (checkpoint, device, dtype).

FireWorks and jobflow-remote deserialise every job, so a maker-level cache would reload the model per
job; this module-level cache loads each checkpoint once per process. The key includes the file's size and
modification time so that a checkpoint overwritten in place is reloaded rather than served stale.

Any other ASE calculator given by import path (e.g. ``"ase.calculators.emt.EMT"``, used to test the
plumbing) is cached per (import path, keyword arguments) the same way.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from functools import lru_cache
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

logger = logging.getLogger(__name__)

#: ``calculator_meta`` value that selects DPA4 (the class is re-exported by ``dpa4_core``).
DPA4_CALCULATOR_META = "dpa4_core.DPA4Calculator"

_LOCK = threading.Lock()
_MODELS: dict[tuple, Any] = {}
_CALCULATORS: dict[tuple, Any] = {}


class ModelFileError(ValueError):
    """The checkpoint path does not name a readable file."""


def checkpoint_path(path: str | Path) -> Path:
    """Absolute path of an existing checkpoint file, or :class:`ModelFileError` naming the bad path."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ModelFileError(f"DPA4 checkpoint {str(path)!r} (resolved to {resolved}) is not an existing file")
    return resolved


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file, computed once per (path, size, mtime) per process."""
    resolved = checkpoint_path(path)
    stat = resolved.stat()
    return _sha256_cached(str(resolved), stat.st_size, stat.st_mtime_ns)


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def get_model(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """The DPA4 model of checkpoint ``path`` on ``device`` in ``dtype``, loaded once per process.

    Returns the ``dpa4_core.DPA4`` module in eval mode. Raises :class:`ModelFileError` for a missing file.
    """
    import torch

    from dpa4_core.io.checkpoint import load_checkpoint

    resolved = checkpoint_path(path)
    key = (*_file_key(resolved), str(device), str(dtype))
    with _LOCK:
        if key not in _MODELS:
            logger.info("loading DPA4 checkpoint %s on %s (%s)", resolved, device, dtype)
            model = load_checkpoint(resolved, map_location=device)
            model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
            _MODELS[key] = model
        return _MODELS[key]


def _import_object(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(import_module(module), name)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def get_calculator(calculator_meta: str = DPA4_CALCULATOR_META, **kwargs: Any) -> Calculator:
    """A cached ASE calculator.

    For DPA4 (``calculator_meta == "dpa4_core.DPA4Calculator"``) the keyword arguments are
    ``model`` (checkpoint path), ``device`` and ``dtype``; the loaded model is shared by every calculator of
    the same key, and each call returns the same calculator instance (jobs in one process run one at a time).
    For any other import path, ``calculator_meta(**kwargs)`` is built once per distinct kwargs.
    """
    if str(calculator_meta) == DPA4_CALCULATOR_META:
        unknown = set(kwargs) - {"model", "device", "dtype"}
        if unknown:
            raise ValueError(f"unknown DPA4 calculator arguments {sorted(unknown)}; allowed: model, device, dtype")
        if "model" not in kwargs:
            raise ModelFileError("DPA4 calculator needs calculator_kwargs['model'] = path of a checkpoint")
        resolved = checkpoint_path(kwargs["model"])
        device = str(kwargs.get("device", "cpu"))
        dtype = str(kwargs.get("dtype", "float32"))
        key = ("dpa4", *_file_key(resolved), device, dtype)
        model = get_model(resolved, device, dtype)
        with _LOCK:
            if key not in _CALCULATORS:
                from dpa4_core import DPA4Calculator

                _CALCULATORS[key] = DPA4Calculator(model=model, device=device, dtype=dtype)
            return _CALCULATORS[key]

    key = (str(calculator_meta), _freeze(kwargs))
    with _LOCK:
        if key not in _CALCULATORS:
            _CALCULATORS[key] = _import_object(str(calculator_meta))(**kwargs)
        return _CALCULATORS[key]


def model_identifier(calculator_meta: str, calculator_kwargs: dict) -> str:
    """A stable identifier of the model behind a calculator: ``sha256:<hex>`` of the DPA4 checkpoint,
    or the import path for other calculators (which have no weights file)."""
    if str(calculator_meta) == DPA4_CALCULATOR_META and "model" in calculator_kwargs:
        return "sha256:" + file_sha256(calculator_kwargs["model"])
    return str(calculator_meta)


def clear() -> None:
    """Forget every cached model and calculator (tests; freeing GPU memory)."""
    with _LOCK:
        _MODELS.clear()
        _CALCULATORS.clear()
