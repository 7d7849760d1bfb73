"""``dpa4 info CHECKPOINT``: what a checkpoint holds, read without running it: elements, cutoff, preset and
config, parameter count, dtype, library versions, the training provenance recorded in it, and its sha256.
A table by default, ``--json`` for scripts."""

from __future__ import annotations

from pathlib import Path

from dpa4_core.commands.common import add_command, format_table, print_json
from dpa4_core.io.files import file_sha256

_ARCHITECTURE = ("channels", "n_blocks", "lmax", "mmax", "cutoff", "zbl")


def preset_of(config: dict, metadata: dict) -> str:
    """The preset the training run named (with its overrides), else the nearest preset and what differs (up to
    three keys), else ``"custom"``."""
    from dpa4_core.config import PRESETS, DPA4Config

    model = (metadata.get("config") or {}).get("model") or {}
    # a fine-tune's config names no architecture (it comes from the base): only a training run's preset counts
    if isinstance(model, dict) and model.get("preset") and "base" not in metadata:
        overrides = ", ".join(f"{k}={v}" for k, v in (model.get("overrides") or {}).items())
        return f"{model['preset']}" + (f" ({overrides})" if overrides else "")
    stored = DPA4Config.from_dict(config).to_dict()
    best = None
    for name in PRESETS:
        reference = DPA4Config.preset(name).to_dict()
        differ = {k: v for k, v in stored.items() if reference.get(k) != v}
        if best is None or len(differ) < len(best[1]):
            best = (name, differ)
    if best is None or len(best[1]) > 3:
        return "custom"
    name, differ = best
    return name + (f" ({', '.join(f'{k}={v}' for k, v in differ.items())})" if differ else "")


def checkpoint_info(checkpoint: str | Path) -> dict:
    """Everything ``dpa4 info`` shows, as plain JSON-ready values.

    Raises:
        CheckpointNotFoundError, CheckpointError: as :func:`dpa4_core.io.checkpoint.load_checkpoint`.
    """
    from ase.data import chemical_symbols

    from dpa4_core.io.checkpoint import load_checkpoint, read_checkpoint

    data = read_checkpoint(checkpoint)
    model = load_checkpoint(data.path)
    metadata = data.metadata
    train = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
    return {
        "path": str(data.path),
        "sha256": file_sha256(data.path),
        "size_bytes": data.path.stat().st_size,
        "format_version": data.format_version,
        "dtype": str(data.dtype).removeprefix("torch."),
        "elements": [chemical_symbols[z] for z in (data.elements or [])],
        "cutoff": data.config.get("cutoff"),
        "preset": preset_of(data.config, metadata),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": data.config,
        "versions": data.versions,
        "training": {
            "step": metadata.get("step"),
            "n_train": metadata.get("n_train"),
            "data": (train.get("data") or {}).get("train"),
            "base_checkpoint": (metadata.get("base") or {}).get("checkpoint") or train.get("base_checkpoint"),
            "seed": train.get("seed"),
            "validation": metadata.get("metrics") or None,
        },
        "metadata": metadata,
    }


def _validation(metrics: dict | None) -> str | None:
    if not metrics:
        return None
    parts = [f"E {metrics['energy_mae_mev_per_atom']:.2f} meV/atom" if metrics.get("energy_mae_mev_per_atom")
             is not None else None,
             f"F {metrics['force_mae_mev_per_a']:.1f} meV/A" if metrics.get("force_mae_mev_per_a") is not None
             else None,
             f"S {metrics['stress_mae_gpa']:.3f} GPa" if metrics.get("stress_mae_gpa") is not None else None]
    frames = f" on {metrics['n_frames']} frames" if metrics.get("n_frames") else ""
    return "MAE " + ", ".join(p for p in parts if p) + frames


def _origin(origin: dict | None) -> str | None:
    """One line of a deepmd-kit source's provenance (see ``dpa4_core.io.deepmd.provenance``)."""
    if not isinstance(origin, dict):
        return None
    return (f"{origin.get('format')} {origin.get('file')} (sha256 {str(origin.get('sha256'))[:16]}..., descriptor "
            f"version {origin.get('descriptor_version')}, {len(origin.get('type_map') or [])} types, head "
            f"{origin.get('head') or '-'}, step {origin.get('train_step')}, {origin.get('weights_dtype')})")


def table(info: dict) -> str:
    """The human-readable view of :func:`checkpoint_info`."""
    config, training = info["config"], info["training"]
    rows = [
        ("path", info["path"]),
        ("sha256", info["sha256"]),
        ("size", f"{info['size_bytes'] / 1e6:.2f} MB"),
        ("elements", " ".join(info["elements"]) or "(not recorded)"),
        ("cutoff", f"{info['cutoff']} A"),
        ("preset", info["preset"]),
        ("architecture", ", ".join(f"{k}={config[k]}" for k in _ARCHITECTURE if k in config)),
        ("parameters", f"{info['parameters']:,}"),
        ("dtype", info["dtype"]),
        ("written by", ", ".join(f"{k} {v}" for k, v in info["versions"].items()) or None),
        ("trained steps", training["step"]),
        ("training frames", training["n_train"]),
        ("training data", ", ".join(map(str, training["data"])) if training["data"] else None),
        ("fine-tuned from", training["base_checkpoint"]),
        ("seed", training["seed"]),
        ("validation", _validation(training["validation"])),
        ("converted from", _origin(info["metadata"].get("converted_from"))),
        ("base converted from", _origin((info["metadata"].get("base") or {}).get("converted_from"))),
        ("note", info["metadata"].get("note")),
    ]
    return format_table(["field", "value"], [(k, v) for k, v in rows if v is not None])


def _cmd_info(args) -> int:
    info = checkpoint_info(args.checkpoint)
    if args.json:
        print_json(info)
    else:
        print(table(info))
    return 0


def register(sub) -> None:
    """Add ``info``."""
    p = add_command(sub, "info", "what a checkpoint holds: elements, cutoff, preset, parameters, provenance", [
        "dpa4 info runs/mine/best.pt",
        "dpa4 info best.pt --json | jq .training",
        "python -c 'from dpa4_core.pretrained import starter_checkpoint as s; print(s())' | xargs dpa4 info",
    ])
    p.add_argument("checkpoint", help="DPA4 checkpoint (.pt)")
    p.add_argument("--json", action="store_true", help="everything as JSON (full config and metadata)")
    p.set_defaults(func=_cmd_info)
