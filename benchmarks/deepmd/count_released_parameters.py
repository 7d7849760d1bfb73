"""Which options the released DPA4-OMat24 checkpoints use: count deepmd-kit 3.2.0's parameters for candidate configs.

Runs in the deepmd-kit side environment (tests/fixtures/deepmd/README.md); builds each model with random weights and
compares its parameter count with the reported one (118 types, float32). Nothing is downloaded.

    OMP_NUM_THREADS=1 .venv-dp/bin/python benchmarks/deepmd/count_released_parameters.py            # the template
    OMP_NUM_THREADS=1 .venv-dp/bin/python benchmarks/deepmd/count_released_parameters.py '{"edge_norm": false}'

The template is the released family as benchmarks/deepmd/README.md records it ("The released checkpoints' options");
the optional JSON argument overrides descriptor options for all five.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DP_TRITON_INFER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deepmd.pt.model.model import get_model  # noqa: E402
from make_fixtures import normalised  # noqa: E402

ELEMENTS = ("H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr "
            "Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W "
            "Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt "
            "Ds Rg Cn Nh Fl Mc Lv Ts Og").split()
# Shared by the five (v20260805: edge_norm false, as in the published DPA4-Mini-OMat24-v20260805.json).
TEMPLATE = {"type": "dpa4", "sel": 181, "rcut": 6.0, "n_radial": 16, "use_env_seed": True, "mmax": 1, "edge_norm": False,
            "radial_so2_mode": "degree_channel", "focus_dim": 0, "n_atten_head": 1, "message_node_so3": True,
            "ffn_neurons": 0, "ffn_so3_grid": True, "grid_mlp": False, "grid_branch": [0, 0, 1], "ffn_blocks": 1,
            "so3_readout": "mlp", "precision": "float32", "seed": 1}
# name: (channels, lmax, n_blocks, mixing_layers, n_focus, radial_so2_rank), parameters on the v20260805 model card;
# Nano's radial_so2_mode is "none" (rank 0 here), as in a later deepmd-kit's preset table
VARIANTS = {
    "Nano": ((32, 1, 2, 3, 1, 0), 480_650), "Mini": ((32, 2, 2, 3, 1, 1), 655_504),
    "Neo": ((32, 3, 2, 3, 2, 1), 1_125_372), "Air": ((64, 3, 3, 4, 1, 1), 5_148_611),
    "Plus": ((64, 4, 4, 4, 1, 2), 8_849_376)}


def count(descriptor: dict) -> int:
    params = normalised(ELEMENTS, descriptor, {"type": "dpa4_ener", "neuron": [0], "precision": "float32", "seed": 2})
    return sum(p.numel() for p in get_model(params).parameters())


def main() -> int:
    overrides = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(f"overrides: {overrides}")
    for name, ((channels, lmax, blocks, layers, focus, rank), reported) in VARIANTS.items():
        sizes = {"channels": channels, "lmax": lmax, "n_blocks": blocks, "mixing_layers": layers, "n_focus": focus,
                 **({"radial_so2_rank": rank} if rank else {"radial_so2_mode": "none"})}
        counted = count({**TEMPLATE, **sizes, **overrides})
        print(f"{name:5s} counted {counted:>9,d} reported {reported:>9,d} difference {counted - reported:+,d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
