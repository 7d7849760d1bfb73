"""``dpa4 eval CHECKPOINT DATA...``: MAE and RMSE of energy per atom, forces and stress, overall, per subset (each
file or folder, and each ``config_type`` its reader gives) and per element; ``--predictions`` writes every frame
with DFT and predicted labels. JSON on stdout by default (scripts and earlier releases read it); ``--table`` prints
the same numbers as tables."""

from __future__ import annotations

import sys

from dpa4_core.commands.common import add_command, format_table, print_json, progress

_OVERALL = (("energy", "energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "meV/atom", "n_frames"),
            ("forces", "force_mae_mev_per_a", "force_rmse_mev_per_a", "meV/A", "n_atoms"),
            ("stress", "stress_mae_gpa", "stress_rmse_gpa", "GPa", "n_stress_frames"))


def tables(result: dict) -> str:
    """The overall, per-subset and per-element tables of a :meth:`EvalReport.to_dict`."""
    overall = format_table(["quantity", "MAE", "RMSE", "unit", "count"],
                           [[name, result[mae], result[rmse], unit, result[n]]
                            for name, mae, rmse, unit, n in _OVERALL],
                           digits=3)
    subsets = format_table(
        ["subset", "frames", "E MAE", "E RMSE", "F MAE", "F RMSE", "S MAE", "S RMSE"],
        [[s["subset"], s["n_frames"], s["energy_mae_mev_per_atom"], s["energy_rmse_mev_per_atom"],
          s["force_mae_mev_per_a"], s["force_rmse_mev_per_a"], s["stress_mae_gpa"], s["stress_rmse_gpa"]]
         for s in result["subsets"]], digits=3)
    elements = format_table(["element", "atoms", "F MAE", "F RMSE"],
                            [[e["element"], e["n_atoms"], e["force_mae_mev_per_a"], e["force_rmse_mev_per_a"]]
                             for e in result["elements"]], digits=3)
    dropped = f" ({result['n_dropped']} dropped: atoms closer than r_in)" if result["n_dropped"] else ""
    return "\n\n".join([
        f"{result['n_frames']} frames, {result['n_atoms']} atoms{dropped}\n{overall}",
        f"per subset (E meV/atom, F meV/A, S GPa)\n{subsets}",
        f"forces per element (meV/A)\n{elements}",
    ])


def _cmd_eval(args) -> int:
    from dpa4_core.train.evaluate_report import evaluate_report

    read = {k: v for k, v in (("format", args.format), ("stress_unit", args.stress_unit)) if v is not None}
    report = evaluate_report(args.checkpoint, args.data, batch_size=args.batch_size, dtype=args.dtype,
                             allow_untrained_elements=args.allow_untrained_elements, progress=progress(args),
                             **read)
    result = report.to_dict()
    if args.predictions is not None:
        path = report.write_predictions(args.predictions)
        if not args.quiet:
            print(f"dpa4 eval: predictions of {len(report.energy)} frames written to {path}", file=sys.stderr)
    if args.table:
        print(tables(result))
    else:
        print_json(result)
    return 0


def register(sub) -> None:
    """Add ``eval``."""
    p = add_command(sub, "eval", "errors (MAE, RMSE) of a checkpoint on labelled data", [
        "dpa4 eval runs/mine/best.pt runs/mine/test_split.extxyz",
        "dpa4 eval best.pt data/maml_MoNbTaW --table            # per-file and per-element tables",
        "dpa4 eval best.pt frames.extxyz --predictions pred.extxyz   # dft_/dpa4_ energy, forces, stress",
        "dpa4 eval best.pt OUTCAR --format vasp-out --stress-unit kbar_vasp",
    ], description="MAE and RMSE of energy per atom (meV/atom), force components (meV/A) and stress "
                   "components (GPa), overall, per subset (each DATA argument, split by config_type where the "
                   "frames carry one) and per element. JSON on stdout unless --table.")
    p.add_argument("checkpoint", help="DPA4 checkpoint (.pt)")
    p.add_argument("data", nargs="+", help="files or folders (extxyz, VASP, pymatgen JSON, DeePMD, ...)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per model call (default 8)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the checkpoint's")
    p.add_argument("--format", default=None, help="force a reader: pymatgen-json, deepmd, ase or an ASE format")
    p.add_argument("--stress-unit", default=None, help="kbar_vasp, kbar, gpa or ev/a^3")
    p.add_argument("--allow-untrained-elements", action="store_true",
                   help="score frames with elements the checkpoint was not trained on (refused by default)")
    p.add_argument("--predictions", metavar="FILE", default=None,
                   help="write every frame with DFT and DPA4 energy, forces, stress (extxyz: info dft_energy, "
                        "dpa4_energy, dft_stress, dpa4_stress; arrays dft_forces, dpa4_forces)")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", dest="table", action="store_false", help="JSON on stdout (the default)")
    output.add_argument("--table", dest="table", action="store_true", help="human-readable tables instead")
    p.set_defaults(func=_cmd_eval, table=False)
