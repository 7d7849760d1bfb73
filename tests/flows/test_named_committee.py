"""The shipped committee by name: `dpa4 screen --committee small-MoNbTaW-committee` expands to its members and flags
with the spread-to-error scale measured on held-out frames (dpa4_core/pretrained/small-MoNbTaW-committee.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.pretrained import COMMITTEE_SCALES, COMMITTEES, expand_committee
from dpa4_core.testing import predict
from dpa4_flows.screen_args import ScreenOptions
from _vendored import read_vendored


def test_a_shipped_committee_name_expands_to_its_members_with_its_calibrated_scale(tmp_path):
    members = COMMITTEES["small-MoNbTaW-committee"]
    checks = ScreenOptions(out=tmp_path, committee=("small-MoNbTaW-committee",)).checks()
    assert checks["committee"] == members and checks["committee_k"] == COMMITTEE_SCALES["small-MoNbTaW-committee"]
    assert ScreenOptions(out=tmp_path, committee=("small-MoNbTaW-committee",), committee_k=2.0).checks()[
        "committee_k"] == 2.0  # the user's k wins
    own = ScreenOptions(out=tmp_path, committee=("small-MoNbTaW", "small-MoNbTaW-s1")).checks()
    assert own["committee_k"] == 1.0  # no calibration known for a hand-made committee
    assert expand_committee(["a.pt", "small-MoNbTaW-committee"]) == ["a.pt", *members]


def test_the_shipped_members_are_different_models_that_agree_closely():
    """Different weights (a spread exists) giving energies within tens of meV/atom on a real held-out-type frame."""
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=0)
    models = [load_checkpoint(name) for name in COMMITTEES["small-MoNbTaW-committee"]]
    for other in models[1:]:
        assert any(not torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), other.state_dict().values()))
    energies = np.array([float(np.asarray(predict(m, atoms)["energy"]).reshape(-1)[0]) / len(atoms) for m in models])
    spread = energies.std(ddof=1)
    assert 0 < spread < 0.05
    assert pytest.approx(energies.mean(), abs=0.05) == energies[0]
