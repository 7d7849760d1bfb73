"""The options of ``dpa4 screen`` and ``workflows/screen_candidates.py``: :class:`ScreenOptions` and its parser."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from dpa4_core.pretrained import COMMITTEE_SCALES, expand_committee


@dataclass(frozen=True)
class ScreenOptions:
    """Inputs of :func:`dpa4_flows.screen.screen`; model, device, dtype and relaxation defaults from settings.

    ``candidates``: files, folders and globs (None: the built-in Mo-Nb-Ta-W demo set); ``competing_phases``:
    structures relaxed with the same model and added to the hull (not ranked); ``workers``: processes that
    share the run; ``max_volume_change``: relaxations changing the volume by more are flagged, not ranked.
    """

    out: Path = Path("runs/screening")
    model: Path | None = None
    candidates: list[str] | None = None
    competing_phases: list[str] | None = None
    references: Path | None = None
    reference_prototypes: tuple[str, ...] = ("bcc",)
    n_random: int = 2
    chunk_size: int | None = None
    fmax: float | None = None  # eV/A
    max_steps: int | None = None
    device: str | None = None
    dtype: str | None = None
    workers: int = 1
    max_volume_change: float = 0.30
    quiet: bool = False
    md_temperatures: tuple[float, ...] = ()
    md_threshold: float = 50.0  # meV/atom above the hull
    md_steps: int = 1000
    committee: tuple[str, ...] = ()
    committee_k: float | None = None  # None: a shipped committee's calibrated scale, else 1

    def checks(self) -> dict:
        """The optional MD and committee settings of ``ScreeningMaker`` (empty when none is asked for)."""
        out = {}
        if self.md_temperatures:
            out.update(md_temperatures=tuple(self.md_temperatures), md_threshold=self.md_threshold / 1000.0,
                       md_steps=self.md_steps)
        if self.committee:
            members = tuple(str(Path(c).expanduser().resolve()) if Path(c).expanduser().exists() else str(c)
                            for c in expand_committee(self.committee))  # a name that is no file is passed through
            k = self.committee_k
            if k is None:  # one shipped committee: its measured spread-to-error scale; otherwise 1 std
                k = COMMITTEE_SCALES.get(self.committee[0], 1.0) if len(self.committee) == 1 else 1.0
            out.update(committee=members, committee_k=k)
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ScreenOptions:
        candidates = [*(getattr(args, "paths", None) or []), *(args.candidates or [])] or None
        return cls(out=args.out, model=args.model, candidates=candidates, competing_phases=args.competing_phases,
                   references=args.references, reference_prototypes=tuple(args.reference_prototypes),
                   n_random=args.n_random, chunk_size=args.chunk_size, fmax=args.fmax, max_steps=args.max_steps,
                   device=args.device, dtype=args.dtype, workers=args.workers,
                   max_volume_change=args.max_volume_change, quiet=args.quiet,
                   md_temperatures=tuple(args.md_temperature or ()), md_threshold=args.md_threshold,
                   md_steps=args.md_steps, committee=tuple(args.committee or ()), committee_k=args.committee_k)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The screening options, shared by ``dpa4 screen`` and the script; defaults from the ``DPA4_*`` settings."""
    from dpa4_flows.settings import get_settings

    settings = get_settings()
    parser.add_argument("paths", nargs="*", metavar="CANDIDATES",
                        help="candidate files, folders and globs: CIF, POSCAR/CONTCAR/.vasp, extxyz, pymatgen JSON, "
                             "ASE .db (default: the built-in Mo-Nb-Ta-W demo set)")
    parser.add_argument("--store", "--out", dest="out", type=Path, default=Path("runs/screening"),
                        help="run folder: job store, tables, plots, log (made absolute; rerun to resume)")
    parser.add_argument("--model", default=settings.model,
                        help="DPA4 checkpoint path, or 'starter' for the shipped starter model")
    parser.add_argument("--candidates", nargs="+", help=argparse.SUPPRESS)  # before CANDIDATES were positional
    parser.add_argument("--competing-phases", nargs="+", metavar="FILES",
                        help="known phases of the system (files, folders, globs) relaxed with the same model and "
                             "added to the hull")
    parser.add_argument("--references", type=Path, help="entries JSON with elemental references from the same model")
    parser.add_argument(
        "--reference-prototypes", nargs="+", default=["bcc"], choices=["bcc", "fcc", "hcp"],
        help="elemental reference structures relaxed with the model; the lowest per element is the reference "
             "(default bcc: the DFT ground state of Mo, Nb, Ta and W, and the only phase the starter model was "
             "trained on, which wrongly puts fcc/hcp Mo below bcc)",
    )
    parser.add_argument("--n-random", type=int, default=2, help="random 32-atom alloys in the built-in set")
    parser.add_argument("--chunk", "--chunk-size", dest="chunk_size", type=int, default=settings.chunk_size,
                        help="structures per relax job")
    parser.add_argument("--workers", type=int, default=available_cores(),
                        help="worker processes sharing the run, one torch thread each when more than one "
                             "(default: this machine's cores, %(default)s)")
    parser.add_argument("--fmax", type=float, default=settings.fmax, help="force criterion, eV/A")
    parser.add_argument("--max-steps", type=int, default=settings.max_steps, help="optimiser steps per structure")
    parser.add_argument("--max-volume-change", type=float, default=0.30,
                        help="flag (do not rank) relaxations that change the volume by more than this fraction")
    parser.add_argument("--device", default=settings.device, help="torch device")
    parser.add_argument("--dtype", default=settings.dtype, choices=["float32", "float64"])
    parser.add_argument("--md-temperature", nargs="+", type=float, metavar="K",
                        help="short NVT (batched engine) at each temperature for the candidates near the hull: "
                             "MSD, space group kept, verdict stable/melted/decomposed")
    parser.add_argument("--md-threshold", type=float, default=50.0, metavar="MEV",
                        help="MD only for candidates within this many meV/atom of the hull (default 50)")
    parser.add_argument("--md-steps", type=int, default=1000, help="MD steps of 2 fs (default 1000)")
    parser.add_argument("--committee", nargs="+", metavar="PATH",
                        help="checkpoints (or shipped names, or a shipped committee: small-MoNbTaW-committee) "
                             "computing single points of the relaxed structures (relaxation uses --model only): "
                             "mean and spread of e_above_hull, stability_uncertain flag")
    parser.add_argument("--committee-k", type=float, default=None,
                        help="flag stability_uncertain where the call flips within k committee std (default: a "
                             "shipped committee's calibrated scale, 5.6 for small-MoNbTaW-committee; else 1)")
    parser.add_argument("--quiet", action="store_true", help="only warnings and the final table")
    return parser


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, as a batch scheduler sets it), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
