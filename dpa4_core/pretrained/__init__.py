"""Pretrained DPA4 checkpoints shipped with the package (see ``README.md`` in this folder for how each was trained)."""

from __future__ import annotations

from pathlib import Path

STARTER = Path(__file__).resolve().with_name("dpa4-starter.pt")


def starter_checkpoint() -> Path:
    """Path of the starter model (tiny DPA4 trained on the vendored Mo-Nb-Ta-W DFT data).

    Raises:
        FileNotFoundError: the file is not part of this installation.
    """
    if not STARTER.is_file():
        raise FileNotFoundError(f"starter checkpoint {STARTER} is missing from this dpa4 installation")
    return STARTER
