"""``DPA4Config.embedding = "deepmd"``: dpa4's initial node features equal deepmd-kit's on a real alloy frame.

deepmd-kit 3.2.0 recorded its node features entering the first block (FiLM-ed l = 0 scalars and the l >= 1
embedding) on NbMo_SS[334] (tests/fixtures/deepmd/dpa4_tiny_components.pt); the weights come from the same
checkpoint through ``dpa4_core.io.deepmd_weights.map_embedding``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ase import Atoms

from dpa4_core.config import ConfigError, DPA4Config
from dpa4_core.data.batch import AtomsBatch
from dpa4_core.io.deepmd import read_deepmd_checkpoint
from dpa4_core.io.deepmd_options import check_options
from dpa4_core.io.deepmd_weights import map_embedding, sh_signs
from dpa4_core.model.energy import DPA4
from dpa4_core.testing import (
    assert_close,
    assert_permutation_equivariant,
    assert_rotation_equivariant,
    finite_difference_forces,
    predict,
    seeded_model,
)

from _vendored import read_vendored

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"
# dpa4_tiny.pt's sizes (benchmarks/deepmd/make_fixtures.py; tests/core/test_deepmd_options.py checks the mapping)
TINY = dict(channels=8, lmax=2, mmax=1, n_blocks=1, so2_layers=2, n_radial=8, cutoff=5.0, radial_hidden=8,
            env_dim=8, env_axis=4, env_type_dim=8, env_radial_dim=32, env_hidden=48, embedding="deepmd",
            scalar_density=False, zbl=False)


@pytest.fixture(scope="module")
def recorded() -> dict:
    components = torch.load(FIXTURES / "dpa4_tiny_components.pt", weights_only=True)
    reference = json.loads((FIXTURES / "dpa4_tiny_reference.json").read_text())
    frame = next(f for f in reference["frames"] if f["source"] == components["intermediates"]["frame"])
    return {"frame": frame, "stages": components["intermediates"]["stages"]}


def _deepmd_stage(recorded: dict, name: str) -> torch.Tensor:
    return recorded["stages"][name]


def _initial_features(model: DPA4, frame: dict) -> torch.Tensor:
    atoms = Atoms(frame["symbols"], positions=frame["positions"], cell=frame["cell"], pbc=True)
    batch = AtomsBatch.from_atoms([atoms], cutoff=model.config.cutoff, dtype=torch.float64)
    edge_vec = batch.edge_vectors()
    cache = model.edge_cache(edge_vec, batch.edge_src, batch.edge_dst, batch.n_atoms)
    phi, rho = model.radial(cache.bridged, cache.envelope, batch.numbers[batch.edge_src],
                            batch.numbers[batch.edge_dst])
    return model.embedding(batch.numbers, cache, phi, rho)


def test_initial_node_features_equal_deepmd_after_the_sign_map(recorded):
    checkpoint = read_deepmd_checkpoint(FIXTURES / "dpa4_tiny.pt")
    model = DPA4(DPA4Config(**check_options(checkpoint).fields)).double()  # the config the loader maps
    map_embedding(checkpoint, model)
    with torch.no_grad():
        ours = _initial_features(model, recorded["frame"])  # [N, (L+1)^2, C]
    theirs = _deepmd_stage(recorded, "descriptor.blocks.0:input")[:, :, 0, :]
    signs = torch.cat([sh_signs(l) for l in range(TINY["lmax"] + 1)])  # noqa: E741
    mapped = signs[None, :, None] * theirs
    assert theirs[:, 1:].abs().max() > 1e-2  # a displaced alloy: the l >= 1 features are not zero
    assert (ours[:, 0] - mapped[:, 0]).abs().max() < 1e-12  # FiLM-ed scalars
    assert (ours[:, 1:] - mapped[:, 1:]).abs().max() < 1e-12  # l >= 1 embedding


def test_deepmd_embedding_keeps_the_model_symmetric_and_conservative():
    model = seeded_model(DPA4Config(**TINY), seed=5)
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=334)
    assert_rotation_equivariant(model, atoms, seed=1)
    assert_permutation_equivariant(model, atoms, seed=2)
    indices = [0, 5, 11]
    forces = predict(model, atoms)["forces"][indices]
    assert_close(forces, finite_difference_forces(model, atoms, indices=indices), rtol=1e-6, name="forces")


def test_unknown_embedding_is_a_config_error():
    with pytest.raises(ConfigError, match="embedding must be 'dpa4' or 'deepmd'"):
        DPA4Config(embedding="mace")
    assert DPA4Config().embedding == "dpa4"  # defaults unchanged
