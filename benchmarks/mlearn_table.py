"""DPA4 on the mlearn sets (Li, Mo, Si, Ge) against the published GAP and MTP results (issue 18).

    OMP_NUM_THREADS=1 python benchmarks/mlearn_table.py --train    # runs examples/finetune_mlearn_<el>.yaml (20 min of one core each)
    OMP_NUM_THREADS=1 python benchmarks/mlearn_table.py            # table from the finished runs

Each recipe holds out 10% of the set's training file (seed 0; written to ``runs/mlearn_<el>/test_split.extxyz``);
the numbers are ``dpa4 eval``'s MAEs of ``best.pt`` on those frames. Published: Zuo et al., J. Phys. Chem. A 124,
731 (2020), Table 3 (test MAEs; best of GAP and MTP per set, as the issue quotes them): energy 0.49 / 2.24 / 2.21 /
1.79 meV/atom, forces 0.01 / 0.09 / 0.06 / 0.05 eV/A for Li / Mo / Si / Ge. Their test sets are separate files from
the same AIMD/elastic/surface/vacancy protocol; ours is a random 10% of the training file, so the comparison is
close, not identical. Last line: ``beats_best_energy=K/4 beats_best_forces=K/4``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ELEMENTS = ("li", "mo", "si", "ge")
# Best of GAP and MTP per set (Zuo et al. 2020): energy meV/atom, forces eV/A.
PUBLISHED = {"li": (0.49, 0.01), "mo": (2.24, 0.09), "si": (2.21, 0.06), "ge": (1.79, 0.05)}


def recipe(element: str) -> Path:
    return ROOT / "examples" / f"finetune_mlearn_{element}.yaml"


def train(element: str) -> None:
    """``dpa4 finetune`` for a recipe with a base checkpoint, ``dpa4 train`` for one from scratch."""
    text = recipe(element).read_text()
    command = "finetune" if "\nbase_checkpoint:" in f"\n{text}" else "train"
    subprocess.run([sys.executable, "-m", "dpa4_core.cli", "-q", command, str(recipe(element))], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)


def evaluate(element: str) -> dict | None:
    run = ROOT / "runs" / f"mlearn_{element}"
    if not (run / "best.pt").is_file():
        return None
    out = subprocess.run([sys.executable, "-m", "dpa4_core.cli", "-q", "eval", str(run / "best.pt"),
                          str(run / "test_split.extxyz"), "--json"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true", help="run the four recipes first (20 min of one core each)")
    parser.add_argument("--elements", nargs="+", default=list(ELEMENTS), choices=ELEMENTS)
    args = parser.parse_args(argv)
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    rows, beats_e, beats_f = [], 0, 0
    for element in args.elements:
        if args.train:
            train(element)
        result = evaluate(element)
        e_pub, f_pub = PUBLISHED[element]
        if result is None:
            rows.append(f"| {element.capitalize()} | (no run) | {e_pub} | | {f_pub} | |")
            continue
        overall = result.get("overall", result)
        e, f = overall["energy_mae_mev_per_atom"], overall["force_mae_mev_per_a"] / 1000.0
        beats_e += e <= e_pub
        beats_f += f <= f_pub
        rows.append(f"| {element.capitalize()} | {overall['n_frames']} | {e:.2f} | {e_pub} | {f:.3f} | {f_pub} |")
    print("| set | test frames | dpa4 E MAE (meV/atom) | best GAP/MTP | dpa4 F MAE (eV/A) | best GAP/MTP |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"beats_best_energy={beats_e}/{len(args.elements)} beats_best_forces={beats_f}/{len(args.elements)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
