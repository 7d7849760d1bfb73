"""The ``dpa4`` command: the main parser, the global options and the discovery of subcommands.

Subcommands are discovered through package entry points in the group ``dpa4.commands`` (see pyproject.toml):
each names a ``register(subparsers)`` function that adds argparse parsers whose ``func(args) -> int`` default
runs the command. This module's :func:`register` is dpa4_core's entry point, loaded the same way; it adds the
subcommands of :mod:`dpa4_core.commands` (``train``, ``finetune``, ``eval``, ``info``, ``relax``, ``md``).

Global options (``-v/--verbose``, ``-q/--quiet``, ``--version``) are accepted before or after the subcommand:
every subparser, whichever package registers it, gets them through ``parents=``. After parsing, ``args.verbose``
(a count) and ``args.quiet`` (a bool) hold the combined values for every command.

A command group whose import needs a package that is not installed is left out with a message naming the
package and how to install it; any other import error is a bug and is raised. Results go to stdout; progress bars
to stderr; logs to stderr at ``-v``. Exit status: 0 ok, 1 failure, 2 bad input (one line on stderr, no
traceback), 130 interrupted by Ctrl-C (one line).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, requires, version

COMMAND_GROUP = "dpa4.commands"
DISTRIBUTION = "dpa4"
OWN_PACKAGES = ("dpa4_core", "dpa4_flows")


def register(sub) -> None:
    """dpa4_core's subcommands (the ``core`` entry point): see :mod:`dpa4_core.commands`."""
    from dpa4_core.commands import register as register_commands

    register_commands(sub)


def version_text() -> str:
    """``dpa4 X (torch Y, python Z)``: the installed distribution's version, else the package's."""
    import torch

    try:
        own = version(DISTRIBUTION)
    except PackageNotFoundError:
        from dpa4_core import __version__ as own
    return f"dpa4 {own} (torch {torch.__version__}, python {sys.version.split()[0]})"


class _Version(argparse.Action):
    """``--version``: print :func:`version_text` to stdout and exit 0 (torch is imported only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(0)


def _global_options(parser: argparse.ArgumentParser, suffix: str, suppress: bool) -> argparse.ArgumentParser:
    """Add the global options; their values land in ``verbose_<suffix>`` / ``quiet_<suffix>`` (combined later:
    a subparser's defaults would otherwise overwrite what was given before the subcommand)."""
    default = {"default": argparse.SUPPRESS} if suppress else {}
    group = parser.add_argument_group("global options")
    group.add_argument("-v", "--verbose", action="count", dest=f"verbose_{suffix}",
                       help="log to stderr (-v info, -vv debug)", **(default or {"default": 0}))
    group.add_argument("-q", "--quiet", action="store_true", dest=f"quiet_{suffix}",
                       help="only errors on stderr, no progress bars", **default)
    group.add_argument("--version", action=_Version, help="print the dpa4 and torch versions and exit")
    return parser


class _SubCommands(argparse._SubParsersAction):
    """Every subparser gets the global options (``parents=``), shows its epilog's Examples verbatim, and may
    redefine one of them (``dpa4 screen --quiet``: its own option wins, the other global options stay)."""

    def add_parser(self, name, **kwargs):
        # A fresh parent each time: "resolve" edits the conflicting action, which parents= shares, in place.
        own = _global_options(argparse.ArgumentParser(add_help=False), "sub", suppress=True)
        kwargs["parents"] = [*kwargs.get("parents", []), own]
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("conflict_handler", "resolve")
        return super().add_parser(name, **kwargs)


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


EPILOG = """Global options (-v, -q, --version) go before or after the subcommand. Exit status: 0 ok, 1 failure,
2 bad input, 130 interrupted. 'dpa4 COMMAND --help' shows each command's options and examples.

Examples:
  dpa4 info dpa4-starter.pt
  dpa4 relax POSCAR more.cif --model best.pt --out relaxed/
  dpa4 md POSCAR --model best.pt --temperature 600 --steps 2000 --traj md.extxyz
  dpa4 eval best.pt test_split.extxyz --table --predictions predicted.extxyz
  dpa4 train examples/train_monbtaw.yaml"""


def build_parser() -> CommandLine:
    """The ``dpa4`` parser with the subcommands of every entry point in :data:`COMMAND_GROUP`."""
    parser = argparse.ArgumentParser(prog="dpa4", description="DPA4 interatomic potential: train, fine-tune, "
                                     "evaluate, relax, run MD, screen", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _global_options(parser, "main", suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", action=_SubCommands)
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
        parser.epilog = "\n".join([EPILOG, "", *left_out])
    return CommandLine(parser, sorted(sub.choices), left_out)


def _combine_global_options(args: argparse.Namespace) -> argparse.Namespace:
    """``args.verbose`` (count) and ``args.quiet`` from the options given before and after the subcommand (and a
    subcommand's own ``--quiet``)."""
    args.verbose = args.verbose_main + getattr(args, "verbose_sub", 0)
    args.quiet = bool(args.quiet_main or getattr(args, "quiet_sub", False) or getattr(args, "quiet", False))
    return args


def _configure_logging(args: argparse.Namespace) -> int:
    """Set the root logger for ``-q`` / ``-v``; returns its previous level (restored when the command ends, so
    in-process callers keep their logging)."""
    root = logging.getLogger()
    before = root.level
    if args.quiet:
        root.setLevel(logging.ERROR)
    elif args.verbose:
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        root.setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    return before


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dpa4`` console script; returns the exit status (1 failure, 2 bad input, 130 Ctrl-C)."""
    cli = build_parser()
    if not cli.commands:
        print(f"dpa4: no subcommands are registered (entry-point group {COMMAND_GROUP!r} is empty): this "
              "installation's metadata is out of date; reinstall dpa4 (pip install -e .)", file=sys.stderr)
        return 1
    try:
        args = _combine_global_options(cli.parser.parse_args(argv))
    except SystemExit as exc:
        if exc.code not in (0, None):  # e.g. an unknown command that a left-out group would have added
            for message in cli.left_out:
                print(message, file=sys.stderr)
        raise
    if args.quiet and args.verbose:
        cli.parser.error("-q/--quiet and -v/--verbose cannot be combined")
    level = _configure_logging(args)
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
    finally:
        logging.getLogger().setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
