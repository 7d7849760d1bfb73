"""Write the Mo-Nb-Ta-W training data of ``examples/train_monbtaw_v2.yaml``: a split grouped by trajectory, and
the PBE homonuclear dimer curves as extra training frames.

    python examples/monbtaw_split.py runs/monbtaw_v2_data

Groups (from each record's ``notes``): an AIMD trajectory is one group (``Mo_AIMD/Md_110:300`` = the 300 K run at
110% volume), so no test frame's trajectory is in training; every elastic strain, solid-solution and surface frame is
its own group. Each file is split on its own (every subset is in the test split). Files: ``train.extxyz``, ``valid.extxyz``, ``test.extxyz`` (``config_type`` = subset/group) and
``dimers.extxyz`` (Nb2, Mo2, Ta2, W2 from ``matbench_discovery_refs/diatomics-dft.json.gz``, PBE, separations
from 0.85 x the well's position to 6 A; training only). Real data only: nothing is relabelled.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from dpa4_core.data.paths import vendored
from dpa4_core.model.bias import dimer_curve
from dpa4_core.train.dataset import FrameDataset, load_dataset, split_indices

ELEMENTS = ("Nb", "Mo", "Ta", "W")
FRACTIONS = (0.87, 0.04, 0.09)  # train, valid, test (by group)


def group_of(subset: str, record: dict) -> str:
    notes = record.get("notes") or {}
    if "AIMD" in subset and notes:
        (kind, value), = notes.items()  # e.g. {"Md_90": "300-12"}: run at 90% volume, 300 K, frame 12
        return f"{subset}/{kind}:{value.rsplit('-', 1)[0]}"
    return f"{subset}/{record['_id']}"


def split_file(ds: FrameDataset, seed: int) -> list[np.ndarray]:
    """Train/valid/test indices of one file, by group: one whole trajectory of an AIMD file (5 trajectories) is
    test and the rest train; the other files' groups are split with ``FRACTIONS``."""
    if len(ds.group_names) > 10:
        return split_indices(ds, FRACTIONS, seed=seed, by_group=True)
    held = np.random.default_rng(seed).permutation(len(ds.group_names))[0]
    test = np.flatnonzero(ds.group == held)
    return [np.flatnonzero(ds.group != held), np.zeros(0, dtype=np.int64), test]


def grouped_datasets(folder: Path) -> list[FrameDataset]:
    parts = []
    for path in sorted(folder.glob("*.json.gz")):
        subset = path.name.removesuffix(".json.gz")
        records = json.loads(gzip.open(path, "rt").read())
        ds = load_dataset(str(path))
        if len(ds) != len(records):
            raise RuntimeError(f"{path}: {len(records)} records but {len(ds)} frames read")
        names = [group_of(subset, r) for r in records]
        codes = {n: i for i, n in enumerate(dict.fromkeys(names))}
        ds.group = np.array([codes[n] for n in names])
        ds.group_names = list(codes)
        parts.append(ds)
    return parts


def dimer_atoms(path: Path, element: str) -> list[Atoms]:
    r, energy, forces = dimer_curve(path, element)
    keep = r >= 0.85 * r[np.argmin(energy)]
    images = []
    for distance, e, f in zip(r[keep], energy[keep], forces[keep]):
        # the curves' dimers lie along x with the first atom at the origin (their forces are along x)
        atoms = Atoms(f"{element}2", positions=[[0, 0, 0], [distance, 0, 0]], pbc=False)
        atoms.calc = SinglePointCalculator(atoms, energy=float(e), forces=f)
        atoms.info["config_type"] = f"dimer/{element}2"
        images.append(atoms)
    return images


def main(out: str) -> None:
    import ase.io

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = grouped_datasets(vendored("maml_MoNbTaW"))
    splits = [split_file(ds, seed) for seed, ds in enumerate(files)]
    for k, name in enumerate(("train", "valid", "test")):
        part = FrameDataset.concatenate([ds.subset(idx[k]) for ds, idx in zip(files, splits)])
        part.write_extxyz(out_dir / f"{name}.extxyz")
        print(f"{name}: {len(part)} frames")
    dimers = [a for el in ELEMENTS for a in dimer_atoms(vendored("matbench_discovery_refs", "diatomics-dft.json.gz"), el)]
    ase.io.write(out_dir / "dimers.extxyz", dimers, format="extxyz")
    print(f"dimers: {len(dimers)} frames")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/monbtaw_v2_data")
