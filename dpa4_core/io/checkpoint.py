"""Single-file DPA4 checkpoints: config, weights, energy bias, elements, library versions, free metadata.

Layout (a plain dict, saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``, so
only tensors and plain Python types are ever unpickled)::

    {"format": "dpa4-checkpoint", "format_version": 1,
     "config": DPA4Config.to_dict(), "state_dict": {name: tensor}, "dtype": "float64",
     "energy_bias": tensor [119] (eV, by atomic number), "elements": [Z, ...] or None,
     "versions": {"dpa4": "...", "torch": "..."}, "metadata": {...}}

Writes are atomic (temporary file in the same folder, then ``os.replace``), so an interrupted save never
leaves a half-written checkpoint under the final name. Every failure to read names the file.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dpa4_core.io import deepmd
from dpa4_core.io.deepmd_weights import deepmd_checkpoint_data
from dpa4_core.io.checkpoint_data import (
    FORMAT_TAG,
    FORMAT_VERSION,
    CheckpointData,
    CheckpointError,
    CheckpointNotFoundError,
    check_plain,
    safe_load,
)
from dpa4_core.io.files import atomic_write

if TYPE_CHECKING:
    from dpa4_core.model.energy import DPA4

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_TAG", "FORMAT_VERSION", "CheckpointData", "CheckpointError", "CheckpointNotFoundError",
           "check_plain", "safe_load", "save_checkpoint", "read_checkpoint", "load_checkpoint", "model_from_data",
           "load_for_inference"]


def _floating_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    dtypes = {t.dtype for t in state_dict.values() if t.is_floating_point()}
    if len(dtypes) > 1:
        # A mixed model would be cast to one dtype on load; keep the widest so nothing is lost.
        return torch.float64 if torch.float64 in dtypes else torch.float32
    return dtypes.pop() if dtypes else torch.get_default_dtype()


def save_checkpoint(
    model: DPA4,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    elements: Sequence[int] | None = None,
) -> Path:
    """Write ``model`` to ``path`` as one self-describing file, atomically.

    Args:
        model: a ``DPA4`` (anything with ``config.to_dict()``, a ``state_dict`` and an ``energy_bias`` buffer).
        path: destination file; its folder must exist. An existing file is replaced only once the new one
            is complete.
        metadata: free-form information (training set, metrics, ...) made of plain types and tensors.
        elements: atomic numbers seen in training; default ``model.trained_elements`` (set by
            :func:`load_checkpoint`), so a loaded model saved again keeps them.

    Returns:
        The absolute path written.

    Raises:
        CheckpointError: metadata holds a type that ``torch.load(weights_only=True)`` would refuse.
    """
    from dpa4_core import __version__

    path = Path(path).expanduser().resolve()
    if elements is None:
        elements = getattr(model, "trained_elements", None)
    state_dict = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    payload = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "config": dict(model.config.to_dict()),
        "state_dict": state_dict,
        "dtype": str(_floating_dtype(state_dict)).removeprefix("torch."),
        "energy_bias": model.energy_bias.detach().cpu().clone(),
        "elements": None if elements is None else sorted({int(z) for z in elements}),
        "versions": {"dpa4": str(__version__), "torch": str(torch.__version__)},
        "metadata": dict(metadata or {}),
    }
    check_plain(payload["config"], "config")
    check_plain(payload["metadata"], "metadata")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save checkpoint {path}: folder {path.parent} does not exist")
    atomic_write(path, lambda stream: torch.save(payload, stream))
    logger.debug("saved DPA4 checkpoint %s", path)
    return path


def _check_finite(path: Path, state_dict: Mapping[str, Any], energy_bias: Any) -> None:
    """A NaN or inf weight (a diverged run, a damaged file) makes every prediction NaN or wrong: refuse it here."""
    tensors = {**state_dict, "energy_bias": energy_bias}
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            n_bad = int((~torch.isfinite(tensor)).sum())
            kind = "NaN" if torch.isnan(tensor).any() else "inf"
            raise CheckpointError(f"{path}: weight tensor {name!r} holds {n_bad} non-finite value(s) ({kind}); the "
                                  "model cannot give meaningful predictions (a diverged training run or a damaged "
                                  "file): use an earlier checkpoint (e.g. best.pt) or retrain")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    head: str | None = None) -> CheckpointData:
    """Read and validate a checkpoint file (or a shipped model's name, e.g. "starter-MoNbTaW") without building
    the model. ``head`` chooses a head (or one of its aliases) of a multi-task deepmd-kit file, as deepmd-kit
    resolves it.

    Raises:
        CheckpointNotFoundError: no file at ``path`` and no shipped model of that name (the known names listed).
        CheckpointError: the file is corrupt, truncated, not a DPA4 checkpoint, from a newer format, or holds
            NaN/inf weights (named); a deepmd-kit DPA4 ``.pt`` (read by :mod:`dpa4_core.io.deepmd`) that uses an
            option dpa4 does not reproduce (every one named); a frozen ``.pt2`` program.
    """
    from dpa4_core.pretrained import UnknownModelError, resolve_checkpoint

    try:
        path = resolve_checkpoint(path).resolve()  # a shipped model's name -> its file
    except (UnknownModelError, FileNotFoundError) as exc:
        raise CheckpointNotFoundError(str(exc)) from None
    if not path.is_file():
        raise CheckpointNotFoundError(f"DPA4 checkpoint {path} does not exist")
    if deepmd.is_pt2_archive(path):
        deepmd.refuse_pt2(path)
    payload = safe_load(path, map_location, CheckpointError,
                        "is not a readable DPA4 checkpoint (corrupt, truncated or not a torch file)")
    if deepmd.deepmd_state(payload) is not None:  # the authors' deepmd-kit format, told apart by content
        return deepmd_checkpoint_data(path, payload, head=head)
    if head is not None:
        raise CheckpointError(f"{path}: head={head!r} given, but head= applies to multi-task deepmd-kit files only")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{path} is a torch file but not a DPA4 checkpoint (no {FORMAT_TAG!r} format tag; "
            f"found {type(payload).__name__})"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this dpa4 reads versions <= {FORMAT_VERSION}"
        )
    missing = [key for key in ("config", "state_dict") if not isinstance(payload.get(key), dict)]
    if missing:
        raise CheckpointError(f"{path} is a damaged DPA4 checkpoint: missing or invalid {missing}")
    _check_finite(path, payload["state_dict"], payload.get("energy_bias"))
    dtype_name = payload.get("dtype", "float32")
    dtype = getattr(torch, str(dtype_name), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"{path}: unknown dtype {dtype_name!r}")
    return CheckpointData(
        path=path,
        config=payload["config"],
        state_dict=payload["state_dict"],
        dtype=dtype,
        energy_bias=payload.get("energy_bias"),
        elements=payload.get("elements"),
        versions=dict(payload.get("versions") or {}),
        metadata=dict(payload.get("metadata") or {}),
        format_version=version,
    )


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    head: str | None = None) -> DPA4:
    """Build a ``DPA4`` from a checkpoint written by :func:`save_checkpoint` (or a deepmd-kit DPA4 ``.pt``;
    ``head`` chooses the head of a multi-task one).

    The model comes back in eval mode, in the dtype it was saved in, on ``map_location``, with the elements
    seen in training as the plain attribute ``model.trained_elements`` (``list[int]``, empty if unknown).

    Raises:
        CheckpointNotFoundError, CheckpointError: see :func:`read_checkpoint`; also when the weights do not
            fit the stored config.
    """
    return model_from_data(read_checkpoint(path, map_location=map_location, head=head), map_location)


def model_from_data(data: CheckpointData, map_location: str | torch.device = "cpu") -> DPA4:
    """The ``DPA4`` that :func:`read_checkpoint`'s ``data`` describes (see :func:`load_checkpoint`)."""
    from dpa4_core.config import DPA4Config
    from dpa4_core.model.energy import DPA4

    try:
        config = DPA4Config.from_dict(data.config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{data.path}: stored config is not valid for this dpa4: {exc}") from exc
    model = DPA4(config).to(device=map_location, dtype=data.dtype)
    state_dict = dict(data.state_dict)
    # Files written before the cohesive-energy shift existed have none: theirs is 0 (the same model).
    state_dict.setdefault("energy_shift", torch.zeros_like(model.energy_shift))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{data.path}: weights do not match the stored config: {exc}") from exc
    if data.energy_bias is not None:
        # Already in the state_dict; the explicit copy keeps files written by other tools usable.
        with torch.no_grad():
            model.energy_bias.copy_(data.energy_bias.to(model.energy_bias))
    model.trained_elements = list(data.elements or [])
    saved_version = data.versions.get("dpa4")
    from dpa4_core import __version__

    if saved_version is not None and saved_version != __version__:
        logger.warning("%s was written by dpa4 %s; this is dpa4 %s", data.path, saved_version, __version__)
    return model.eval()


def load_for_inference(
    model_or_path: Any, dtype: torch.dtype, device: str | torch.device = "cpu", error: type[ValueError] = ValueError
) -> torch.nn.Module:
    """A private copy of a model (or of the one in a checkpoint) for inference: cast to ``dtype``, on ``device``,
    eval mode, every parameter with ``requires_grad`` off. The caller's model is never changed.

    ``model_or_path`` is a DPA4 (or any ``torch.nn.Module`` with ``config.cutoff``, DEVELOPING.md) or a
    checkpoint path; anything else raises ``error`` naming its type.
    """
    if isinstance(model_or_path, str | os.PathLike):
        source = load_checkpoint(model_or_path, map_location="cpu")  # a path or a shipped name
    elif isinstance(model_or_path, torch.nn.Module):
        source = model_or_path
    else:
        raise error(f"model must be a DPA4 (torch.nn.Module) or a checkpoint path, got {type(model_or_path).__name__}")
    if not hasattr(source, "config") or not hasattr(source.config, "cutoff"):
        raise error(f"model {type(source).__name__} has no config.cutoff (DPA4 interface)")
    model = copy.deepcopy(source).to(device=torch.device(device), dtype=dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
