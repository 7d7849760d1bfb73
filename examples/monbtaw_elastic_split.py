"""Split the v2 training file into its ``*_Elastic`` frames and the rest, so that a recipe can weight the elastic
strain frames up (a per-file ``weight`` in the data config; see ``examples/finetune_monbtaw_elastic.yaml``).

    python examples/monbtaw_elastic_split.py runs/monbtaw_v2_data

Writes ``train_elastic.extxyz`` and ``train_other.extxyz`` next to ``train.extxyz``; every frame is kept as it was
(same labels, same ``config_type``): the two files together are exactly the training split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ase.io


def main(folder: str) -> None:
    folder = Path(folder)
    frames = ase.io.read(folder / "train.extxyz", index=":")
    elastic = [a for a in frames if "_Elastic/" in str(a.info.get("config_type", ""))]
    other = [a for a in frames if "_Elastic/" not in str(a.info.get("config_type", ""))]
    ase.io.write(folder / "train_elastic.extxyz", elastic, format="extxyz")
    ase.io.write(folder / "train_other.extxyz", other, format="extxyz")
    print(f"{len(elastic)} elastic + {len(other)} other = {len(frames)} training frames")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/monbtaw_v2_data")
