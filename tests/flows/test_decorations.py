"""Ordered decorations of bcc and fcc up to N sites (issue 15): counts against Hart and Forcade (2008) and against
a brute force that decorates every supercell in every way and deduplicates with pymatgen's StructureMatcher."""

from __future__ import annotations

from collections import Counter

import pytest

from dpa4_flows.structures.decorations import (_rotations, decorations, distinct_supercells, hermite_forms,
                                               parent_lattice)


def test_superlattice_counts_of_cubic_lattices():
    # Hart and Forcade, Phys. Rev. B 77, 224115 (2008): superlattices of fcc/bcc of index 1..8 (and the number of
    # Hermite normal forms, sigma(n) summed over divisors: 1, 7, 13, 35, 31, 91, 57, 155).
    assert [len(hermite_forms(n)) for n in range(1, 9)] == [1, 7, 13, 35, 31, 91, 57, 155]
    for parent in ("bcc", "fcc"):
        rotations = _rotations(parent_lattice(parent))
        assert len(rotations) == 48
        assert [len(distinct_supercells(n, rotations)) for n in range(1, 9)] == [1, 2, 3, 7, 5, 10, 7, 20]


def _label_exchange_classes(found: dict) -> int:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher, classes = StructureMatcher(), []
    for s in found.values():
        swapped = s.copy()
        swapped.replace_species({"Mo": "W", "W": "Mo"})
        if not any(matcher.fit(c, s) or matcher.fit(c, swapped) for c in classes):
            classes.append(s)
    return len(classes)


@pytest.mark.parametrize("parent", ["bcc", "fcc"])
def test_binary_decorations_up_to_4_sites_match_the_published_counts(parent):
    found = decorations(parent, ["W", "Mo"], 4)
    per_size = Counter(len(s) for s in found.values())
    assert per_size == {2: 2, 3: 6, 4: 19}
    # Hart and Forcade count A and B exchanged as one structure: 2, 3 and 12 binary structures of 2, 3, 4 sites.
    assert [_label_exchange_classes({k: s for k, s in found.items() if len(s) == n}) for n in (2, 3, 4)] == [2, 3, 12]


@pytest.mark.timeout(120)
def test_bcc_binary_up_to_4_sites_equals_the_brute_force():
    import itertools

    import numpy as np
    from pymatgen.core import Lattice, Structure

    from dpa4_flows.structures.decorations import _sites
    from dpa4_flows.structures.generate import deduplicate

    found = decorations("bcc", ["Mo", "W"], 4)
    lattice = parent_lattice("bcc", 3.2)
    every = {}
    for n in range(2, 5):
        for h, labels in itertools.product(hermite_forms(n), itertools.product(["Mo", "W"], repeat=n)):
            if len(set(labels)) > 1:
                every[f"{len(every)}"] = Structure(Lattice(h @ lattice.matrix), list(labels),
                                                   _sites(h) @ np.linalg.inv(h))
    brute = deduplicate(every)
    assert len(every) == 7 * 2 + 13 * 6 + 35 * 14
    assert Counter(s.composition.reduced_formula for s in brute.values()) == Counter(
        s.composition.reduced_formula for s in found.values())


def test_ternary_and_bad_input():
    from dpa4_flows.structures.generate import PrototypeError

    found = decorations("fcc", ["Mo", "Nb", "W"], 3)
    assert all(len(s.composition.elements) >= 2 for s in found.values())
    assert {s.composition.reduced_formula for s in found.values() if len(s) == 3} >= {"NbMoW", "NbMo2", "MoW2"}
    with pytest.raises(PrototypeError):
        decorations("hcp", ["Mo", "W"], 2)
    with pytest.raises(PrototypeError):
        decorations("bcc", ["Mo"], 2)


def test_dpa4_candidates_parent_writes_every_ordering(tmp_path, capsys):
    from dpa4_core.cli import main as dpa4

    assert dpa4(["candidates", "--parent", "fcc", "--max-sites", "3", "--elements", "Mo", "W",
                 "--out", str(tmp_path), "--format", "json"]) == 0
    assert len(list(tmp_path.glob("*.json"))) == 2 + 6
    assert "8 candidates from orderings of fcc up to 3 sites" in capsys.readouterr().out
