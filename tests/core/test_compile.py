"""Compiled training through the force double-backward (spec section 7) equals eager training.

The recipe is checked on a small conservative stand-in (compiled with inductor) and, opt-in, on DPA4 "tiny".

Checks: one compiled training step (energy + force + stress loss on real Mo/W surface frames) gives the same
loss and the same parameter gradients as eager; a force-only loss gives non-zero, equal gradients (the test
fails if the detach nodes were left in the trace, which is also checked directly); batches of different sizes
do not recompile; the predictor re-traces when the parameters change identity; a failing compiler falls back
to eager with one warning. Compilation (~25 s) happens once, in a module-scoped fixture.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch

from dpa4_core.data.batch import AtomsBatch
from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_pymatgen_json
from dpa4_core.train import trace as trace_module
from dpa4_core.train.compile import CompileFallbackWarning, make_predictor
from dpa4_core.train.trace import energy_and_edge_gradient, trace_energy_and_edge_gradient

DTYPE = torch.float64
RTOL = 1e-9  # fp64: compiled and eager differ only by summation order


class StandIn(torch.nn.Module):
    """Small conservative potential with DPA4's pure-function signature: radial MLP, SiLU, tanh, scatter.

    The tanh saves its output for backward, which is where make_fx inserts the detach nodes that matter.
    """

    def __init__(self, channels: int = 16, cutoff: float = 5.0):
        super().__init__()
        self.cutoff = cutoff
        self.embed = torch.nn.Embedding(119, channels)
        self.freq = torch.nn.Parameter(torch.arange(1, 9, dtype=torch.float32) * torch.pi / cutoff)
        self.radial = torch.nn.Sequential(torch.nn.Linear(8, channels), torch.nn.SiLU(), torch.nn.Linear(channels, channels))
        self.readout = torch.nn.Sequential(torch.nn.Linear(channels, channels), torch.nn.SiLU(), torch.nn.Linear(channels, 1))
        self.register_buffer("energy_bias", torch.zeros(119))

    def atom_energies(self, numbers, edge_vec, edge_src, edge_dst):
        r = torch.sqrt((edge_vec**2).sum(-1) + 1e-14)
        x = (r / self.cutoff).clamp(max=1.0)
        envelope = (1 - x) ** 4 * (1 + 4 * x)
        basis = torch.sin(self.freq * r[:, None]) / r[:, None] * envelope[:, None]
        messages = torch.tanh(self.radial(basis)) * self.embed(numbers)[edge_src]
        node = self.embed(numbers).index_add(0, edge_dst, messages)
        return self.readout(node).squeeze(-1) + self.energy_bias[numbers]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return StandIn().to(DTYPE)


def _frames(name: str, indices: list[int]):
    frames = list(read_pymatgen_json(vendored("maml_MoNbTaW", name)))
    return [frames[i] for i in indices]


def _batch(frames, cutoff: float = 6.0) -> tuple[AtomsBatch, dict[str, torch.Tensor]]:
    batch = AtomsBatch.from_atoms([f.atoms for f in frames], cutoff=cutoff, dtype=DTYPE)
    labels = dict(
        energy=torch.tensor([f.energy for f in frames], dtype=DTYPE),
        forces=torch.cat([torch.as_tensor(f.forces, dtype=DTYPE) for f in frames]),
        stress=torch.stack([torch.as_tensor(f.stress, dtype=DTYPE) for f in frames]),
    )
    return batch, labels


def _loss(out, labels, batch, weights=(20.0, 20.0, 5.0)):
    """Spec section 7 loss: energy-per-atom MAE, mean force-error norm, stress MAE (weights 20/20/5)."""
    n = batch.atoms_per_frame.to(DTYPE)
    energy = ((out["energy"] - labels["energy"]) / n).abs().mean()
    forces = (out["forces"] - labels["forces"]).norm(dim=1).mean()
    stress = (out["stress"] - labels["stress"]).abs().mean()
    return weights[0] * energy + weights[1] * forces + weights[2] * stress


def _grads(model, loss):
    params = list(model.parameters())
    return torch.autograd.grad(loss, params, allow_unused=True)


def _assert_same_grads(grads_a, grads_b, rtol=RTOL):
    """Same set of unused parameters (None) and equal gradients elsewhere."""
    for a, b in zip(grads_a, grads_b, strict=True):
        assert (a is None) == (b is None)
        if b is not None:
            _assert_same(a, b, rtol)


def _assert_same(a, b, rtol=RTOL):
    scale = b.abs().max().clamp(min=1e-30)
    assert float((a - b).abs().max() / scale) < rtol


@pytest.fixture(scope="module")
def data():
    # Mo/W surface slabs of 6..36 atoms: real DFT labels, different sizes, periodic cells.
    frames = _frames("Mo_Surface.json.gz", [6, 7, 9, 3]) + _frames("W_Surface.json.gz", [8, 9])
    batches = [_batch(frames[0:2]), _batch(frames[2:3]), _batch(frames[3:4]), _batch(frames[4:6])]
    return batches


@pytest.fixture(scope="module")
def compiled(data):
    """One compiled predictor for the module; its first call (trace + compile) is made here."""
    model = _model()
    predictor = make_predictor(model, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)  # a fallback would make these tests vacuous
        predictor(data[0][0])
    assert predictor.compiled and predictor.traces == 1
    return model, predictor


@pytest.mark.slow
def test_compiled_training_step_equals_eager(compiled, data):
    model, predictor = compiled
    eager = make_predictor(model, compile=False)
    batch, labels = data[0]
    loss_c = _loss(predictor(batch), labels, batch)
    grads_c = _grads(model, loss_c)
    loss_e = _loss(eager(batch), labels, batch)
    grads_e = _grads(model, loss_e)
    assert torch.isclose(loss_c, loss_e, rtol=RTOL, atol=0)
    _assert_same_grads(grads_c, grads_e)
    # the outputs themselves
    out_c, out_e = predictor(batch), eager(batch)
    for key in ("energy", "forces", "virial", "stress", "atom_energy"):
        _assert_same(out_c[key].detach(), out_e[key].detach())


@pytest.mark.slow
def test_force_only_loss_trains_weights(compiled, data):
    """d(force loss)/d(theta) is non-zero and equal: the double backward survives compilation."""
    model, predictor = compiled
    batch, labels = data[0]
    weights = (0.0, 1.0, 0.0)
    grads_c = _grads(model, _loss(predictor(batch), labels, batch, weights))
    grads_e = _grads(model, _loss(make_predictor(model)(batch), labels, batch, weights))
    radial_weight = dict(model.named_parameters())["radial.0.weight"]
    index = [p is radial_weight for p in model.parameters()].index(True)
    assert grads_c[index] is not None and grads_c[index].abs().max() > 1e-6
    _assert_same_grads(grads_c, grads_e)


@pytest.mark.slow
def test_varying_batches_do_not_recompile(compiled, data):
    model, predictor = compiled
    sizes = set()
    for batch, labels in data:
        sizes.add((batch.n_atoms, batch.edge_src.shape[0]))
        loss = _loss(predictor(batch), labels, batch)
        loss.backward()
    model.zero_grad()
    assert len(sizes) == 4
    assert predictor.traces == 1
    assert predictor.recompiles <= 2


def test_detach_nodes_must_be_removed(data):
    """The uncompiled trace: with detach stripped it matches eager; with detach kept the force loss's
    parameter gradients are wrong (this is the failure the recipe's step 3 prevents)."""
    model = _model()
    batch, labels = data[2]
    vec = batch.edge_vectors()
    sample = (batch.numbers, vec, batch.edge_src, batch.edge_dst)
    gm, names, _ = trace_energy_and_edge_gradient(model, sample)
    params = [dict(model.named_parameters())[n.removeprefix("model.")] for n in names]
    buffers = [model.energy_bias]

    def force_loss(edge_grad):
        forces = torch.zeros_like(batch.positions).index_add(0, batch.edge_dst, edge_grad)
        forces = forces.index_add(0, batch.edge_src, -edge_grad)
        return (forces - labels["forces"]).norm(dim=1).mean()

    _, g_eager = energy_and_edge_gradient(model, *sample)
    reference = _grads(model, force_loss(g_eager))
    _, g_traced = gm(params, buffers, *sample)
    _assert_same_grads(_grads(model, force_loss(g_traced)), reference)

    original = trace_module._strip_detach
    try:
        trace_module._strip_detach = lambda gm: 0
        kept, _, _ = trace_energy_and_edge_gradient(model, sample)
    finally:
        trace_module._strip_detach = original
    assert any(n.target == torch.ops.aten.detach.default for n in kept.graph.nodes)
    _, g_kept = kept(params, buffers, *sample)
    assert torch.allclose(g_kept, g_eager)  # same forces ...
    wrong = _grads(model, force_loss(g_kept))
    assert any(  # ... but gradients that miss the second-order path
        (a is None) != (b is None) or (b is not None and not torch.allclose(a, b)) for a, b in zip(wrong, reference)
    )


def test_retrace_only_when_parameters_change_identity(data, monkeypatch):
    # torch.compile replaced by the identity: this checks the tracing logic without paying for inductor.
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    model = _model()
    predictor = make_predictor(model, compile=True)
    for batch, _ in data[:3]:
        predictor(batch)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)  # an optimiser step keeps identity: no re-trace
    predictor(data[0][0])
    assert predictor.traces == 1
    model.load_state_dict(copy.deepcopy(model.state_dict()))  # in-place copy, same identity
    predictor(data[0][0])
    assert predictor.traces == 1
    model.readout[2].weight = torch.nn.Parameter(model.readout[2].weight.detach().clone())
    out = predictor(data[0][0])
    assert predictor.traces == 2
    _assert_same(out["energy"].detach(), make_predictor(model)(data[0][0])["energy"].detach())


def test_compile_failure_falls_back_with_one_warning(data, monkeypatch):
    def broken_compile(fn, **kwargs):
        raise RuntimeError("no C++ compiler (simulated)")

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _model()
    predictor = make_predictor(model, compile=True)
    batch, _ = data[2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = predictor(batch)
        second = predictor(batch)
    fallbacks = [w for w in caught if issubclass(w.category, CompileFallbackWarning)]
    assert len(fallbacks) == 1 and "no C++ compiler" in str(fallbacks[0].message)
    assert not predictor.compiled
    reference = make_predictor(model)(batch)
    for out in (first, second):
        _assert_same(out["forces"].detach(), reference["forces"].detach())


# ---------------------------------------------------------------------------------------- the real DPA4
# The same recipe on DPA4 "tiny" (fp64). The backend is "aot_eager": the traced graph, its symbolic shapes,
# dynamo and the AOT-autograd backward are exactly those of the inductor path, but no C++ is generated
# (inductor's C++ build of the DPA4 graph takes ~15 min on the shared 2-core CI machine; the benchmark
# exercises it). Even so, dynamo + AOT autograd over the ~3000-node DPA4 graph cost 3-9 min there, beyond
# this module's budget, so these two tests are opt-in: DPA4_TEST_REAL_COMPILE=1 (they passed on 2026-11-25).
real_compile = pytest.mark.skipif(
    os.environ.get("DPA4_TEST_REAL_COMPILE") != "1", reason="set DPA4_TEST_REAL_COMPILE=1 (several minutes)"
)


@pytest.fixture(scope="module")
def dpa4_compiled(data):
    from dpa4_core.config import DPA4Config
    from dpa4_core.model.energy import DPA4

    torch.manual_seed(0)
    model = DPA4(DPA4Config.preset("tiny")).to(DTYPE)
    with torch.no_grad():  # off the identity initialisation, so every block carries force gradients
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    predictor = make_predictor(model, compile=True, backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        predictor(data[0][0])
    assert predictor.compiled and predictor.traces == 1
    return model, predictor


@real_compile
@pytest.mark.timeout(1800)  # opt-in: dynamo + AOT autograd over DPA4 take minutes
@pytest.mark.slow
def test_dpa4_compiled_step_equals_eager_with_force_gradients(dpa4_compiled, data):
    model, predictor = dpa4_compiled
    batch, labels = data[0]
    for weights in ((20.0, 20.0, 5.0), (0.0, 1.0, 0.0)):
        grads_c = _grads(model, _loss(predictor(batch), labels, batch, weights))
        grads_e = _grads(model, _loss(make_predictor(model)(batch), labels, batch, weights))
        _assert_same_grads(grads_c, grads_e, rtol=1e-8)
    # the force-only loss reaches the weights inside the interaction blocks
    named = dict(zip([n for n, _ in model.named_parameters()], grads_c))
    block_grads = [g for n, g in named.items() if n.startswith("blocks.") and g is not None]
    assert block_grads and max(float(g.abs().max()) for g in block_grads) > 1e-8


@real_compile
@pytest.mark.timeout(1800)  # opt-in: dynamo + AOT autograd over DPA4 take minutes
@pytest.mark.slow
def test_dpa4_varying_batches_do_not_recompile(dpa4_compiled, data):
    model, predictor = dpa4_compiled
    for batch, labels in data:
        _loss(predictor(batch), labels, batch).backward()
    model.zero_grad()
    assert predictor.traces == 1 and predictor.recompiles <= 2
