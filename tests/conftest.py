"""Shared fixtures: a seeded tiny fp64 DPA4 and a few real structures from the vendored DFT data.

Test modules may define fixtures of the same name; theirs take precedence inside that module.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_config():
    from dpa4_core.config import DPA4Config

    return DPA4Config.preset("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """The tiny preset in fp64 with every parameter (zero-initialised maps included) randomised, seed 0."""
    from dpa4_core.testing import seeded_model

    return seeded_model(tiny_config, seed=0, dtype=torch.float64)


@pytest.fixture(scope="session")
def real_structures() -> dict:
    """Real DFT structures: a Nb-Mo alloy (maml), bulk Si (mlearn) and an acetylacetone molecule (botnet)."""
    from _vendored import read_vendored

    return {
        "NbMo": read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=0),
        "Si": read_vendored("mlearn", "Si", "training.json.gz", index=0),
        "acac": read_vendored("botnet", "dataset_acac", "train_300K.xyz.gz", index=0),
    }
