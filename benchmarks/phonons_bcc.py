"""Phonons of bcc Nb, Mo, Ta, W with a DPA4 model through atomate2's ``PhononMaker`` (phonopy finite
displacements): imaginary modes yes/no and the lowest frequency on the band-structure path.

    OMP_NUM_THREADS=1 python benchmarks/phonons_bcc.py [--model NAME_OR_PATH ...] [--cells 5]

Each element starts as the primitive bcc cell at the DFT lattice constant (the ``{El}_Elastic`` strain-stress
fit of ``benchmarks/physics_monbtaw.py`` gives 3.323 / 3.168 / 3.322 / 3.190 A); atomate2 relaxes it with the
model, displaces atoms by 0.01 A in a ``cells^3`` cubic supercell (2 cells^3 atoms; 5 -> 250 atoms, 16 A across)
and runs the band structure along seekpath's path. A 2-block model with a 5 A cutoff reaches 10 A: with 4 cells
(128 atoms, 12.7 A) the truncated force constants gave spurious imaginary modes near Gamma (small-MoNbTaW's
Nb, Mo, W: -0.4 to -0.9 THz) that 5 cells remove. DFT (PBE) and
experiment have no imaginary modes in any of the four. A mechanically unstable model (C' < 0) shows imaginary
acoustic branches along Gamma-N. Last line per model: ``phonons model=... Nb=no/2.10 ...`` (imaginary, lowest THz).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings

import numpy as np
from ase.build import bulk
from jobflow import run_locally
from pymatgen.io.ase import AseAtomsAdaptor

from atomate2.forcefields.flows.phonons import PhononMaker
from dpa4_core.pretrained import resolve_checkpoint
from dpa4_flows.execution.stores import memory_store

LATTICE = {"Nb": 3.323, "Mo": 3.168, "Ta": 3.322, "W": 3.190}  # PBE, maml_MoNbTaW *_Elastic fit (A)
DPA4 = {"@module": "dpa4_core.calculator", "@callable": "DPA4Calculator"}
TO_CUBIC = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]  # ASE's primitive bcc vectors a/2(-1,1,1), ... -> the cubic cell


def phonons(checkpoint: str, element: str, cells: int) -> dict:
    """``{"imaginary": bool, "lowest": THz, "q": frac, "highest": THz, "atoms": int}`` for bcc ``element``."""
    structure = AseAtomsAdaptor.get_structure(bulk(element, "bcc", a=LATTICE[element]))
    maker = PhononMaker.from_force_field_name(DPA4, calculator_kwargs={"checkpoint": checkpoint, "dtype": "float64"},
                                              store_force_constants=False)
    flow = maker.make(structure, supercell_matrix=(np.array(TO_CUBIC) * cells).tolist())
    store = memory_store()
    with tempfile.TemporaryDirectory() as root:
        run_locally(flow, store=store, create_folders=True, root_dir=root, log=False, ensure_success=True)
    doc = flow.output.resolve(store)
    bands = doc.phonon_bandstructure
    where = np.unravel_index(np.argmin(bands.bands), bands.bands.shape)
    return {"imaginary": bool(doc.has_imaginary_modes), "lowest": float(bands.bands.min()),
            "q": np.round(bands.qpoints[where[1]].frac_coords, 3).tolist(), "highest": float(bands.bands.max()),
            "atoms": 2 * cells**3}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="shipped model name or checkpoint path (repeatable)")
    parser.add_argument("--cells", type=int, default=5, help="cubic cells per supercell edge (default 5)")
    parser.add_argument("--elements", nargs="+", default=list(LATTICE))
    args = parser.parse_args(argv)
    print("command: OMP_NUM_THREADS=1 python " + " ".join(sys.argv))
    warnings.filterwarnings("ignore")  # library notices (magnetic moments, symmetry)
    lines = []
    for name in args.model or ["small-MoNbTaW"]:
        checkpoint = str(resolve_checkpoint(name).resolve())  # jobs run in their own folders
        print(f"\n== {name}\n{'el':3} {'imaginary':>9} {'lowest THz':>10} {'at q':>22} {'highest THz':>11}")
        summary = []
        for el in args.elements:
            got = phonons(checkpoint, el, args.cells)
            print(f"{el:3} {'yes' if got['imaginary'] else 'no':>9} {got['lowest']:10.3f} {str(got['q']):>22} "
                  f"{got['highest']:11.2f}")
            summary.append(f"{el}={'yes' if got['imaginary'] else 'no'}/{got['lowest']:.2f}")
        lines.append(f"phonons model={name} cells={args.cells} " + " ".join(summary))
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
