"""Candidates from files, folders and globs: every candidate read or rejected with its reason, none lost."""

from __future__ import annotations

import json

import pytest
from pymatgen.core import Lattice, Structure

from dpa4_flows.structures.checks import rejection_reason
from dpa4_flows.structures.files import CandidateFileError, read_candidate_files

BCC = [[0, 0, 0], [0.5, 0.5, 0.5]]


def _mow() -> Structure:
    return Structure(Lattice.cubic(3.16), ["Mo", "W"], BCC)


def test_every_format_and_broken_files_each_give_one_outcome(tmp_path):
    from ase.db import connect
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    folder = tmp_path / "cands"
    (folder / "sub").mkdir(parents=True)
    _mow().to(filename=str(folder / "MoW.cif"))
    _mow().to(filename=str(folder / "sub" / "POSCAR"), fmt="poscar")
    atoms = [AseAtomsAdaptor.get_atoms(_mow() * (1, 1, k)) for k in (1, 2)]
    atoms[0].info["e_above_hull"] = 0.012
    write(folder / "two.extxyz", atoms, format="extxyz")
    with connect(str(folder / "rows.db")) as db:
        db.write(atoms[1], name="MoW-db", e_above_hull=0.0)
    labelled = _mow()
    (folder / "entries.json").write_text(json.dumps(
        [{"structure": labelled.as_dict(), "e_above_hull": 0.05}, {"not": "a structure"}]))
    (folder / "broken.cif").write_text("data_x\n_cell_length_a 3\nnonsense")
    (folder / "empty.vasp").write_text("")
    found = read_candidate_files([folder])
    assert sorted(found.structures) == ["MoW", "MoW-db", "entries-0", "sub", "two-0", "two-1"]
    assert sorted(found.rejected) == ["broken", "empty", "entries-1"]
    assert all(r.startswith("unreadable") for r in found.rejected.values())
    assert "entries.json" in found.rejected["entries-1"]
    assert found.labels == {"two-0": {"e_above_hull": 0.012}, "MoW-db": {"e_above_hull": 0.0},
                            "entries-0": {"e_above_hull": 0.05}}
    assert len(found.structures["two-1"]) == 4
    # A glob and a plain file give the same candidates; duplicate stems get distinct ids.
    again = read_candidate_files([str(folder / "*.cif"), folder / "MoW.cif", str(folder / "sub" / "POSCAR")])
    assert sorted(again.structures) == ["MoW", "sub"] and sorted(again.rejected) == ["broken"]


def test_names_that_match_nothing_are_errors(tmp_path):
    with pytest.raises(CandidateFileError, match="does not exist"):
        read_candidate_files([tmp_path / "missing.cif"])
    with pytest.raises(CandidateFileError, match="no file matches"):
        read_candidate_files([str(tmp_path / "*.cif")])
    with pytest.raises(CandidateFileError, match="has no candidate files"):
        read_candidate_files([tmp_path])


def test_rejection_reasons():
    assert rejection_reason(_mow(), ["Mo", "W"]) is None
    assert "trained set: W" in rejection_reason(_mow(), ["Mo", "Nb"])
    close = Structure(Lattice.cubic(3.16), ["Mo", "W", "Mo"], [*BCC, [0.03, 0, 0]])  # 0.09 A from the corner
    assert rejection_reason(close).startswith("overlapping atoms: two atoms 0.09 A apart")
    same = Structure(Lattice.cubic(3.16), ["Mo", "W"], [[0, 0, 0], [1, 0, 0]])
    assert rejection_reason(same) == "overlapping atoms: two atoms on the same site"
    assert "partial" in rejection_reason(Structure(Lattice.cubic(3.16), [{"Mo": 0.5, "W": 0.5}], [[0, 0, 0]]))
