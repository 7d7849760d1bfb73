"""``dpa4 convert-deepmd IN.pt OUT.pt [--head H] [--dtype D]``: a deepmd-kit DPA4 checkpoint (the authors'
released models) written as a dpa4 checkpoint with its provenance (:mod:`dpa4_core.io.deepmd_convert`)."""

from __future__ import annotations

import torch

from dpa4_core.commands.common import add_command, print_json


def _cmd_convert(args) -> int:
    from dpa4_core.commands.info import checkpoint_info
    from dpa4_core.io.deepmd_convert import convert_deepmd

    written = convert_deepmd(args.source, args.destination, head=args.head, dtype=getattr(torch, args.dtype))
    info = checkpoint_info(written)
    print_json({key: info[key] for key in ("path", "sha256", "dtype", "elements", "cutoff", "parameters")}
               | {"converted_from": info["metadata"]["converted_from"]})
    return 0


def register(sub) -> None:
    """Add ``convert-deepmd``."""
    p = add_command(sub, "convert-deepmd", "write a deepmd-kit DPA4 .pt as a dpa4 checkpoint, with provenance", [
        "dpa4 convert-deepmd DPA4-Mini-OMat24-v20260805.pt dpa4-mini.pt",
        "dpa4 convert-deepmd multitask.pt mine.pt --head MPtrj",
        "dpa4 info dpa4-mini.pt      # the source's sha256, type map, head and descriptor version",
    ], description="Convert a deepmd-kit DPA4 training checkpoint (.pt; frozen .pt2 programs cannot be read) into "
                   "a dpa4 checkpoint. Every dpa4 command also takes the deepmd-kit file directly; converting "
                   "once fixes the head, skips the option check and weight map on every load, and records where "
                   "the model came from (source sha256, deepmd-kit descriptor version, type map, head, training "
                   "step). Options dpa4 does not reproduce are refused by name (exit 2). Prints a JSON summary.")
    p.add_argument("source", help="deepmd-kit DPA4 checkpoint (.pt)")
    p.add_argument("destination", help="the dpa4 checkpoint to write (replaced atomically if it exists)")
    p.add_argument("--head", default=None, help="head (or alias) of a multi-task file")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="weights' dtype (default float64: the weight map folds constants, exact only in float64)")
    p.set_defaults(func=_cmd_convert)
