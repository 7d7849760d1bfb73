"""Prototype library and element substitution: the known crystals come out, duplicates go, the CLI writes files."""

from __future__ import annotations

import numpy as np
import pytest

from dpa4_flows.structures.generate import (PrototypeError, deduplicate, library, prototype_candidates, roles,
                                            substitute)

#: prototype -> (roles assigned as in the named example, reduced formula, atoms, space group number)
KNOWN = {
    "B2": ({"A": "Cs", "B": "Cl"}, "CsCl", 2, 221),
    "L1_0": ({"A": "Cu", "B": "Au"}, "CuAu", 2, 123),
    "L1_2": ({"A": "Cu", "B": "Au"}, "Cu3Au", 4, 221),
    "D0_3": ({"A": "Fe", "B": "Al"}, "AlFe3", 16, 225),
    "C15": ({"A": "Mg", "B": "Cu"}, "MgCu2", 24, 227),
    "rocksalt": ({"A": "Na", "X": "Cl"}, "NaCl", 8, 225),
    "perovskite": ({"A": "Sr", "B": "Ti", "X": "O"}, "SrTiO3", 5, 221),
    "spinel": ({"A": "Mg", "B": "Al", "X": "O"}, "MgAl2O4", 56, 227),
    "fluorite": ({"A": "Ca", "X": "F"}, "CaF2", 12, 225),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_prototypes_build_their_example_crystal(name):
    assignment, formula, n_atoms, spacegroup = KNOWN[name]
    assert set(roles(name)) == set(assignment)
    s = substitute(name, assignment)
    assert (s.composition.reduced_formula, len(s)) == (formula, n_atoms)
    assert s.get_space_group_info()[1] == spacegroup
    # Scaled so that the closest pair sits at its radius sum: no overlap, not blown up.
    from pymatgen.core import Element

    def r(el):
        e = Element(el)
        return float(e.metallic_radius if e.is_metal and e.metallic_radius else e.atomic_radius)

    centers, neighbors, _, d = s.get_neighbor_list(6.0)
    ratio = d / np.array([r(s[i].specie.symbol) + r(s[j].specie.symbol) for i, j in zip(centers, neighbors)])
    assert ratio.min() == pytest.approx(1.0, abs=1e-6)


def test_library_holds_the_promised_prototypes():
    assert set(library()) == set(KNOWN)


def test_substitution_deduplicates_within_compositions():
    both = prototype_candidates(["Mo", "W"], ["B2", "rocksalt"], dedupe=False)
    assert len(both) == 4  # B2 MoW and WMo, rocksalt MoW and WMo: each pair the same crystal
    kept = deduplicate(both)
    assert sorted(kept) == ["MoW-B2", "MoW-rocksalt"]
    l12 = prototype_candidates(["Mo", "W"], ["L1_2"])
    assert sorted(s.composition.reduced_formula for s in l12.values()) == ["Mo3W", "MoW3"]
    assert prototype_candidates(["Mo", "W"], ["perovskite", "B2"]).keys() == {"MoW-B2"}  # 3 roles, 2 elements
    with pytest.raises(PrototypeError, match="unknown prototype"):
        prototype_candidates(["Mo", "W"], ["A15"])
    with pytest.raises(PrototypeError, match="fits 1 element"):
        prototype_candidates(["Mo"], ["B2"])


def test_candidates_command_writes_readable_files(tmp_path, capsys):
    from dpa4_core.cli import main as dpa4
    from dpa4_flows.structures.files import read_candidate_files

    assert dpa4(["candidates", "--elements", "Mo", "Nb", "--prototypes", "B2", "L1_2", "--out",
                 str(tmp_path / "c")]) == 0
    assert "3 candidates from 2 prototypes" in capsys.readouterr().out
    found = read_candidate_files([tmp_path / "c"])
    assert sorted(found.structures) == ["Nb3Mo-L1_2", "NbMo-B2", "NbMo3-L1_2"] and not found.rejected
    assert dpa4(["candidates", "--elements", "Mo", "--prototypes", "B2", "--out", str(tmp_path / "d")]) == 2
