"""Held-out errors of Mo-Nb-Ta-W models per subset, on the grouped test split of ``examples/monbtaw_split.py``.

    python examples/monbtaw_split.py runs/monbtaw_v2_data
    OMP_NUM_THREADS=1 python benchmarks/physics_monbtaw_heldout.py runs/monbtaw_v2_data/test.extxyz \
        --model small-MoNbTaW --model starter-MoNbTaW

Subsets by the frames' ``config_type`` (``<file>/<group>``): AIMD (54-atom trajectories, one whole trajectory per
element held out: 300-4000 K), Elastic (2-atom strained bcc), Surface (slabs), SS (16-atom binary solid solutions),
and all. Energy MAE per atom (meV/atom), force MAE per component (meV/A), stress MAE (GPa), as ``dpa4 eval``.
Last line per model: ``heldout model=... <subset>=E/F ...``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.train import evaluate, load_dataset

SUBSETS = ("AIMD", "Elastic", "Surface", "SS")


def subset_of(group: str) -> str:
    return group.split("/")[0].split("_")[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="extxyz written by examples/monbtaw_split.py (config_type = file/group)")
    parser.add_argument("--model", action="append", help="shipped model name or checkpoint path (repeatable)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    print("command: OMP_NUM_THREADS=1 python " + " ".join(sys.argv))
    data = load_dataset(args.data)
    kinds = np.array([subset_of(data.group_names[g]) for g in data.group])
    lines = []
    for name in args.model or ["starter-MoNbTaW"]:
        model = load_checkpoint(name)
        print(f"\n== {name}\n{'subset':8} {'frames':>6} {'E meV/atom':>11} {'F meV/A':>9} {'S GPa':>7}")
        summary = []
        for subset in (*SUBSETS, "all"):
            idx = np.flatnonzero(kinds == subset) if subset != "all" else np.arange(len(data))
            if not len(idx):
                continue
            m = evaluate(model, data.subset(idx), batch_size=args.batch_size)
            print(f"{subset:8} {len(idx):6d} {m['energy_mae_mev_per_atom']:11.2f} {m['force_mae_mev_per_a']:9.1f} "
                  f"{m['stress_mae_gpa'] or 0:7.3f}")
            summary.append(f"{subset}={m['energy_mae_mev_per_atom']:.2f}/{m['force_mae_mev_per_a']:.1f}")
        lines.append(f"heldout model={name} " + " ".join(summary))
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
