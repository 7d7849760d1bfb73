"""Write a stand-in for the authors' universal checkpoints (tests/fixtures/deepmd/dpa4_foundation_standin.pt):
what fine-tuning a foundation model is tested on without shipping the real weights (run in the side environment).

Shaped like the released files where it matters to fine-tuning: the type map is every element H-Og in
atomic-number order (118 types, as the OMat24 models), the published Mini options, float32 storage; tiny widths
(8 channels) keep it at ~0.3 MB. Random weights (seeded noise on every parameter, nonzero energy offsets), so its
predictions are meaningless: the tests check the mechanics (elements by atomic number, offset refit, frozen
blocks) and that dpa4 computes deepmd-kit's function of these weights; deepmd-kit's energies and forces (its
float32 model, and the same weights in float64) on two real VASP runs are stored next to it.

    .venv-dp/bin/python benchmarks/deepmd/make_foundation_standin.py    # from the repository root (needs ase)
"""

from __future__ import annotations

import json
import sys

import ase.data
import ase.io
import torch
from make_fixtures import DESCRIPTOR, FITTING, OPTIONS, OUT, ROOT, SEED, copy_stored, normalised, randomise

from deepmd.pt.model.model import get_model
from deepmd.pt.train.wrapper import ModelWrapper

TYPE_MAP = list(ase.data.chemical_symbols[1:119])
FRAMES = [("vasprun.lifepo4.xml.gz", 0), ("vasprun.md.xml.gz", 0)]  # LiFePO4 (112 atoms), Si64


def params(precision: str) -> dict:
    descriptor = dict(DESCRIPTOR, **OPTIONS["mini"], ffn_neurons=8, precision=precision)
    return normalised(TYPE_MAP, descriptor, dict(FITTING, precision=precision))


def evaluate(model: torch.nn.Module, atoms, dtype: torch.dtype) -> dict:
    coord = torch.tensor(atoms.positions, dtype=dtype).reshape(1, -1, 3)
    atype = torch.tensor([[TYPE_MAP.index(s) for s in atoms.get_chemical_symbols()]])
    box = torch.tensor(atoms.cell.array, dtype=dtype).reshape(1, 9)
    out = model(coord, atype, box=box)
    return {"energy": float(out["energy"].reshape(())), "forces": out["force"].detach().reshape(-1, 3).double()}


def main() -> int:
    torch.manual_seed(SEED + 50)
    p32 = params("float32")
    model32 = get_model(p32)
    randomise(model32, torch.Generator().manual_seed(SEED + 50))
    model32.eval()
    torch.save({"model": ModelWrapper(model32, model_params=p32).state_dict()}, OUT / "dpa4_foundation_standin.pt")
    model64 = get_model(params("float64")).to(torch.float64)
    copy_stored(model32, model64)
    model64.eval()
    reference = {}
    for file, index in FRAMES:
        atoms = ase.io.read(ROOT / "data" / "pymatgen_vasprun" / file, index=index, format="vasp-xml")
        reference[file] = {"index": index, "float32": evaluate(model32, atoms, torch.float32),
                           "float64": evaluate(model64, atoms, torch.float64)}
    torch.save(reference, OUT / "dpa4_foundation_standin_reference.pt")
    print(json.dumps({file: {k: v["energy"] for k, v in r.items() if k != "index"} for file, r in reference.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
