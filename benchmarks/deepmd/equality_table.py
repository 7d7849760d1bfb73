"""The equality table of dpa4's loader against deepmd-kit 3.2.0: config x structure, the largest relative error of
energy, forces and virial, from the committed fixtures (tests/fixtures/deepmd/; no deepmd-kit needed).

    PYTHONPATH=. python benchmarks/deepmd/equality_table.py            # from the repository root; ~1 min on 1 core

Each cell is ``E F V``: ``|dE| / |E|``, ``max |dF| / max(max |F|, 1 eV/A)`` and ``max |dV| / max(max |V|, 1 eV)``
(relative above 1 eV/A or 1 eV, absolute below: some forces are zero by symmetry); ``-`` where the structure has no
cell (dpa4 reports no virial there). dpa4 runs in float64 on its own neighbour list, frames and modules.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "deepmd"
COLUMNS = ["alloy", "alloy 2", "slab", "sheared", "LiFePO4", "acac", "cluster", "pair 0.65 A", "chain +-z",
           "isolated", "dimer", "short pairs"]
OPTIONS = ["ffn_so3_grid", "mini", "ffn_blocks", "edge_norm", "neo", "zbl"]
FAMILY = ["nano", "mini", "neo", "air", "plus"]


@dataclass
class Case:
    """One structure of one config: dpa4's input and deepmd-kit's numbers."""

    column: str
    atoms: Atoms
    energy: float
    forces: np.ndarray
    virial: np.ndarray | None


def column(source: str) -> str:
    keys = {"NbMo_SS": "alloy", "NbW_SS": "alloy 2", "W_Surface": "slab", "Mo_Elastic": "sheared",
            "lifepo4": "LiFePO4", "acac": "acac", "cluster": "cluster", "pair at 0.65": "pair 0.65 A",
            "along z": "chain +-z", "isolated": "isolated", "dimer at 2.3": "dimer"}
    if "dimer " in source and " A" in source and "2.3" not in source or "of atom 1" in source:
        return "short pairs"  # the zbl fixture's pairs at 0.65 / 0.42 / 0.7 A
    return next(value for key, value in keys.items() if key in source)


def _atoms(frame: dict, pbc: bool = True) -> Atoms:
    cell = frame.get("cell")
    return Atoms(frame["symbols"], positions=frame["positions"], cell=cell, pbc=pbc and cell is not None)


def _split(forces: torch.Tensor | list, frames: list[dict]) -> list[np.ndarray]:
    if isinstance(forces, list):
        return [f.numpy() if torch.is_tensor(f) else np.asarray(f) for f in forces]
    sizes = [len(frame["symbols"]) for frame in frames]
    return [part.numpy() for part in torch.split(forces, sizes)]


def _extra(name: str) -> list[Case]:
    extra = torch.load(FIXTURES / "dpa4_extra_frames_reference.pt", weights_only=True)
    if name not in extra["configs"]:
        return []
    ref, frames = extra["configs"][name], extra["frames"]
    return [Case(column(frame["source"]), _atoms(frame, pbc=False), float(ref["energy"][i]), forces, None)
            for i, (frame, forces) in enumerate(zip(frames, _split(ref["forces"], frames)))]


def cases() -> dict[str, tuple[str, list[Case]]]:
    """config -> (checkpoint file, its cases)."""
    table: dict[str, tuple[str, list[Case]]] = {}
    tiny = json.loads((FIXTURES / "dpa4_tiny_reference.json").read_text())["frames"]
    table["tiny"] = ("dpa4_tiny.pt", [
        Case(column(f["source"]), _atoms(f), f["deepmd"]["energy"], np.asarray(f["deepmd"]["forces"]),
             np.asarray(f["deepmd"]["virial"])) for f in tiny] + _extra("tiny"))
    options = torch.load(FIXTURES / "dpa4_options_reference.pt", weights_only=True)
    for name in OPTIONS:
        ref = options[name]
        frames = tiny + list(ref["extra_frames"])
        table[name] = (f"dpa4_{name}.pt", [
            Case(column(frame["source"]), _atoms(frame), float(ref["energy"][i]), ref["forces"][i].numpy(),
                 ref["virial"][i].numpy()) for i, frame in enumerate(frames)] + _extra(name))
    single = options["mini_float32"]["float64"]
    table["mini float32 file"] = ("dpa4_mini_float32.pt", [
        Case(column(f["source"]), _atoms(f), float(single["energy"][i]), single["forces"][i].numpy(),
             single["virial"][i].numpy()) for i, f in enumerate(tiny)])
    family = torch.load(FIXTURES / "dpa4_family_reference.pt", weights_only=True)
    for name in FAMILY:
        ref, frames = family["configs"][name], family["frames"]
        table[f"family {name}"] = (ref["checkpoint"], [
            Case(column(frame["source"]), _atoms(frame, frame["pbc"]), float(ref["energy"][i]), forces,
                 ref["virial"][i].numpy() if frame["pbc"] else None)
            for i, (frame, forces) in enumerate(zip(frames, _split(ref["forces"], frames)))])
    return table


def errors(model: torch.nn.Module, case: Case) -> tuple[float, float, float | None]:
    from dpa4_core.testing import predict

    out = predict(model, case.atoms)
    e = abs(float(out["energy"][0]) - case.energy) / abs(case.energy)
    f = float(np.abs(out["forces"] - case.forces).max()) / max(float(np.abs(case.forces).max()), 1.0)
    if case.virial is None:
        return e, f, None
    return e, f, float(np.abs(out["virial"][0] - case.virial).max()) / max(float(np.abs(case.virial).max()), 1.0)


def measure() -> dict[str, dict[str, tuple[float, float, float | None]]]:
    """config -> column -> the largest (E, F, V) errors over that column's structures."""
    from dpa4_core.io.checkpoint import load_checkpoint

    results: dict[str, dict[str, tuple[float, float, float | None]]] = {}
    for name, (checkpoint, config_cases) in cases().items():
        model = load_checkpoint(FIXTURES / checkpoint)
        row: dict[str, tuple[float, float, float | None]] = {}
        for case in config_cases:
            e, f, v = errors(model, case)
            if case.column in row:
                e0, f0, v0 = row[case.column]
                e, f = max(e, e0), max(f, f0)
                v = None if v is None and v0 is None else max(x for x in (v, v0) if x is not None)
            row[case.column] = (e, f, v)
        results[name] = row
    return results


def _cell(values: tuple[float, float, float | None] | None) -> str:
    if values is None:
        return ""
    return " ".join("-" if x is None else f"{x:.0e}" for x in values)


def render(results: dict) -> str:
    lines = ["| config | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |")
    worst = [max((v[k] for row in results.values() for v in row.values() if v[k] is not None), default=0.0)
             for k in range(3)]
    lines.append(f"\nlargest: E {worst[0]:.1e}, F {worst[1]:.1e}, V {worst[2]:.1e} "
                 f"({sum(len(row) for row in results.values())} config x structure cells)")
    return "\n".join(lines)


def main() -> int:
    torch.set_num_threads(1)
    print("PYTHONPATH=. python benchmarks/deepmd/equality_table.py\n")
    print(render(measure()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
