"""deepmd-kit DPA4's SO(2) convolution (dpa4_core.nn.block_deepmd) equals deepmd-kit's ``blocks.0.so2_conv`` on its
recorded input (NbMo_SS[334], tests/fixtures/deepmd/dpa4_tiny_components.pt), with dpa4's own edges and frames."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ase import Atoms

from dpa4_core.config import DPA4Config
from dpa4_core.data.batch import AtomsBatch
from dpa4_core.io.deepmd import read_deepmd_checkpoint
from dpa4_core.io.deepmd_options import check_options
from dpa4_core.io.deepmd_weights import map_convolution, map_embedding, sh_signs
from dpa4_core.model.energy import DPA4
from dpa4_core.nn.block_deepmd import DeepmdConvolution

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"


def test_convolution_equals_deepmd_so2_conv():
    checkpoint = read_deepmd_checkpoint(FIXTURES / "dpa4_tiny.pt")
    model = DPA4(DPA4Config(**check_options(checkpoint).fields)).double()
    map_embedding(checkpoint, model)
    stages = torch.load(FIXTURES / "dpa4_tiny_components.pt", weights_only=True)["intermediates"]["stages"]
    frame = json.loads((FIXTURES / "dpa4_tiny_reference.json").read_text())["frames"][0]
    atoms = Atoms(frame["symbols"], positions=frame["positions"], cell=frame["cell"], pbc=True)
    batch = AtomsBatch.from_atoms([atoms], cutoff=5.0, dtype=torch.float64)
    numbers_src, numbers_dst = batch.numbers[batch.edge_src], batch.numbers[batch.edge_dst]
    cache = model.edge_cache(batch.edge_vectors(), batch.edge_src, batch.edge_dst, batch.n_atoms)
    _, rho = model.radial(cache.bridged, cache.envelope, numbers_src, numbers_dst)
    rho = rho + model.radial.edge_type_term(numbers_src, numbers_dst)[:, None, :]
    conv = DeepmdConvolution(8, 2, 1, layers=2, heads=1, rank=1).double()
    map_convolution(checkpoint, conv)
    signs = torch.cat([sh_signs(l) for l in range(3)])[None, :, None]  # noqa: E741
    with torch.no_grad():
        ours = conv(signs * stages["descriptor.blocks.0:input"][:, :, 0], cache, rho)
    theirs = signs * stages["descriptor.blocks.0.so2_conv"]
    assert theirs[:, 1:].abs().max() > 1e-3
    assert (ours - theirs).abs().max() < 1e-12
