"""The ASE calculator of each job: loaded models are cached per process, calculators are never shared.

FireWorks and jobflow-remote deserialise every job, so a maker-level cache would reload the model per job.
Here a small, thread-safe LRU cache keeps the last :data:`MAX_CACHED_MODELS` loaded models, keyed by
(checkpoint, size, modification time, device, dtype): a checkpoint overwritten in place is reloaded rather than
served stale. Every call of :func:`get_calculator` builds a new calculator around the cached model, because an
ASE calculator is stateful (results, cached neighbour list) and must not be shared between jobs.

Any other ASE calculator given by import path (e.g. ``"ase.calculators.emt.EMT"``, used to test the
plumbing) is built from its keyword arguments on every call.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpa4_flows.settings import get_settings

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

logger = logging.getLogger(__name__)

#: ``calculator_meta`` value that selects DPA4 (the class is re-exported by ``dpa4_core``).
DPA4_CALCULATOR_META = "dpa4_core.DPA4Calculator"
#: The keyword arguments a DPA4 calculator takes through a Maker's ``calculator_kwargs``.
DPA4_CALCULATOR_KWARGS = ("model", "device", "dtype", "allow_untrained_elements")
#: How many loaded models one process keeps (least recently used ones are dropped first).
MAX_CACHED_MODELS = 4

_LOCK = threading.Lock()
_MODELS: OrderedDict[tuple, Any] = OrderedDict()


class ModelFileError(ValueError):
    """The checkpoint path does not name a readable file."""


def checkpoint_path(path: str | Path) -> Path:
    """Absolute path of an existing checkpoint file or of a shipped model's name (``dpa4 models``), or
    :class:`ModelFileError` naming the bad path (or listing the known names)."""
    from dpa4_core.pretrained import UnknownModelError, resolve_checkpoint

    try:
        resolved = resolve_checkpoint(path).expanduser().resolve()
    except (UnknownModelError, FileNotFoundError) as exc:
        raise ModelFileError(str(exc)) from None
    if not resolved.is_file():
        raise ModelFileError(f"DPA4 checkpoint {str(path)!r} (resolved to {resolved}) is not an existing file")
    return resolved


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a checkpoint, computed once per (path, size, mtime) per process."""
    from dpa4_core.calculator import model_provenance

    return model_provenance(checkpoint_path(path))["sha256"]


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def get_model(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """The DPA4 model of checkpoint ``path`` on ``device`` in ``dtype``, loaded once while it stays cached.

    Returns the ``dpa4_core.DPA4`` module in eval mode. Raises :class:`ModelFileError` for a missing file.
    """
    import torch

    from dpa4_core.io.checkpoint import load_checkpoint

    resolved = checkpoint_path(path)
    key = (*_file_key(resolved), str(device), str(dtype))
    with _LOCK:  # loading under the lock: two threads asking for one checkpoint load it once
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        logger.info("loading DPA4 checkpoint %s on %s (%s)", resolved, device, dtype)
        model = load_checkpoint(resolved, map_location=device)
        _MODELS[key] = model.to(device=device, dtype=getattr(torch, dtype)).eval()
        while len(_MODELS) > MAX_CACHED_MODELS:
            dropped, _ = _MODELS.popitem(last=False)
            logger.info("dropping cached DPA4 model %s (%s, %s)", dropped[0], dropped[3], dropped[4])
        return _MODELS[key]


def _import_object(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(import_module(module), name)


def get_calculator(calculator_meta: str = DPA4_CALCULATOR_META, **kwargs: Any) -> Calculator:
    """A new ASE calculator for one job.

    For DPA4 (``calculator_meta == "dpa4_core.DPA4Calculator"``) the keyword arguments are ``model``
    (checkpoint path), ``device``, ``dtype`` and ``allow_untrained_elements`` (default False: structures with
    elements outside the model's training set raise ``UntrainedElementError``); the calculator is built around
    the cached model of :func:`get_model`. For any other import path, ``calculator_meta(**kwargs)``.
    """
    if str(calculator_meta) != DPA4_CALCULATOR_META:
        return _import_object(str(calculator_meta))(**kwargs)
    unknown = set(kwargs) - set(DPA4_CALCULATOR_KWARGS)
    if unknown:
        raise ValueError(f"unknown DPA4 calculator arguments {sorted(unknown)}; allowed: "
                         f"{', '.join(DPA4_CALCULATOR_KWARGS)}")
    if "model" not in kwargs:
        raise ModelFileError("DPA4 calculator needs calculator_kwargs['model'] = path of a checkpoint")
    device = str(kwargs.get("device", "cpu"))
    dtype = str(kwargs.get("dtype", "float32"))
    from dpa4_core import DPA4Calculator

    allow = kwargs.get("allow_untrained_elements", False)
    if not isinstance(allow, bool):
        raise ValueError(f"allow_untrained_elements must be True or False, got {allow!r}")
    calculator = DPA4Calculator(model=get_model(kwargs["model"], device, dtype), device=device, dtype=dtype,
                                allow_untrained_elements=allow)
    # Built around the cached model object: record the file it came from, as DPA4Calculator(checkpoint=...) does.
    from dpa4_core.calculator import model_provenance

    calculator.parameters.update(model_provenance(checkpoint_path(kwargs["model"])))
    return calculator


def model_identifier(calculator_meta: str, calculator_kwargs: dict) -> str:
    """A stable identifier of the model behind a calculator: ``sha256:<hex>`` of the DPA4 checkpoint,
    or the import path for other calculators (which have no weights file)."""
    if str(calculator_meta) == DPA4_CALCULATOR_META and "model" in calculator_kwargs:
        return "sha256:" + file_sha256(calculator_kwargs["model"])
    return str(calculator_meta)


def clear() -> None:
    """Forget every cached model (tests; freeing GPU memory)."""
    with _LOCK:
        _MODELS.clear()


def default_calculator_kwargs() -> dict[str, Any]:
    """``{"model": <absolute checkpoint path>, "device": ..., "dtype": ...}`` from the current settings."""
    settings = get_settings()
    return {"model": str(settings.model), "device": settings.device, "dtype": settings.dtype}


class DPA4CalculatorMixin:
    """For atomate2 makers: a calculator from :func:`get_calculator` and task documents labelled "DPA4"."""

    def _get_calculator(self):
        return get_calculator(self.calculator_meta, **self.calculator_kwargs)

    def _dpa4_post_init(self) -> None:
        if str(self.calculator_meta) == DPA4_CALCULATOR_META:
            # atomate2 reads the document's name from "forcefield_name" (its mixin sets "force_field_name").
            self.task_document_kwargs["forcefield_name"] = "DPA4"

    @property
    def model_id(self) -> str:
        """``sha256:<hex>`` of the checkpoint (or the calculator import path for non-DPA4 calculators)."""
        return model_identifier(str(self.calculator_meta), self.calculator_kwargs)
