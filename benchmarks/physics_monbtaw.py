"""Physics of Mo-Nb-Ta-W models against the vendored PBE data: bcc lattice constant, cohesive energy, uniform
expansion to the isolated atom, dimer well, C11/C12/C44 and C'.

    OMP_NUM_THREADS=1 python benchmarks/physics_monbtaw.py [--model NAME_OR_PATH ...]

DFT side, all from ``data/``: elastic constants and the equilibrium lattice constant from a strain-stress fit
(|strain| <= 2%) to ``{El}_Elastic`` (2-atom bcc cells, VASP PBE; the lattice constant is the reference cell
corrected by the isotropic strain that cancels its residual pressure); isolated-atom energy E0 = half the PBE
dimer energy at 6 A (``matbench_discovery_refs/diatomics-dft.json.gz``); cohesive energy E0 - E(bcc at a0).
Model side: the same strained cells (same fit), E(a) minimised on a grid, the model's own isolated atom.
Last line: ``physics model=... worst_cohesive_rel=... min_c_prime=... monotonic=...`` per model.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from dpa4_core.data.paths import vendored
from dpa4_core.io.checkpoint import load_for_inference
from dpa4_core.model.bias import dimer_curve
from dpa4_core.pretrained import physics
from dpa4_core.train import load_dataset

ELEMENTS = ("Nb", "Mo", "Ta", "W")
VOLUMES = (1.0, 1.1, 1.25, 1.5, 1.73, 2.0, 2.5, 3.0, 4.0, 5.0, 8.0, 12.0, 20.0)


def dft_reference(element: str) -> dict:
    frames = load_dataset(str(vendored("maml_MoNbTaW", f"{element}_Elastic.json.gz")))
    cubic = [i for i in range(len(frames)) if np.ptp(np.diag(frames.cell[i])) < 1e-6 and
             np.abs(frames.cell[i] - np.diag(np.diag(frames.cell[i]))).max() < 1e-9]
    ref = min(cubic, key=lambda i: abs(np.trace(frames.stress[i])))
    c, sigma0 = physics.strain_stress_fit(frames.cell, frames.stress, frames.cell[ref])
    a_ref = float(frames.cell[ref][0, 0])
    r, energy, _ = dimer_curve(vendored("matbench_discovery_refs", "diatomics-dft.json.gz"), element)
    e0 = energy[-1] / 2
    depth, position = physics.well(r, energy, energy[-1])
    return {"frames": frames, "ref": ref, "a0": a_ref * (1 + physics.isotropic_equilibrium(c, sigma0)),
            "cohesive": e0 - frames.energy[ref] / frames.n_atoms[ref], "elastic": physics.cubic_constants(c),
            "dimer": (depth, position), "dimer_r": r}


def model_physics(model, element: str, dft: dict) -> dict:
    frames = dft["frames"]
    structures = [frames.atoms(i) for i in range(len(frames))]
    c, _ = physics.strain_stress_fit(frames.cell, physics.stresses(model, structures), frames.cell[dft["ref"]])
    a0, e_bulk = physics.lattice_constant(model, element, dft["a0"])
    e_iso = physics.isolated_energy(model, element)
    curve = physics.expansion_curve(model, element, a0, VOLUMES)
    r = dft["dimer_r"][dft["dimer_r"] >= 1.5]
    depth, position = physics.well(r, physics.dimer_energies(model, element, r), 2 * e_iso)
    return {"a0": a0, "cohesive": e_iso - e_bulk, "elastic": physics.cubic_constants(c), "dimer": (depth, position),
            "expansion": curve, "e_iso": e_iso, "monotonic": bool(np.all(np.diff(np.append(curve, e_iso)) >= -1e-4))}


def report(name: str, dft_all: dict) -> str:
    model = load_for_inference(name, torch.float64)
    worst, min_cp, monotonic = 0.0, np.inf, True
    print(f"\n== {name}")
    print(f"{'el':3} {'a0 model/DFT (A)':>18} {'Ecoh model/DFT (eV)':>20} {'dimer depth (eV) @ r (A) model | DFT':>38} "
          f"{'C11':>11} {'C12':>11} {'C44':>11} {'C_prime':>11}")
    for el in ELEMENTS:
        dft, got = dft_all[el], model_physics(model, el, dft_all[el])
        worst = max(worst, abs(got["cohesive"] / dft["cohesive"] - 1))
        min_cp, monotonic = min(min_cp, got["elastic"]["C'"]), monotonic and got["monotonic"]
        el_cols = " ".join(f"{got['elastic'][k]:5.0f}/{dft['elastic'][k]:<5.0f}" for k in ("C11", "C12", "C44", "C'"))
        print(f"{el:3} {got['a0']:8.4f}/{dft['a0']:<8.4f} {got['cohesive']:9.3f}/{dft['cohesive']:<9.3f} "
              f"{got['dimer'][0]:7.2f} @ {got['dimer'][1]:4.2f} | {dft['dimer'][0]:7.2f} @ {dft['dimer'][1]:4.2f}"
              f"        {el_cols}")
        rise = " ".join(f"{v:g}:{e - got['e_iso']:+.2f}" for v, e in zip(VOLUMES, got["expansion"]))
        print(f"    E(V/V0) - E_iso (eV/atom), monotonic={got['monotonic']}: {rise}")
    return f"physics model={name} worst_cohesive_rel={worst:.3f} min_c_prime={min_cp:.1f} monotonic={monotonic}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="shipped model name or checkpoint path (repeatable)")
    args = parser.parse_args(argv)
    print("command: OMP_NUM_THREADS=1 python " + " ".join(sys.argv))
    dft_all = {el: dft_reference(el) for el in ELEMENTS}
    lines = [report(name, dft_all) for name in (args.model or ["starter-MoNbTaW"])]
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
