"""bf16 autocast training (spec section 7): the network runs in bf16, geometry and normalisations stay fp32.

Checks on the real DPA4 ("tiny", weights perturbed away from the identity initialisation so every block
contributes) and real Mo-Nb frames: outputs come back in fp32; energies, forces, stress and the training loss
agree with fp32 to bf16 accuracy (goal: within 3%); parameter gradients point the same way; and no
precision-sensitive op (exp, log, sqrt/rsqrt, softmax, trigonometry, means of the norms, divisions) runs in
bf16, while the matrix products do (so the check can fail). The compiled bf16 path is checked against the
eager one in an opt-in test (DPA4_TEST_REAL_COMPILE=1; compiling DPA4 takes minutes here).
"""

from __future__ import annotations

import collections
import itertools
import os
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dpa4_core.config import DPA4Config
from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_pymatgen_json
from dpa4_core.model.energy import DPA4
from _memory import saved_tensor_bytes
from dpa4_core.train.compile import CompileFallbackWarning, make_predictor
from dpa4_core.train.dataset import FrameDataset
from dpa4_core.train.loss import LossWeights, compute_loss

aten = torch.ops.aten
# Ops whose bf16 rounding (8-bit mantissa) would spoil geometry, envelopes, norms or the attention softmax.
SENSITIVE = {
    aten.exp.default, aten.log.default, aten.sqrt.default, aten.rsqrt.default, aten.pow.Tensor_Scalar,
    aten._softmax.default, aten.logsumexp.default, aten.sin.default, aten.cos.default, aten.atan2.default,
    aten.acos.default, aten.mean.dim, aten.var.correction, aten.div.Tensor, aten.reciprocal.default,
    aten.scatter_reduce.two, aten.softplus.default, aten.linalg_vector_norm.default,
}
MATMULS = {aten.mm.default, aten.bmm.default, aten.addmm.default}


class Bf16Ops(TorchDispatchMode):
    """Counts every aten op that produced a bf16 tensor."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, tuple | list) else [out]
        if any(isinstance(o, torch.Tensor) and o.dtype == torch.bfloat16 for o in outputs):
            self.ops[func] += 1
        return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = DPA4(DPA4Config.preset("tiny"))
    with torch.no_grad():  # move off the zero-initialised post-mix / output maps: all blocks contribute
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def data():
    frames = itertools.islice(read_pymatgen_json(vendored("maml_MoNbTaW", "NbMo_SS.json.gz")), 3)
    dataset = FrameDataset.from_frames(frames)
    return dataset.batch([0, 1, 2], cutoff=6.0, dtype=torch.float32)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).norm() / b.detach().norm())


def test_bf16_outputs_are_fp32_and_close_to_fp32(model, data):
    batch, labels = data
    ref = make_predictor(model)(batch)
    out = make_predictor(model, bf16=True)(batch)
    for key in ("energy", "forces", "virial", "stress", "atom_energy"):
        assert out[key].dtype == torch.float32, key
        assert torch.isfinite(out[key]).all(), key
    # the network's part of the energy (bias and ZBL are exact in both) and the forces agree to bf16 accuracy
    assert _relative(out["atom_energy"] - model.energy_bias[batch.numbers], ref["atom_energy"] - model.energy_bias[batch.numbers]) < 0.03
    assert _relative(out["forces"], ref["forces"]) < 0.03
    assert _relative(out["stress"], ref["stress"]) < 0.03
    assert _relative(out["forces"], ref["forces"]) > 0  # bf16 really ran (else the bound above is vacuous)


def test_bf16_loss_and_gradients_match_fp32(model, data):
    batch, labels = data
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {}
    for bf16 in (False, True):
        loss, _ = compute_loss(make_predictor(model, bf16=bf16)(batch), labels, batch.frame, LossWeights())
        grads[bf16] = (float(loss.detach()), torch.autograd.grad(loss, params, allow_unused=True))
    (loss32, g32), (loss16, g16) = grads[False], grads[True]
    assert abs(loss16 - loss32) / loss32 < 0.03
    flat32 = torch.cat([g.flatten() for g in g32 if g is not None])
    flat16 = torch.cat([g.flatten() for g in g16 if g is not None])
    cosine = torch.nn.functional.cosine_similarity(flat32, flat16, dim=0)
    assert cosine > 0.99


def test_sensitive_ops_stay_fp32(model, data):
    batch, labels = data
    recorder = Bf16Ops()
    with recorder:
        loss, _ = compute_loss(make_predictor(model, bf16=True)(batch), labels, batch.frame, LossWeights())
        loss.backward()
    model.zero_grad()
    in_bf16 = set(recorder.ops)
    assert in_bf16 & MATMULS, "autocast did not run any matrix product in bf16"
    assert not (in_bf16 & SENSITIVE), f"precision-sensitive ops ran in bf16: {sorted(map(str, in_bf16 & SENSITIVE))}"


@pytest.mark.skipif(
    os.environ.get("DPA4_TEST_REAL_COMPILE") != "1", reason="set DPA4_TEST_REAL_COMPILE=1 (compiles DPA4: minutes)"
)
@pytest.mark.slow
@pytest.mark.timeout(1800)  # opt-in: compiles DPA4
def test_compiled_bf16_matches_eager_bf16(model, data):
    """Opt-in (see test_compile.py): the bf16 trace of DPA4 with the AOT-autograd backward."""
    batch, labels = data
    compiled = make_predictor(model, compile=True, bf16=True, backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        out_c = compiled(batch)
    out_e = make_predictor(model, bf16=True)(batch)
    ref = make_predictor(model)(batch)
    assert out_c["forces"].dtype == torch.float32
    # A compiler may keep fused bf16 intermediates in fp32, so compiled and eager bf16 may differ by bf16
    # round-off: both must be within bf16 accuracy of fp32, and close to each other.
    for key in ("forces", "stress"):
        assert _relative(out_c[key], ref[key]) < 0.03
        assert _relative(out_c[key], out_e[key]) < 0.03
    loss_c, _ = compute_loss(out_c, labels, batch.frame, LossWeights())
    loss_c.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _saved_bytes(model, batch, labels, bf16: bool) -> int:
    """Bytes the forward and the force graph save for the training backward."""
    return saved_tensor_bytes(
        lambda: compute_loss(make_predictor(model, bf16=bf16)(batch), labels, batch.frame, LossWeights()))[1]


def test_bf16_saves_at_most_0_6_of_fp32_activation_memory(model, data):
    """The memory goal of bf16 training (<= 0.6x fp32), on what autograd keeps for backward: per-edge
    messages are bf16 and no fp32 copy of them is saved (scatter_sum instead of index_add)."""
    batch, labels = data
    ratio = _saved_bytes(model, batch, labels, True) / _saved_bytes(model, batch, labels, False)
    assert ratio <= 0.6, ratio
