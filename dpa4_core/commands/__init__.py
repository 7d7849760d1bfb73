"""dpa4_core's subcommands of the ``dpa4`` command, one module each, every one with ``register(subparsers)``.

``train`` / ``finetune`` (:mod:`.train`), ``eval`` (:mod:`.evaluate`), ``info`` (:mod:`.info`), ``relax``
(:mod:`.relax`), ``md`` (:mod:`.md`) and ``convert-deepmd`` (:mod:`.convert`); shared helpers (examples epilog, tables, structure files) in
:mod:`.common`. The main parser, the global options and the entry-point discovery live in :mod:`dpa4_core.cli`.
"""

from __future__ import annotations

from dpa4_core.commands import convert, evaluate, info, md, relax, train


def register(sub) -> None:
    """Add every dpa4_core subcommand to ``sub`` (an argparse subparsers action)."""
    for module in (train, evaluate, info, relax, md, convert):
        module.register(sub)
