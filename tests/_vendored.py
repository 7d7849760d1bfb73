"""Frames of the repository's vendored DFT data (``data/``, located by :mod:`dpa4_core.data.paths`) as plain Atoms.

A test helper, not package code: ``data/`` is part of a checkout, not of an installed package.
"""

from __future__ import annotations

import gzip
import io
import json

from ase import Atoms
from ase.io import read

from dpa4_core.data.paths import vendored


def read_vendored(*parts: str, index: int = 0) -> Atoms:
    """Frame ``index`` of a vendored data file as plain ASE ``Atoms`` (see ``data/README.md``).

    ``.json.gz`` files are lists of records with a pymatgen ``structure`` (maml, mlearn); ``.xyz.gz`` files are
    extended XYZ (botnet molecules, read without pbc).
    """
    path = vendored(*parts)
    if path.name.endswith(".json.gz"):
        from pymatgen.core import Structure
        from pymatgen.io.ase import AseAtomsAdaptor

        with gzip.open(path, "rt") as stream:
            records = json.load(stream)
        return Atoms(AseAtomsAdaptor.get_atoms(Structure.from_dict(records[index]["structure"])))
    # Cut the frame out of the text ourselves: ase's extxyz reader first seeks through the whole gzip file.
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as stream:
        for _ in range(index + 1):
            count = int(stream.readline())
            lines = [stream.readline() for _ in range(count + 1)]
    atoms = read(io.StringIO(f"{count}\n" + "".join(lines)), format="extxyz")
    atoms.calc = None
    return atoms
