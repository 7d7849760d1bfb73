"""The ``dpa4`` command: ``dpa4 train CONFIG``, ``dpa4 finetune CONFIG [--from CKPT]``, ``dpa4 eval CKPT DATA``.

Other packages add subcommands (e.g. ``dpa4 screen``) without editing this file: every module listed in
``EXTENSIONS`` that imports defines ``register(subparsers)``, which adds parsers whose ``func(args) -> int``
default runs the command. Results go to stdout as JSON; progress bars to stderr; logs to stderr at ``-v``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXTENSIONS = ("dpa4_flows.cli",)


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _print_result(result) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    payload = {
        "checkpoint": str(result.checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
        "log_path": str(result.log_path),
        "plots": [str(p) for p in result.plots],
        "metrics": result.metrics,
    }
    print(json.dumps(payload, indent=2, default=_json_default))


def _cmd_train(args) -> int:
    from dpa4_core.train import train

    _print_result(train(args.config))
    return 0


def _cmd_finetune(args) -> int:
    from dpa4_core.train import finetune

    _print_result(finetune(args.config, base_checkpoint=args.base))
    return 0


def _cmd_eval(args) -> int:
    from dpa4_core.train import evaluate

    read = {k: v for k, v in (("format", args.format), ("stress_unit", args.stress_unit)) if v is not None}
    metrics = evaluate(args.checkpoint, args.data, batch_size=args.batch_size, dtype=args.dtype, **read)
    print(json.dumps(metrics, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpa4", description="DPA4 interatomic potential: train, fine-tune, evaluate")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="YAML file (see examples/train_monbtaw.yaml)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a checkpoint from a YAML config")
    p.add_argument("config", help="YAML file (see examples/finetune_mlearn_mo.yaml)")
    p.add_argument("--from", dest="base", default=None, help="base checkpoint (overrides base_checkpoint)")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("eval", help="errors of a checkpoint on labelled data, as JSON")
    p.add_argument("checkpoint")
    p.add_argument("data", nargs="+", help="files or folders (extxyz, VASP, pymatgen JSON, DeePMD, ...)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", choices=["float32", "float64"], default=None)
    p.add_argument("--format", default=None, help="force a reader: pymatgen-json, deepmd, ase or an ASE format")
    p.add_argument("--stress-unit", default=None, help="kbar_vasp, kbar, gpa or ev/a^3")
    p.set_defaults(func=_cmd_eval)

    for module_name in EXTENSIONS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dpa4`` console script; returns the exit status (2 for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # bad config, data or checkpoint: message, no traceback
        print(f"dpa4 {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
