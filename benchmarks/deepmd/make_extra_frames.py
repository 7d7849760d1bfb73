"""deepmd-kit's results for the committed W/Nb/Mo fixtures (dpa4_tiny.pt, dpa4_<option>.pt) on structures without a
cell: a displaced 9-atom bcc cluster, a pair inside the bridging window, a chain along +-z, an isolated atom and a
dimer (tests/fixtures/deepmd/dpa4_extra_frames_reference.pt).

Runs in the deepmd-kit side environment (tests/fixtures/deepmd/README.md). Each checkpoint is loaded the way
deepmd-kit loads one (its stored ``model_params`` -> ``get_model``, then the stored state dict), so the committed
files are read, never rewritten:

    OMP_NUM_THREADS=1 .venv-dp/bin/python benchmarks/deepmd/make_extra_frames.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("DP_TRITON_INFER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from deepmd.pt.model.model import get_model  # noqa: E402
from deepmd.pt.train.wrapper import ModelWrapper  # noqa: E402
from make_family_fixtures import cluster  # noqa: E402
from make_fixtures import OUT, SEED  # noqa: E402

CHECKPOINTS = ["tiny", "ffn_so3_grid", "mini", "ffn_blocks", "edge_norm", "neo", "zbl"]


def frames() -> list[dict]:
    generator = torch.Generator().manual_seed(SEED + 7)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float64)
    sites = torch.cat([torch.zeros(1, 3, dtype=torch.float64), 1.6 * corners])  # bcc, a = 3.2 A
    sites = sites + 0.15 * torch.randn(sites.shape, generator=generator, dtype=torch.float64)
    symbols = ["W", "Mo", "Nb", "Mo", "W", "Nb", "Nb", "Mo", "W"]
    return [
        cluster("9-atom bcc cluster of W/Mo/Nb (a = 3.2 A, displaced 0.15 A)", symbols, sites.tolist()),
        cluster("W-Mo pair at 0.65 A (inside the bridging window [0.5, 0.8] A)", ["W", "Mo"],
                [[0.0, 0.0, 0.0], [0.39, 0.52, 0.0]]),
        cluster("Nb-W-Mo chain along z (edges exactly along +z and -z) and a W off the axis", ["Nb", "W", "Mo", "W"],
                [[0.0, 0.0, 0.0], [0.0, 0.0, 2.4], [0.0, 0.0, -2.6], [1.3, 0.4, 0.9]]),
        cluster("isolated W atom", ["W"], [[0.3, -0.2, 0.1]]),
        cluster("Nb-Mo dimer at 2.3 A", ["Nb", "Mo"], [[0.0, 0.0, 0.0], [1.2, -1.1, 1.6]]),
    ]


def load(path: Path) -> tuple[torch.nn.Module, list[str]]:
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    params = state["_extra_state"]["model_params"]
    model = get_model(params).to(torch.float64)
    ModelWrapper(model, model_params=params).load_state_dict(state)
    return model.eval(), params["type_map"]


def evaluate(model: torch.nn.Module, type_map: list[str], frame: dict) -> dict:
    coord = torch.tensor(frame["positions"], dtype=torch.float64).reshape(1, -1, 3)
    atype = torch.tensor([[type_map.index(s) for s in frame["symbols"]]])
    out = model(coord, atype, box=None)
    return {"energy": out["energy"].detach().reshape(()), "forces": out["force"].detach().reshape(-1, 3)}


def main() -> int:
    structures = frames()
    reference = {"frames": structures, "configs": {}}
    for name in CHECKPOINTS:
        model, type_map = load(OUT / f"dpa4_{name}.pt")
        outputs = [evaluate(model, type_map, frame) for frame in structures]
        reference["configs"][name] = {"checkpoint": f"dpa4_{name}.pt",
                                      "energy": torch.stack([o["energy"] for o in outputs]),
                                      "forces": torch.cat([o["forces"] for o in outputs])}
        print(name, [round(float(o["energy"]), 6) for o in outputs], flush=True)
    torch.save(reference, OUT / "dpa4_extra_frames_reference.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
