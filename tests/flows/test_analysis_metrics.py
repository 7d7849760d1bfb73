"""Matbench-Discovery metrics on cases computed by hand; labelled rows of a screening report."""

from __future__ import annotations

import math

import pytest

from dpa4_flows.analysis.metrics import discovery_metrics, labelled_metrics
from dpa4_flows.schemas import ScreeningRow


def test_hand_computed_case():
    # pred stable: a, b, d; true stable: a, c, d (threshold 0: e_above_hull <= 0 is stable)
    pred = [0.0, -0.01, 0.05, 0.0, 0.2]
    true = [0.0, 0.02, -0.01, 0.0, 0.1]
    m = discovery_metrics(pred, true)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(3 / 5)
    assert m["prevalence"] == pytest.approx(3 / 5) and m["daf"] == pytest.approx((2 / 3) / (3 / 5))
    errors = [0.0, -0.03, 0.06, 0.0, 0.1]
    assert m["mae"] == pytest.approx(0.19 / 5)
    assert m["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 5))
    mean = sum(true) / 5
    assert m["r2"] == pytest.approx(1 - sum(e * e for e in errors) / sum((t - mean) ** 2 for t in true))


def test_undefined_ratios_and_perfect_predictions():
    none_stable = discovery_metrics([0.1, 0.2], [0.3, 0.4])
    assert math.isnan(none_stable["precision"]) and none_stable["f1"] == 0.0 and none_stable["accuracy"] == 1.0
    perfect = discovery_metrics([0.0, 0.1, -0.2], [0.0, 0.1, -0.2])
    assert perfect["f1"] == 1.0 and perfect["mae"] == 0.0 and perfect["r2"] == 1.0


def _row(cid, status, pred, dft):
    return ScreeningRow(candidate_id=cid, formula="MoW", n_atoms=2, e_above_hull=pred, status=status,
                        e_above_hull_dft=dft)


def test_only_ranked_labelled_rows_are_scored_and_nan_becomes_none():
    rows = [_row("a", "ranked", 0.0, 0.0), _row("b", "flagged", -0.9, 0.3), _row("c", "ranked", 0.05, None),
            _row("d", "rejected", None, 0.0)]
    m = labelled_metrics(rows)
    assert m["n"] == 1 and m["tp"] == 1 and m["n_labelled_unranked"] == 2
    assert m["r2"] is None  # one point: R2 undefined, stored as null
    assert labelled_metrics([_row("c", "ranked", 0.05, None)]) is None
