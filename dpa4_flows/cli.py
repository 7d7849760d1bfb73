"""dpa4_flows' subcommands of the ``dpa4`` command (entry point ``flows`` in the group ``dpa4.commands``).

- ``dpa4 screen [--out DIR] [--model CKPT] [--candidates FILES...] ...``: screen candidate crystals for
  thermodynamic stability, resumably (:func:`dpa4_flows.screen.screen`, also ``workflows/screen_candidates.py``);
- ``dpa4 results --store DIR``: print the screening table stored in a run's job store.
"""

from __future__ import annotations

from pathlib import Path


def _cmd_screen(args) -> int:
    from dpa4_flows.screen import ScreenOptions, screen

    return screen(ScreenOptions.from_args(args))


def _cmd_results(args) -> int:
    from dpa4_flows.analysis.report import format_table, results_dataframe, summary
    from dpa4_flows.screen import stored_report

    report = stored_report(args.store)  # ScreenInputError (a ValueError): exit status 2
    print(format_table(results_dataframe(report)))
    print(summary(report))
    return 0


def register(sub) -> None:
    """Add ``screen`` and ``results`` to the ``dpa4`` parser's subcommands."""
    from dpa4_flows.screen import add_arguments

    p = sub.add_parser("screen", help="screen candidate crystals for thermodynamic stability (resumable)")
    add_arguments(p)
    p.set_defaults(func=_cmd_screen)

    p = sub.add_parser("results", help="print the screening table stored in a run's job store")
    p.add_argument("--store", required=True, type=Path,
                   help="output folder of a screening run (holds jobs.sqlite), or the sqlite file itself")
    p.set_defaults(func=_cmd_results)
