"""compute_stability against pymatgen's own convex-hull test data (real DFT energies, Li-Fe-O).

The CSV and the expected answers (11 stable phases, 12 facets, formation energies) are pymatgen's test
fixture and assertions, vendored in data/pymatgen_entries. Also checks the hull identity
E - e_above_hull = sum_k f_k E_k over the decomposition, input conversion and clear errors.
"""

from __future__ import annotations

import csv
import json

import pytest
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedEntry

from dpa4_core.data.paths import vendored
from dpa4_flows.analysis.stability import (
    StabilityInputError,
    build_phase_diagram,
    compute_stability,
    load_entries,
    to_entry,
)


@pytest.fixture(scope="module")
def expected():
    return json.loads(vendored("pymatgen_entries", "pd_entries_test_expected.json").read_text())


@pytest.fixture(scope="module")
def entries():
    with open(vendored("pymatgen_entries", "pd_entries_test.csv")) as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for i, row in enumerate(rows):
        comp = Composition({el: float(row[el]) for el in ("Li", "Fe", "O") if float(row[el]) > 0})
        out.append(ComputedEntry(comp, float(row["Final energy"]), entry_id=f"row-{i}"))
    return out


def _split(entries):
    refs = [e for e in entries if len(e.composition.elements) == 1]
    cands = [e for e in entries if len(e.composition.elements) > 1]
    return cands, refs


def test_hull_matches_pymatgen_expectations(entries, expected):
    assert len(entries) == expected["n_rows_in_csv"]
    diagram = build_phase_diagram(entries, "phase_diagram")
    assert len(diagram.facets) == expected["n_facets"]
    stable = {e.composition.reduced_composition for e in diagram.stable_entries}
    assert stable == {Composition(f).reduced_composition for f in expected["stable_reduced_formulas"]}
    assert len(diagram.stable_entries) == expected["n_stable"]


@pytest.mark.parametrize("method", ["phase_diagram", "patched"])
def test_compute_stability_formation_energies(entries, expected, method):
    cands, refs = _split(entries)
    docs = compute_stability(cands, refs, model_id="sha256:test", method=method)
    assert len(docs) == len(cands)
    assert [d.candidate_id for d in docs] == [e.entry_id for e in cands]

    expected_form = {Composition(f).reduced_composition: v for f, v in expected["form_energy_total_eV"].items()}
    stable_docs = [d for d in docs if d.is_stable]
    # Duplicated rows with equal energies may both sit on the hull; compare by reduced composition.
    stable_comps = {Composition(d.composition).reduced_composition for d in stable_docs}
    compound_expected = {c for c in expected_form if len(c.elements) > 1}
    assert stable_comps == compound_expected
    for doc in stable_docs:
        comp = Composition(doc.composition)
        # Expected values are totals for the stable entry's own cell.
        assert doc.formation_energy_per_atom * comp.num_atoms == pytest.approx(
            expected_form[comp.reduced_composition], abs=1e-6
        )
        assert doc.e_above_hull == pytest.approx(0.0, abs=1e-8)
        assert doc.decomposition[0].fraction == pytest.approx(1.0)
        assert doc.model_id == "sha256:test"
        assert len(doc.reference_ids) == len(comp.elements)


def test_e_above_hull_equals_decomposition_energy(entries):
    cands, refs = _split(entries)
    docs = compute_stability(cands, refs)
    energy_per_atom = {e.entry_id: e.energy_per_atom for e in entries}
    unstable = [d for d in docs if not d.is_stable]
    assert len(unstable) > 400
    for doc in unstable:
        assert doc.e_above_hull > 0
        assert sum(p.fraction for p in doc.decomposition) == pytest.approx(1.0)
        hull_energy = sum(p.fraction * energy_per_atom[p.entry_id] for p in doc.decomposition)
        assert doc.energy_per_atom - doc.e_above_hull == pytest.approx(hull_energy, abs=1e-8)


def test_reference_only_hull_and_entries_json(entries, tmp_path):
    cands, refs = _split(entries)
    path = tmp_path / "refs.json"
    path.write_text(json.dumps([e.as_dict() for e in refs]))
    loaded = load_entries(path)
    assert [e.energy for e in loaded] == [e.energy for e in refs]
    # Against the elements only, e_above_hull is minus the formation energy for compounds below zero.
    docs = compute_stability(cands[:20], path, include_candidates_in_hull=False)
    for doc in docs:
        if doc.formation_energy_per_atom < 0:
            assert doc.e_above_hull == pytest.approx(doc.formation_energy_per_atom, abs=1e-8)


def test_dict_and_structure_inputs():
    bcc = Structure(Lattice.cubic(3.16), ["W", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cand = to_entry({"structure": bcc.as_dict(), "energy": -25.0}, "c0")
    assert cand.entry_id == "c0" and cand.composition.reduced_formula == "W"
    refs = [{"composition": "W", "energy": -12.0, "entry_id": "W-ref"}, {"composition": "Mo", "energy": -10.0}]
    mixed = {"composition": "MoW", "energy": -23.0}
    docs = compute_stability([cand, mixed], refs)
    assert docs[0].is_stable and docs[0].structure is not None
    # MoW at -11.5 eV/atom against W at -12.5 (candidate) and Mo at -10: hull at -11.25, so stable by 0.25.
    assert docs[1].formation_energy_per_atom == pytest.approx(-11.5 - (-12.5 - 10.0) / 2)
    assert docs[1].is_stable and docs[1].e_above_hull == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(StabilityInputError, match="cannot make an entry"):
        to_entry(42, "x")
    with pytest.raises(StabilityInputError, match="no elemental reference for \\['Mo'\\]"):
        compute_stability([{"composition": "MoW", "energy": -23.0}], [{"composition": "W", "energy": -12.0}])
    with pytest.raises(StabilityInputError, match="does not exist"):
        load_entries("/nonexistent/refs.json")


def test_discovery_metrics_on_hull_data(entries):
    """Model = the DFT e_above_hull plus uniform +-50 meV/atom noise: metrics follow from counting by hand."""
    import numpy as np

    from dpa4_flows.analysis.report import discovery_metrics

    cands, refs = _split(entries)
    truth = np.array([d.e_above_hull for d in compute_stability(cands, refs)])
    rng = np.random.default_rng(0)
    pred = truth + rng.uniform(-0.05, 0.05, truth.size)
    m = discovery_metrics(pred, truth, threshold=0.02)
    p, t = pred <= 0.02, truth <= 0.02
    assert (m["tp"], m["fp"], m["fn"]) == (int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()))
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == truth.size
    assert m["precision"] == pytest.approx(m["tp"] / (m["tp"] + m["fp"]))
    assert m["f1"] == pytest.approx(2 * m["tp"] / (2 * m["tp"] + m["fp"] + m["fn"]))
    assert m["daf"] == pytest.approx(m["precision"] / t.mean())
    perfect = discovery_metrics(truth, truth, threshold=0.02)
    assert perfect["f1"] == 1.0 and perfect["daf"] == pytest.approx(1 / t.mean())
    with pytest.raises(ValueError, match="equal length"):
        discovery_metrics([0.0], [0.0, 1.0])


def test_matbench_elemental_reference_file_loads_as_entries():
    """The vendored MP elemental references are a dict element -> entry; each must load as one pure entry."""
    path = vendored("matbench_discovery_refs", "2023-02-07-mp-elemental-reference-entries.json.gz")
    refs = load_entries(path)
    assert len(refs) == 89
    assert all(len(e.composition.elements) == 1 for e in refs)
    assert len({e.composition.elements[0] for e in refs}) == 89
    mo = next(e for e in refs if e.composition.reduced_formula == "Mo")
    assert -11.5 < mo.energy_per_atom < -10.5  # MP PBE bcc Mo, about -10.85 eV/atom


def test_plots_leave_matplotlib_global_state_alone(tmp_path):
    """Hull and parity plots draw on their own Agg canvas: the caller's backend and pyplot figures are untouched."""
    import matplotlib
    import numpy as np

    from dpa4_core.train.plots import parity_plots
    from dpa4_flows.analysis.report import plot_hull

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        refs = [{"composition": el, "energy": -10.0, "entry_id": el} for el in ("Mo", "W")]
        docs = compute_stability([{"composition": "MoW", "energy": -20.5, "entry_id": "c"},
                                  {"composition": "Mo3W", "energy": -40.2, "entry_id": "d"},
                                  {"composition": "MoW3", "energy": -40.1, "entry_id": "e"}], refs)
        assert plot_hull(docs, tmp_path / "hull.png").stat().st_size > 0
        records = {"e_ref": [np.array([0.0, 1.0])], "e_pred": [np.array([0.1, 0.9])],
                   "f_ref": [np.array([0.0, 1.0])], "f_pred": [np.array([0.2, 0.8])]}
        assert len(parity_plots(records, tmp_path)) == 2
        assert matplotlib.get_backend() == "svg"
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
    finally:
        matplotlib.use(previous)
