"""The ``dpa4`` command: ``dpa4 train CONFIG``, ``dpa4 finetune CONFIG [--from CKPT]``, ``dpa4 eval CKPT DATA``,
and the subcommands of other installed packages (``dpa4 screen``, ``dpa4 results`` from dpa4_flows).

Subcommands are discovered through package entry points in the group ``dpa4.commands`` (see pyproject.toml):
each names a ``register(subparsers)`` function that adds argparse parsers whose ``func(args) -> int`` default
runs the command. This module's :func:`register` is dpa4_core's entry point, loaded the same way.

A command group whose import needs a package that is not installed is left out with a message naming the
package and how to install it; any other import error is a bug and is raised. Results go to stdout as JSON;
progress bars to stderr; logs to stderr at ``-v``. Exit status: 0 ok, 1 failure, 2 bad input (one line on stderr,
no traceback), 130 interrupted by Ctrl-C (one line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, requires

COMMAND_GROUP = "dpa4.commands"
DISTRIBUTION = "dpa4"
OWN_PACKAGES = ("dpa4_core", "dpa4_flows")


def _json_default(value):
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
    metrics = evaluate(args.checkpoint, args.data, batch_size=args.batch_size, dtype=args.dtype,
                       allow_untrained_elements=args.allow_untrained_elements, **read)
    print(json.dumps(metrics, indent=2))
    return 0


def register(sub) -> None:
    """dpa4_core's subcommands: ``train``, ``finetune``, ``eval`` (the ``core`` entry point)."""
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
    p.add_argument("--allow-untrained-elements", action="store_true",
                   help="score frames with elements the checkpoint was not trained on (refused by default)")
    p.set_defaults(func=_cmd_eval)


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def missing_dependency_message(exc: ModuleNotFoundError, what: str) -> str | None:
    """A message naming the missing package and how to install it, or None when ``exc`` is not a missing
    third-party package (a module of dpa4 itself that fails to import is a bug, not a missing dependency)."""
    if not exc.name:
        return None
    top = exc.name.split(".")[0]
    if top in OWN_PACKAGES:
        return None
    try:
        requirements = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        requirements = []
    hint = f"pip install {top}"
    for requirement in requirements:
        if _normal(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]) == _normal(top):
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", requirement)
            spec = requirement.split(";")[0].strip()
            hint = f"pip install '{DISTRIBUTION}[{extra.group(1)}]'" if extra else f"pip install '{spec}'"
            break
    return f"dpa4: {what} needs the package '{top}', which is not installed; install it with: {hint}"


@dataclass
class CommandLine:
    """The ``dpa4`` parser, the subcommands registered in it, and why any command group was left out."""

    parser: argparse.ArgumentParser
    commands: list[str]
    left_out: list[str]


def build_parser() -> CommandLine:
    """The ``dpa4`` parser with the subcommands of every entry point in :data:`COMMAND_GROUP`."""
    parser = argparse.ArgumentParser(prog="dpa4", description="DPA4 interatomic potential: train, fine-tune, "
                                     "evaluate, screen")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    left_out = []
    for point in sorted(entry_points(group=COMMAND_GROUP), key=lambda p: p.name):
        try:
            point.load()(sub)
        except ModuleNotFoundError as exc:
            message = missing_dependency_message(exc, f"the '{point.name}' commands ({point.value})")
            if message is None:
                raise
            left_out.append(message)
    if left_out:
        parser.epilog = "\n".join(left_out)
    return CommandLine(parser, sorted(sub.choices), left_out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dpa4`` console script; returns the exit status (1 failure, 2 bad input, 130 Ctrl-C)."""
    cli = build_parser()
    if not cli.commands:
        print(f"dpa4: no subcommands are registered (entry-point group {COMMAND_GROUP!r} is empty): this "
              "installation's metadata is out of date; reinstall dpa4 (pip install -e .)", file=sys.stderr)
        return 1
    try:
        args = cli.parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):  # e.g. an unknown command that a left-out group would have added
            for message in cli.left_out:
                print(message, file=sys.stderr)
        raise
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        message = missing_dependency_message(exc, f"'dpa4 {args.command}'")
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:  # bad config, data, checkpoint or run file: message, no traceback
        print(f"dpa4 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dpa4 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
