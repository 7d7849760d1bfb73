"""dpa4_flows' subcommands of the ``dpa4`` command (entry point ``flows`` in the group ``dpa4.commands``).

- ``dpa4 screen [CANDIDATES...] [--store DIR] [--model NAME|PATH] [--competing-phases FILES...] [--chunk N]
  [--workers N] ...``: screen candidate crystals for thermodynamic stability, resumably
  (:func:`dpa4_flows.screen.screen`, also ``workflows/screen_candidates.py``);
- ``dpa4 results --store DIR [--top K] [--json | --csv FILE] [--stable-only]``: the screening table stored in a
  run's job store;
- ``dpa4 candidates ...``: candidate structures from the prototype library (:mod:`dpa4_flows.structures.generate`)
  or ordered decorations of a parent lattice (``--parent bcc --max-sites N``, :mod:`dpa4_flows.structures.decorations`).
"""

from __future__ import annotations

from pathlib import Path


def _cmd_screen(args) -> int:
    from dpa4_flows.screen import ScreenOptions, screen

    return screen(ScreenOptions.from_args(args))


def _cmd_results(args) -> int:
    import json
    import sys

    from dpa4_flows.analysis.report import format_table, results_dataframe, summary, write_csv
    from dpa4_flows.screen import stored_report

    report = stored_report(args.store)  # ScreenInputError (a ValueError): exit status 2
    frame = results_dataframe(report)
    if args.stable_only:
        frame = frame[frame["is_stable"] == True].reset_index(drop=True)  # noqa: E712 - a column of True/False/None
    if args.top is not None:
        frame = frame.head(args.top)
    if args.json:
        records = json.loads(frame.to_json(orient="records"))  # NaN -> null: strict JSON
        json.dump({"model_id": report.model_id, "n_candidates": report.n_candidates, "n_stable": report.n_stable,
                   "n_flagged": report.n_flagged, "n_failed": report.n_failed, "metrics": report.metrics,
                   "rows": records}, sys.stdout, indent=1)
        print()
        return 0
    if args.csv is not None:
        print(f"{len(frame)} rows written to {write_csv(frame, args.csv)}")
        return 0
    print(format_table(frame))
    print(summary(report))
    return 0


def _cmd_candidates(args) -> int:
    import sys

    from dpa4_flows.structures.decorations import decorations
    from dpa4_flows.structures.generate import PrototypeError, library, prototype_candidates

    try:
        if args.parent:
            found = decorations(args.parent, args.elements, args.max_sites, dedupe=not args.no_dedupe)
        else:
            found = prototype_candidates(args.elements, args.prototypes, dedupe=not args.no_dedupe)
    except PrototypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for key, structure in found.items():
        structure.to(filename=str(args.out / f"{key}.{args.format}"))
    source = (f"orderings of {args.parent} up to {args.max_sites} sites" if args.parent
              else f"{len(args.prototypes or library())} prototypes")
    print(f"{len(found)} candidates from {source} written to {args.out} "
          f"(screen them: dpa4 screen {args.out} --store DIR)")
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
    p.add_argument("--top", type=int, help="only the first K rows (ranked by energy above the hull)")
    p.add_argument("--stable-only", action="store_true", help="only candidates on the hull")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the rows and summary as JSON")
    fmt.add_argument("--csv", type=Path, metavar="FILE", help="write the rows to a CSV file")
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser("candidates", help="candidate structures by element substitution into shipped prototypes")
    p.add_argument("--elements", nargs="+", required=True, help="element symbols to substitute, e.g. Mo Nb Ta W")
    p.add_argument("--prototypes", nargs="+", help="prototype names (default all: B2 L1_0 L1_2 D0_3 C15 rocksalt "
                                                     "perovskite spinel fluorite)")
    p.add_argument("--parent", choices=["bcc", "fcc"], help="instead of prototypes: every symmetry-distinct "
                   "ordering of the elements on supercells of this parent lattice (with --max-sites)")
    p.add_argument("--max-sites", type=int, default=4, help="largest supercell of --parent, in sites (default 4)")
    p.add_argument("--out", type=Path, required=True, help="folder for the candidate files")
    p.add_argument("--format", choices=["cif", "json"], default="cif", help="file format (default cif)")
    p.add_argument("--no-dedupe", action="store_true", help="keep symmetry-equivalent duplicates")
    p.set_defaults(func=_cmd_candidates)
