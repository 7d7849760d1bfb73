"""Write the deepmd-kit DPA4 test fixtures under tests/fixtures/deepmd/ (run in the side environment, not ours).

deepmd-kit is a peer, never a dependency: this script runs in a separate venv that has it (see
tests/fixtures/deepmd/README.md for the exact setup) and writes *outputs* only: a small random-weight checkpoint
saved with the keys ``dp --pt train`` writes, and deepmd-kit's energy, forces and virial for a few vendored
Mo-Nb-Ta-W frames in float64. The tests read these files with dpa4 alone.

    .venv-dp/bin/python benchmarks/deepmd/make_fixtures.py            # from the repository root

Every parameter gets seeded noise (several deepmd modules start at zero, which would hide their mapping) and the
per-type energy offsets (``out_bias``, ``bias_atom_e``) and ``out_std`` are made nonzero / away from 1.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DP_TRITON_INFER", "0")  # deepmd's pure-PyTorch kernels, exact in float64

import torch  # noqa: E402
from deepmd.pt.model.model import get_model  # noqa: E402
from deepmd.pt.train.wrapper import ModelWrapper  # noqa: E402
from deepmd.utils.argcheck import normalize  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "deepmd"
SEED = 20261207
TYPE_MAP = ["W", "Nb", "Mo"]  # deliberately not in atomic-number order
# (file, frame index): two bcc alloys with displaced atoms, a slab, a sheared elemental cell (off-diagonal virial).
FRAMES = [("NbMo_SS", 334), ("NbW_SS", 346), ("W_Surface", 1), ("Mo_Elastic", 0)]

# The smallest deepmd-kit DPA4 that is closest to dpa4's own model: one block, tiny widths, no bridging,
# edge_norm off (the released Mini setting), every other option at deepmd-kit 3.2.0's default.
DESCRIPTOR = {"type": "dpa4", "rcut": 5.0, "sel": 64, "channels": 8, "n_radial": 8, "lmax": 2, "mmax": 1,
              "kmax": 1, "n_blocks": 1, "mixing_layers": 2, "edge_norm": False, "precision": "float64",
              "seed": 1}
FITTING = {"type": "dpa4_ener", "precision": "float64", "seed": 2}


def normalised(type_map: list[str], descriptor: dict, fitting: dict) -> dict:
    """deepmd-kit's normalised model section, as ``dp --pt train`` stores it (argcheck defaults filled in)."""
    raw = {"model": {"type": "dpa4", "type_map": type_map, "descriptor": descriptor, "fitting_net": fitting},
           "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-5},
           "loss": {"type": "ener"}, "training": {"training_data": {"systems": ["unused"]}, "numb_steps": 1}}
    return normalize(raw)["model"]


def model_params() -> dict:
    return normalised(TYPE_MAP, DESCRIPTOR, FITTING)


def copy_stored(model32: torch.nn.Module, model64: torch.nn.Module) -> None:
    """The float32 model's stored values (parameters, energy statistics) cast exactly into the float64 model; the
    fixed constants (norm balance weights, index maps) stay the float64 model's own, as deepmd-kit computes them in
    the model's precision."""
    stored = dict(model32.named_parameters())
    stored.update({k: v for k, v in model32.named_buffers() if k.endswith(("out_bias", "bias_atom_e", "out_std"))})
    with torch.no_grad():
        for name, tensor in list(model64.named_parameters()) + list(model64.named_buffers()):
            if name in stored:
                tensor.copy_(stored[name].to(torch.float64))


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Seeded noise on every parameter (zero-initialised modules included) and nonzero energy offsets.

    Buffers other than the energy statistics are fixed constants of the maths (sign tables, index maps, norm
    balance weights) and stay untouched.
    """
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
        for name, buffer in model.named_buffers():
            if name.endswith(("out_bias", "bias_atom_e")):
                buffer.copy_(torch.randn(buffer.shape, generator=generator, dtype=buffer.dtype) * 3.0 - 5.0)
            elif name.endswith("out_std"):
                buffer.copy_(1.5 + torch.rand(buffer.shape, generator=generator, dtype=buffer.dtype))


def read_frame(name: str, index: int) -> dict:
    """A vendored maml frame (pymatgen structure dict) as symbols, Cartesian positions and cell rows."""
    with gzip.open(ROOT / "data" / "maml_MoNbTaW" / f"{name}.json.gz", "rt") as stream:
        structure = json.load(stream)[index]["structure"]
    return {"source": f"data/maml_MoNbTaW/{name}.json.gz[{index}]",
            "symbols": [site["species"][0]["element"] for site in structure["sites"]],
            "positions": [site["xyz"] for site in structure["sites"]],
            "cell": structure["lattice"]["matrix"]}


def evaluate(model: torch.nn.Module, frame: dict) -> dict:
    coord = torch.tensor(frame["positions"], dtype=torch.float64).reshape(1, -1, 3)
    atype = torch.tensor([[TYPE_MAP.index(s) for s in frame["symbols"]]])
    box = torch.tensor(frame["cell"], dtype=torch.float64).reshape(1, 9)
    out = {key: value.detach() for key, value in model(coord, atype, box=box).items()}
    return {"energy": float(out["energy"].reshape(())), "atom_energy": out["atom_energy"].reshape(-1).tolist(),
            "forces": out["force"].reshape(-1, 3).tolist(), "virial": out["virial"].reshape(3, 3).tolist()}


def write_multitask(params: dict) -> None:
    """A two-head file as the multi-task trainer writes it (weights under model.<head>., configs in model_dict),
    in float32 with C = 4 and lmax = 1 to stay small; only the loader's head selection reads it."""
    heads = {}
    for index, name in enumerate(("Alloy", "Other")):
        head_params = json.loads(json.dumps(params))
        head_params["descriptor"].update(channels=4, lmax=1)
        head_params["descriptor"]["precision"] = head_params["fitting_net"]["precision"] = "float32"
        head_params["descriptor"]["seed"] = 10 + index
        head_params["model_branch_alias"] = ["MoNbW"] if name == "Alloy" else []
        heads[name] = head_params
    models = {name: get_model(head) for name, head in heads.items()}
    wrapper = ModelWrapper(models, model_params={"model_dict": heads})
    torch.save({"model": wrapper.state_dict()}, OUT / "dpa4_tiny_multitask.pt")


def edge_vectors(generator: torch.Generator) -> torch.Tensor:
    """Random directions and lengths plus the poles (+-z exactly, and a hair off them) and the axes."""
    special = torch.tensor([[0.0, 0.0, 2.1], [0.0, 0.0, -2.7], [1e-9, 0.0, 3.0], [0.0, -1e-9, -3.0],
                            [2.5, 0.0, 0.0], [0.0, -2.2, 0.0], [1.0, 1.0, -1e-3]], dtype=torch.float64)
    random = torch.randn(13, 3, generator=generator, dtype=torch.float64)
    random = random / random.norm(dim=1, keepdim=True) * (0.6 + 4.2 * torch.rand(13, 1, generator=generator,
                                                                                 dtype=torch.float64))
    return torch.cat([special, random])


def components(model: torch.nn.Module, frames: list[dict]) -> dict:
    """deepmd-kit's own values of the components dpa4 maps one by one: edge frames, Wigner-D blocks l = 0..4, radial
    basis and envelopes of the fixture's descriptor, and the per-type energy offset measured through its forward
    pass with the fitting net's output layer zeroed (so each atom energy is the offset alone)."""
    from deepmd.pt.model.descriptor.sezm_nn.wignerd import WignerDCalculator, build_edge_quaternion

    descriptor = model.atomic_model.descriptor
    vectors = edge_vectors(torch.Generator().manual_seed(SEED + 1))
    quaternion = build_edge_quaternion(vectors)
    wigner, _ = WignerDCalculator(4, dtype=torch.float64)(quaternion)
    distances = torch.linspace(0.0, 5.5, 23, dtype=torch.float64)[:, None]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in zeroed.named_parameters():
            if "fitting_net" in name and "output_layer" in name:
                parameter.zero_()
    offsets: dict[str, float] = {}
    for frame in frames:
        for symbol, energy in zip(frame["symbols"], evaluate(zeroed, frame)["atom_energy"]):
            offsets[symbol] = energy
    blocks = [wigner[:, l * l:(l + 1) ** 2, l * l:(l + 1) ** 2].detach().clone() for l in range(5)]  # noqa: E741
    return {"edge_vectors": vectors, "edge_quaternion": quaternion.detach(), "wigner_blocks": blocks, "distances": distances.reshape(-1),
            "radial_basis": descriptor.radial_basis(distances).detach(),
            "edge_envelope": descriptor.edge_envelope(distances).reshape(-1).detach(),
            "energy_offset_by_symbol": offsets}


# deepmd-kit modules whose outputs are recorded on the first frame, in the order of the forward pass.
STAGES = ["descriptor.type_embedding", "descriptor.env_seed_embedding", "descriptor.gie",
          "descriptor.blocks.0.so2_conv", "descriptor.blocks.0.post_so2_norm", "descriptor.blocks.0.pre_ffn_norms.0",
          "descriptor.blocks.0.ffns.0", "descriptor.blocks.0", "descriptor.output_ffn", "fitting_net"]


def intermediates(model: torch.nn.Module, frame: dict) -> dict:
    """Per-stage outputs of deepmd-kit's forward pass on one frame (node features in deepmd's real-SH signs), so a
    mismatch in dpa4's mapped model points at its module."""
    records: dict[str, list] = {}
    handles = []
    for stage in STAGES:
        module = model.atomic_model.get_submodule(stage)

        def hook(_module, _inputs, output, stage=stage):
            tensor = output[0] if isinstance(output, tuple) else output
            tensor = tensor["energy"] if isinstance(tensor, dict) else tensor  # the fitting net's atom energies
            records[stage] = tensor.detach().clone()
        handles.append(module.register_forward_hook(hook))

    def block_input(_module, inputs):  # the initial node features: FiLM-ed l = 0 and the l >= 1 embedding
        records["descriptor.blocks.0:input"] = inputs[0].detach().clone()
    handles.append(model.atomic_model.descriptor.blocks[0].register_forward_pre_hook(block_input))
    try:
        evaluate(model, frame)
    finally:
        for handle in handles:
            handle.remove()
    return {"frame": frame["source"], "stages": records}


# The released checkpoints' options, one fixture each (on top of DESCRIPTOR); "mini" combines the published Mini
# config's (mixing_layers 3, message_node_so3, ffn_so3_grid, grid_branch [0, 0, 1], so3_readout "mlp") and holds
# the only message_node_so3 and so3_readout fixture; then ffn_blocks 2, edge_norm, ZBL bridging, and "neo": the
# Mini options with Neo's 2 foci (the only n_focus fixture; it runs every n_focus path, the message-node grid too).
# grid_branch [0, 0, 2] in "ffn_so3_grid" makes the branch router matter (with one branch its softmax is 1).
# ffn_neurons 8 (the FFN widths; deepmd's default rounds up to 32) keeps the files small.
OPTIONS = {
    "ffn_so3_grid": {"ffn_so3_grid": True, "grid_branch": [0, 0, 2]},
    "mini": {"mixing_layers": 3, "message_node_so3": True, "ffn_so3_grid": True, "grid_branch": [0, 0, 1],
             "so3_readout": "mlp"},
    "ffn_blocks": {"ffn_blocks": 2},
    "edge_norm": {"edge_norm": True},
    "neo": {"mixing_layers": 3, "message_node_so3": True, "ffn_so3_grid": True, "grid_branch": [0, 0, 1],
            "so3_readout": "mlp", "n_focus": 2},  # Neo's 2 foci on the Mini options (message_node_so3 per focus)
    "zbl": {},  # model level: bridging_method "zbl" (ZBL_MODEL), on extra frames with short pairs
}
ZBL_MODEL = {"bridging_method": "zbl", "bridging_r_inner": 0.5, "bridging_r_outer": 0.8}
# Modules whose inputs and outputs are recorded (first frame) for module-level checks, per option fixture.
OPTION_STAGES = {"mini": ["descriptor.output_ffn"], "ffn_so3_grid": ["descriptor.blocks.0.ffns.0"]}


def record_modules(model: torch.nn.Module, frame: dict, stages: list[str]) -> dict:
    """Each stage's first input and output tensor on ``frame`` (deepmd's real-SH signs)."""
    records: dict[str, torch.Tensor] = {}
    handles = []
    for stage in stages:
        module = model.atomic_model.get_submodule(stage)

        def hook(_module, inputs, output, stage=stage):
            records[stage + ":input"] = inputs[0].detach().clone()
            records[stage] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        handles.append(module.register_forward_hook(hook))
    try:
        evaluate(model, frame)
    finally:
        for handle in handles:
            handle.remove()
    return records


def short_pair_frames(frames: list[dict]) -> list[dict]:
    """Frames with pairs in and below the bridging window [0.5, 0.8] A: a W-Mo dimer at 0.65 A and a Nb-Nb pair
    at 0.42 A in a 10 A box, and the first alloy frame with its atom 0 moved to 0.7 A of atom 1."""
    box = [[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]]
    dimers = [{"source": f"dimer {a}-{b} {d} A", "symbols": [a, b], "cell": box,
               "positions": [[5.0, 5.0, 5.0], [5.0 + 0.6 * d, 5.0 + 0.8 * d, 5.0]]}
              for a, b, d in (("W", "Mo", 0.65), ("Nb", "Nb", 0.42))]
    alloy = json.loads(json.dumps(frames[0]))
    first, second = torch.tensor(alloy["positions"][0]), torch.tensor(alloy["positions"][1])
    alloy["positions"][0] = (second + 0.7 * (first - second) / (first - second).norm()).tolist()
    alloy["source"] += " with atom 0 at 0.7 A of atom 1"
    return dimers + [{key: alloy[key] for key in ("source", "symbols", "positions", "cell")}]


def write_option_fixtures(frames: list[dict]) -> dict:
    """One random-weight checkpoint per entry of OPTIONS (``dpa4_<name>.pt``) and deepmd-kit's results on the
    frames plus its module inputs/outputs on the first frame (``dpa4_options_reference.pt``)."""
    results = {}
    for name, options in OPTIONS.items():
        index = sum(name.encode()) % 1000  # a seed per fixture that does not move when OPTIONS changes
        torch.manual_seed(SEED + 10 + index)
        saved = dict(DESCRIPTOR)
        DESCRIPTOR.update(options, ffn_neurons=8)
        try:
            params = model_params()
        finally:
            DESCRIPTOR.clear()
            DESCRIPTOR.update(saved)
        frames_here = frames
        if name == "zbl":
            params.update(ZBL_MODEL)
            frames_here = frames + short_pair_frames(frames)
        model = get_model(params).to(torch.float64)
        wrapper = ModelWrapper(model, model_params=params)
        randomise(model, torch.Generator().manual_seed(SEED + 10 + index))
        model.eval()
        torch.save({"model": wrapper.state_dict()}, OUT / f"dpa4_{name}.pt")
        outputs = [evaluate(model, frame) for frame in frames_here]
        results[name] = {
            "options": options, "checkpoint": f"dpa4_{name}.pt", "extra_frames": frames_here[len(frames):],
            "energy": torch.tensor([o["energy"] for o in outputs], dtype=torch.float64),
            "forces": [torch.tensor(o["forces"], dtype=torch.float64) for o in outputs],
            "virial": torch.stack([torch.tensor(o["virial"], dtype=torch.float64) for o in outputs]),
            "atom_energy": torch.tensor(outputs[0]["atom_energy"], dtype=torch.float64),
            "modules": record_modules(model, frames[0], OPTION_STAGES.get(name, []))}
    return results


def write_float32_fixture(frames: list[dict]) -> dict:
    """The Mini options in float32, as the released files are stored (``dpa4_mini_float32.pt``), and deepmd-kit's
    results on the frames twice: run in float32, and with the same float32 weights in a float64 model (the exact
    values of the stored function, which dpa4 in float64 must reproduce)."""
    torch.manual_seed(SEED + 30)
    saved = dict(DESCRIPTOR)
    DESCRIPTOR.update(OPTIONS["mini"], ffn_neurons=8)
    try:
        params = model_params()
    finally:
        DESCRIPTOR.clear()
        DESCRIPTOR.update(saved)
    params32 = json.loads(json.dumps(params))
    params32["descriptor"]["precision"] = params32["fitting_net"]["precision"] = "float32"
    model32 = get_model(params32)
    wrapper = ModelWrapper(model32, model_params=params32)
    randomise(model32, torch.Generator().manual_seed(SEED + 30))
    model32.eval()
    torch.save({"model": wrapper.state_dict()}, OUT / "dpa4_mini_float32.pt")
    model64 = get_model(params).to(torch.float64)
    copy_stored(model32, model64)
    model64.eval()
    results = {}
    for name, model in (("float32", model32), ("float64", model64)):
        outputs = [evaluate(model, frame) for frame in frames]
        results[name] = {"energy": torch.tensor([o["energy"] for o in outputs], dtype=torch.float64),
                         "forces": [torch.tensor(o["forces"], dtype=torch.float64) for o in outputs],
                         "virial": torch.stack([torch.tensor(o["virial"], dtype=torch.float64) for o in outputs])}
    return results


def main() -> int:
    torch.manual_seed(SEED)
    params = model_params()
    model = get_model(params).to(torch.float64)
    wrapper = ModelWrapper(model, model_params=params)
    randomise(model, torch.Generator().manual_seed(SEED))
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    # The trainer's layout: {"model": wrapper.state_dict()} with _extra_state = {model_params, train_infos}.
    torch.save({"model": wrapper.state_dict()}, OUT / "dpa4_tiny.pt")
    write_multitask(params)
    frames = [read_frame(name, index) for name, index in FRAMES]
    for frame in frames:
        frame["deepmd"] = evaluate(model, frame)
    import deepmd

    reference = {"checkpoint": "dpa4_tiny.pt", "deepmd_kit": deepmd.__version__, "torch": torch.__version__,
                 "dtype": "float64", "type_map": TYPE_MAP, "frames": frames}
    (OUT / "dpa4_tiny_reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    values = components(model, frames)
    values["intermediates"] = intermediates(model, frames[0])
    torch.save(values, OUT / "dpa4_tiny_components.pt")  # float64 tensors: a third of the JSON size
    # the option fixtures' frames are dpa4_tiny_reference.json's, in its order
    options = write_option_fixtures(frames)
    options["mini_float32"] = write_float32_fixture(frames)
    torch.save(options, OUT / "dpa4_options_reference.pt")
    print(f"wrote {OUT}: dpa4_tiny.pt, dpa4_tiny_multitask.pt, dpa4_tiny_reference.json ({len(frames)} frames), "
          "dpa4_tiny_components.pt, dpa4_<option>.pt, dpa4_options_reference.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
