"""GroupedMuon: torch's Muon with the Newton-Schulz iteration batched per shape (dpa4_core/train/optim.py)."""

import copy

import pytest
import torch

from dpa4_core.train.optim import GroupedMuon, orthogonalize

pytestmark = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon not in this torch")

COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _reference(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The same quintic iteration on one matrix, in fp64, written out as torch's Muon does it."""
    a, b, c = COEFFICIENTS
    x = matrix.double()
    tall = x.shape[0] > x.shape[1]
    x = (x.T if tall else x) / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_batched_iteration_equals_the_per_matrix_one():
    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 16), (3, 16), (16, 16), (64, 16), (3, 16), (16, 64), (16, 16)]  # repeats, tall and wide
    matrices = [torch.randn(s, generator=gen) for s in shapes]
    out = orthogonalize(matrices, COEFFICIENTS, steps=5)
    for m, o in zip(matrices, out):
        assert o.shape == m.shape and o.dtype == torch.float32
        torch.testing.assert_close(o.double(), _reference(m), rtol=1e-4, atol=1e-4)
        # what Muon wants: singular values pulled towards 1 (the quintic leaves them in about [0.5, 1.5])
        sv = torch.linalg.svdvals(o.double())
        assert sv.min() > 0.3 and sv.max() < 1.6, sv


def _pair_of_models():
    torch.manual_seed(0)
    layers = [torch.nn.Linear(16, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 48), torch.nn.Linear(48, 8)]
    a = torch.nn.Sequential(*layers)
    b = torch.nn.Sequential(*[torch.nn.Linear(l.in_features, l.out_features) for l in layers])
    b.load_state_dict(a.state_dict())
    return a, b


def _train(model, optimizer, steps: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 16, generator=gen)
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("nesterov", [True, False])
def test_grouped_muon_follows_torch_muon(nesterov, monkeypatch):
    # torch iterates in bf16 (1-2% off per orthogonalisation, which compounds over steps), we in fp32: give torch's
    # Muon the exact fp64 iteration so that everything else (momentum, Nesterov, decay, rates) is compared tightly.
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz",
                        lambda grad, coefficients, steps, eps: _reference(grad, steps).to(grad.dtype))
    ours, theirs = _pair_of_models()
    start = [p.detach().clone() for p in ours.parameters()]
    kwargs = dict(lr=0.05, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn="match_rms_adamw")
    matrices = lambda m: [p for p in m.parameters() if p.ndim == 2]  # noqa: E731
    _train(ours, GroupedMuon(matrices(ours), **kwargs), steps=3)
    _train(theirs, torch.optim.Muon(matrices(theirs), **kwargs), steps=3)
    for p0, p, q in zip(start, ours.parameters(), theirs.parameters()):
        if p.ndim != 2:
            assert torch.equal(p, p0) and torch.equal(q, p0)  # not in either optimiser
            continue
        step_ours, step_theirs = p - p0, q - p0
        assert step_theirs.norm() > 0.05 * p0.norm()  # the updates are not small, so a wrong one shows
        assert (step_ours - step_theirs).norm() < 1e-4 * step_theirs.norm()


def test_one_orthogonalisation_agrees_with_torchs_bf16_one():
    from torch.optim._muon import _zeropower_via_newtonschulz

    gen = torch.Generator().manual_seed(3)
    matrices = [torch.randn(s, generator=gen) for s in [(16, 16), (48, 16), (8, 48)]]
    for m, o in zip(matrices, orthogonalize(matrices, COEFFICIENTS, steps=5)):
        theirs = _zeropower_via_newtonschulz(m, COEFFICIENTS, 5, 1e-7).float()
        assert (o - theirs).norm() < 0.03 * theirs.norm()  # bf16 has an 8-bit mantissa


def test_optimizer_state_loads_across_the_two_classes(monkeypatch):
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz",  # exact iteration, as above
                        lambda grad, coefficients, steps, eps: _reference(grad, steps).to(grad.dtype))
    ours, theirs = _pair_of_models()
    matrices = lambda m: [p for p in m.parameters() if p.ndim == 2]  # noqa: E731
    torch_muon = torch.optim.Muon(matrices(theirs), lr=0.02)
    _train(theirs, torch_muon, steps=2)
    ours.load_state_dict(theirs.state_dict())
    grouped = GroupedMuon(matrices(ours), lr=0.02)
    grouped.load_state_dict(copy.deepcopy(torch_muon.state_dict()))  # else the two share momentum buffers
    for p, q in zip(matrices(ours), matrices(theirs)):
        assert torch.equal(grouped.state[p]["momentum_buffer"], torch_muon.state[q]["momentum_buffer"])
    _train(ours, grouped, steps=1, seed=2)
    _train(theirs, torch_muon, steps=1, seed=2)
    for p, q in zip(matrices(ours), matrices(theirs)):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5)
