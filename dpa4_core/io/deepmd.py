"""Read deepmd-kit DPA4 ("SeZM") ``.pt`` checkpoints: the authors' released models (issue 14).

deepmd-kit (LGPL) is a peer, never imported: this module reads the files it writes. A ``dp --pt train``
checkpoint is ``torch.save({"model": state_dict, "optimizer": ...})`` where the state dict holds
``_extra_state = {"model_params": <normalised config>, "train_infos": {...}}`` and the weights under
``model.<head>.`` (``Default`` for a single-task model; multi-task files list their heads in
``model_params["model_dict"]``). It is read with ``torch.load(weights_only=True)``, like our own checkpoints.

Frozen ``.pt2`` files are compiled programs (AOTInductor): their weights are constants inside generated code, so
they are refused with a message pointing at the ``.pt`` file. Which options dpa4 reproduces is decided in
:mod:`dpa4_core.io.deepmd_options`; everything else is refused by name, never approximated.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dpa4_core.io.checkpoint_data import CheckpointError, CheckpointNotFoundError, safe_load
from dpa4_core.io.files import file_sha256

# deepmd-kit's names for the DPA4 model type (its argcheck aliases).
DPA4_TYPE_NAMES = frozenset({"dpa4", "DPA4", "SeZM", "sezm"})


@dataclass(frozen=True)
class DeepmdCheckpoint:
    """One head of a deepmd-kit DPA4 checkpoint.

    Attributes:
        path: the file read.
        model_params: the head's normalised model config (``type_map``, ``descriptor``, ``fitting_net``, ...).
        type_map: element symbol of each deepmd type index.
        head: the chosen head of a multi-task file, None for a single-task file.
        state_dict: the head's weights with the ``model.<head>.`` prefix removed (``atomic_model.descriptor...``).
        descriptor_version: the ``descriptor.version_tensor`` value (1.2 for deepmd-kit 3.2.0), None if absent.
        train_infos: deepmd's ``{"lr": ..., "step": ...}`` at save time.
    """

    path: Path
    model_params: dict[str, Any]
    type_map: list[str]
    head: str | None
    state_dict: dict[str, torch.Tensor]
    descriptor_version: float | None
    train_infos: dict[str, Any]

    @property
    def descriptor(self) -> dict[str, Any]:
        return dict(self.model_params.get("descriptor") or {})

    @property
    def fitting_net(self) -> dict[str, Any]:
        return dict(self.model_params.get("fitting_net") or {})


def deepmd_state(payload: Any) -> dict[str, Any] | None:
    """The deepmd-kit model state dict inside a loaded ``.pt`` payload, or None if it is not one (by content)."""
    if not isinstance(payload, Mapping):
        return None
    state = payload.get("model") if isinstance(payload.get("model"), Mapping) else payload
    extra = state.get("_extra_state")
    if isinstance(extra, Mapping) and isinstance(extra.get("model_params"), Mapping):
        return dict(state)
    return None


def is_pt2_archive(path: Path) -> bool:
    """True for a PyTorch 2 export/AOTInductor package (a zip holding ``archive_format`` = ``pt2``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "archive_format"]
            return any(archive.read(name).strip() == b"pt2" for name in names)
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def refuse_pt2(path: Path) -> None:
    """Raise ``CheckpointError`` for a frozen ``.pt2`` program (compiled code, not a weight file)."""
    raise CheckpointError(
        f"{path} is a frozen PyTorch 2 program (.pt2, e.g. from `dp --pt freeze`): its weights are compiled "
        "into generated code and cannot be read as a model. Use the training checkpoint (.pt) it was frozen from "
        "(deepmd-kit's pretrained downloads are .pt files)")


def _heads(model_dict: Mapping[str, Any]) -> dict[str, str]:
    """deepmd-kit's head lookup: every head name and each of its ``model_branch_alias`` names -> head name."""
    names = {key: key for key in model_dict}
    for key, params in model_dict.items():
        for alias in (params or {}).get("model_branch_alias", []) or []:
            names.setdefault(str(alias), key)
    return names


def _choose_head(path: Path, model_dict: Mapping[str, Any], head: str | None) -> str:
    names = _heads(model_dict)
    listing = ", ".join(sorted(model_dict))
    if head is None:
        if "Default" in names:
            return names["Default"]
        raise CheckpointError(f"{path} is a multi-task deepmd-kit checkpoint with heads [{listing}]: choose one "
                              "with head=NAME")
    if head in names:
        return names[head]
    lowered = {name.lower(): target for name, target in names.items()}
    if head.lower() in lowered:
        return lowered[head.lower()]
    raise CheckpointError(f"{path} has no head {head!r}; its heads are [{listing}]")


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.reshape(()))
    return None


def read_deepmd_checkpoint(path: str | os.PathLike, head: str | None = None, payload: Any = None) -> DeepmdCheckpoint:
    """Read one head of a deepmd-kit DPA4 ``.pt`` checkpoint (``torch.load(weights_only=True)``).

    Args:
        path: the ``.pt`` file (detected by content, not by name).
        head: the head of a multi-task file (a head name or one of its aliases, case-insensitive); a single-task
            file has none (passing one is an error). Default: ``Default`` if the file has it.
        payload: the already loaded file content (so a caller that detected the format does not read it twice).

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: a ``.pt2`` program, not a deepmd-kit checkpoint, not a DPA4 model, an unknown head.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CheckpointNotFoundError(f"deepmd-kit checkpoint {path} does not exist")
    if payload is None:
        if is_pt2_archive(path):
            refuse_pt2(path)
        payload = safe_load(path, "cpu", CheckpointError, "is not a readable deepmd-kit checkpoint")
    state = deepmd_state(payload)
    if state is None:
        raise CheckpointError(f"{path} is not a deepmd-kit checkpoint (no _extra_state.model_params)")
    extra = state["_extra_state"]
    params = dict(extra["model_params"])
    prefix = "model.Default."
    chosen: str | None = None
    if isinstance(params.get("model_dict"), Mapping):
        chosen = _choose_head(path, params["model_dict"], head)
        params = dict(params["model_dict"][chosen])
        prefix = f"model.{chosen}."
    elif head is not None:
        raise CheckpointError(f"{path} is a single-task deepmd-kit checkpoint; it has no head {head!r}")
    descriptor_type = (params.get("descriptor") or {}).get("type")
    if params.get("type") not in DPA4_TYPE_NAMES and descriptor_type not in DPA4_TYPE_NAMES:
        raise CheckpointError(f"{path} is a deepmd-kit checkpoint of model type {params.get('type')!r} (descriptor "
                              f"{descriptor_type!r}), not DPA4: dpa4 reads only deepmd-kit DPA4 models")
    weights = {name[len(prefix):]: tensor for name, tensor in state.items()
               if name.startswith(prefix) and isinstance(tensor, torch.Tensor)}
    if not weights:
        raise CheckpointError(f"{path} holds no weights under {prefix!r}")
    type_map = params.get("type_map")
    if not isinstance(type_map, list) or not all(isinstance(symbol, str) for symbol in type_map):
        raise CheckpointError(f"{path}: model_params.type_map is missing or not a list of element symbols")
    return DeepmdCheckpoint(
        path=path, model_params=params, type_map=list(type_map), head=chosen, state_dict=weights,
        descriptor_version=_float_or_none(weights.get("atomic_model.descriptor.version_tensor")),
        train_infos=dict(extra.get("train_infos") or {}))


def provenance(checkpoint: DeepmdCheckpoint) -> dict[str, Any]:
    """Where a model read from a deepmd-kit file came from, as plain values: kept in the metadata of every model
    loaded from one and of the file ``dpa4 convert-deepmd`` writes."""
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in checkpoint.state_dict.values()
                     if t.is_floating_point()})
    return {
        "format": "deepmd-kit DPA4 .pt",
        "file": str(checkpoint.path),
        "sha256": file_sha256(checkpoint.path),
        "descriptor_version": checkpoint.descriptor_version,
        "type_map": list(checkpoint.type_map),
        "head": checkpoint.head,
        "train_step": checkpoint.train_infos.get("step"),
        "weights_dtype": "/".join(dtypes),
    }
