#!/usr/bin/env python
"""Screen Mo-Nb-Ta-W candidate crystals for thermodynamic stability with DPA4 (the project's main demo).

    python workflows/screen_candidates.py --out runs/screening      (the same as: dpa4 screen --out ...)

A thin wrapper around :func:`dpa4_flows.screen.screen` (see there for what it does); needs dpa4 installed
(``pip install -e .``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from dpa4_flows.screen import ScreenOptions, add_arguments, screen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    return add_arguments(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("jobflow", "dpa4_flows.jobs.batch_relax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return screen(ScreenOptions.from_args(args))
    except KeyboardInterrupt:  # before the run started (the run itself says how to resume)
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
