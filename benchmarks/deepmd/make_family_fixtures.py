"""Write the DPA4-OMat24-family fixtures (tests/fixtures/deepmd/dpa4_family_*.pt, dpa4_family_reference.pt).

Runs in the deepmd-kit side environment, like make_fixtures.py (setup in tests/fixtures/deepmd/README.md):

    OMP_NUM_THREADS=1 .venv-dp/bin/python benchmarks/deepmd/make_family_fixtures.py

One random-weight checkpoint per row of FAMILY: the option combination of each released model
(Nano/Mini/Neo/Air/Plus v20260805, benchmarks/deepmd/README.md "The released checkpoints' options"; Neo with
edge_norm on, as in later releases) with its lmax and mixing layers but small widths (channels 4, FFN width 4, 4 radial functions, rcut 5 A) and one block (two for Mini),
stored in float32 as the released files are (half the bytes). deepmd-kit's energy, forces and virial of the stored
weights in a float64 model (the exact function dpa4 must reproduce in float64) on eight structures (``frames()``:
a bcc alloy, a sheared cell, LiFePO4, the acac molecule, a pair inside the bridging window, a chain along +-z, an
isolated atom, a dimer), and for "mini" the node features entering the first block and leaving each
block on the first structure, go to dpa4_family_reference.pt.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

os.environ.setdefault("DP_TRITON_INFER", "0")  # deepmd's pure-PyTorch kernels, exact in float64
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from deepmd.pt.model.model import get_model  # noqa: E402
from deepmd.pt.train.wrapper import ModelWrapper  # noqa: E402
from make_fixtures import OUT, ROOT, SEED, copy_stored, normalised, randomise, read_frame  # noqa: E402

TYPE_MAP = ["W", "Nb", "Mo", "O", "Fe", "Li", "P", "C", "H"]  # not in atomic-number order
# The released v20260805 options (benchmarks/deepmd/README.md), scaled down: edge_norm false as in the published
# Mini config (later releases turn it on: "neo" has it on, so the focus norm is checked too).
BASE = {"type": "dpa4", "rcut": 5.0, "sel": 120, "channels": 4, "n_radial": 4, "mmax": 1, "kmax": 1, "edge_norm": False,
        "use_env_seed": True, "radial_so2_mode": "degree_channel", "radial_so2_rank": 1, "n_focus": 1,
        "focus_dim": 0, "n_atten_head": 1, "message_node_so3": True, "ffn_neurons": 4, "ffn_so3_grid": True,
        "grid_mlp": False, "grid_branch": [0, 0, 1], "ffn_blocks": 1, "so3_readout": "mlp",
        "precision": "float32", "seed": 1}
FAMILY = {
    "nano": {"lmax": 1, "n_blocks": 1, "mixing_layers": 3, "radial_so2_mode": "none"},  # released: 2 blocks
    "mini": {"lmax": 2, "n_blocks": 2, "mixing_layers": 3},
    "neo": {"lmax": 3, "n_blocks": 1, "mixing_layers": 3, "n_focus": 2, "edge_norm": True},  # released: 2 blocks
    "air": {"lmax": 3, "n_blocks": 1, "mixing_layers": 4},  # released: 3 blocks
    "plus": {"lmax": 4, "n_blocks": 1, "mixing_layers": 4, "radial_so2_rank": 2},  # released: 4 blocks
}
INTERMEDIATES = ("mini",)  # configs whose per-block node features are recorded


def lifepo4() -> dict:
    """The final structure of the vendored LiFePO4 VASP run (112 atoms, a slightly non-orthogonal cell)."""
    with gzip.open(ROOT / "data" / "pymatgen_vasprun" / "vasprun.lifepo4.xml.gz", "rt") as stream:
        root = ElementTree.parse(stream).getroot()
    symbols = [rc.findall("c")[0].text.strip() for rc in root.find("atominfo").find("array[@name='atoms']")
               .find("set")]
    final = root.find("structure[@name='finalpos']")
    cell = [[float(v) for v in row.text.split()] for row in final.find("crystal").find("varray[@name='basis']")]
    fractional = torch.tensor([[float(v) for v in row.text.split()] for row in final.find("varray[@name='positions']")],
                              dtype=torch.float64)
    positions = fractional @ torch.tensor(cell, dtype=torch.float64)
    return {"source": "data/pymatgen_vasprun/vasprun.lifepo4.xml.gz (finalpos)", "symbols": symbols,
            "positions": positions.tolist(), "cell": cell, "pbc": True}


def acac() -> dict:
    """The first acetylacetone frame of the vendored botnet data (C5H8O2, no cell)."""
    with gzip.open(ROOT / "data" / "botnet" / "dataset_acac" / "train_300K.xyz.gz", "rt") as stream:
        count = int(stream.readline())
        stream.readline()
        rows = [stream.readline().split() for _ in range(count)]
    return {"source": "data/botnet/dataset_acac/train_300K.xyz.gz[0]", "symbols": [r[0] for r in rows],
            "positions": [[float(v) for v in r[1:4]] for r in rows], "cell": None, "pbc": False}


def cluster(source: str, symbols: list[str], positions: list[list[float]]) -> dict:
    return {"source": source, "symbols": symbols, "positions": positions, "cell": None, "pbc": False}


def frames() -> list[dict]:
    periodic = []
    for name, index in (("NbMo_SS", 334), ("Mo_Elastic", 0)):
        frame = read_frame(name, index)
        periodic.append({**frame, "pbc": True})
    return periodic + [
        lifepo4(), acac(),
        cluster("W-Mo pair at 0.65 A (inside the bridging window [0.5, 0.8] A)", ["W", "Mo"],
                [[0.0, 0.0, 0.0], [0.39, 0.52, 0.0]]),
        cluster("Nb-W-Mo chain along z (edges exactly along +z and -z) and an O off the axis", ["Nb", "W", "Mo", "O"],
                [[0.0, 0.0, 0.0], [0.0, 0.0, 2.4], [0.0, 0.0, -2.6], [1.3, 0.4, 0.9]]),
        cluster("isolated Fe atom", ["Fe"], [[0.3, -0.2, 0.1]]),
        cluster("Nb-Mo dimer at 2.3 A", ["Nb", "Mo"], [[0.0, 0.0, 0.0], [1.2, -1.1, 1.6]]),
    ]


def evaluate(model: torch.nn.Module, frame: dict) -> dict:
    coord = torch.tensor(frame["positions"], dtype=torch.float64).reshape(1, -1, 3)
    atype = torch.tensor([[TYPE_MAP.index(s) for s in frame["symbols"]]])
    box = None if frame["cell"] is None else torch.tensor(frame["cell"], dtype=torch.float64).reshape(1, 9)
    out = model(coord, atype, box=box)
    return {"energy": out["energy"].detach().reshape(()), "atom_energy": out["atom_energy"].detach().reshape(-1),
            "forces": out["force"].detach().reshape(-1, 3), "virial": out["virial"].detach().reshape(3, 3)}


def block_outputs(model: torch.nn.Module, frame: dict, n_blocks: int) -> dict:
    """The node features entering the first block and leaving each block (deepmd's real-SH signs)."""
    records: dict[str, torch.Tensor] = {}
    descriptor = model.atomic_model.descriptor
    handles = [descriptor.blocks[0].register_forward_pre_hook(
        lambda _m, inputs: records.__setitem__("input", inputs[0].detach().clone()))]
    for index in range(n_blocks):
        def hook(_module, _inputs, output, index=index):
            records[str(index)] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        handles.append(descriptor.blocks[index].register_forward_hook(hook))
    try:
        evaluate(model, frame)
    finally:
        for handle in handles:
            handle.remove()
    return records


def build(name: str) -> tuple[dict, torch.nn.Module, ModelWrapper]:
    """deepmd-kit's float32 model with seeded random weights (saved), and a float64 model holding the same stored
    values (parameters and energy statistics; the fixed constants stay the float64 model's own, as deepmd-kit
    computes them in the model's precision)."""
    params = normalised(TYPE_MAP, {**BASE, **FAMILY[name]},
                        {"type": "dpa4_ener", "neuron": [0], "precision": "float32", "seed": 2})
    seed = SEED + 100 + sum(name.encode()) % 1000  # a seed per fixture that does not move when FAMILY changes
    torch.manual_seed(seed)
    model32 = get_model(params)
    wrapper = ModelWrapper(model32, model_params=params)
    randomise(model32, torch.Generator().manual_seed(seed))
    params64 = json.loads(json.dumps(params))
    params64["descriptor"]["precision"] = params64["fitting_net"]["precision"] = "float64"
    model64 = get_model(params64).to(torch.float64)
    copy_stored(model32, model64)
    return params, model64.eval(), wrapper


def main() -> int:
    import deepmd

    structures = frames()
    reference = {"deepmd_kit": deepmd.__version__, "torch": str(torch.__version__), "type_map": TYPE_MAP,
                 "frames": structures, "configs": {}}
    for name in (sys.argv[1:] or FAMILY):
        params, model, wrapper = build(name)
        torch.save({"model": wrapper.state_dict()}, OUT / f"dpa4_family_{name}.pt")
        outputs = [evaluate(model, frame) for frame in structures]
        reference["configs"][name] = {
            "options": FAMILY[name], "checkpoint": f"dpa4_family_{name}.pt",
            "energy": torch.stack([o["energy"] for o in outputs]),
            "forces": torch.cat([o["forces"] for o in outputs]),  # frames in order, len(symbols) rows each
            "virial": torch.stack([o["virial"] for o in outputs]), "atom_energy": outputs[0]["atom_energy"],
            "blocks": (block_outputs(model, structures[0], params["descriptor"]["n_blocks"])
                       if name in INTERMEDIATES else {})}
        print(name, [round(float(o["energy"]), 6) for o in outputs], flush=True)
    torch.save(reference, OUT / "dpa4_family_reference.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
