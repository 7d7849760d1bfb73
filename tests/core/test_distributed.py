"""Data-parallel training on CPU (gloo): two processes give the one-process loss curve of the same global batch.

Two ranks are spawned with ``torch.multiprocessing`` and the environment torchrun would set. Each rank starts
from different random weights, so the test also checks ``broadcast_parameters``; each trains on its
``shard`` of the same global batch of real 16-atom Mo-Nb frames, averaging gradients with
``all_reduce_gradients``. Equal shards (2 + 2 frames of 16 atoms) make the averaged gradient the exact global
one, so the loss curve and final weights must equal a single process's (fp64 round-off). Only rank 0 writes.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dpa4_core.data.paths import vendored
from dpa4_core.train.compile import make_predictor
from dpa4_core.train.dataset import FrameDataset
from dpa4_core.train.distributed import DistContext, ShardError, init_from_env
from dpa4_core.train.loss import LossWeights, compute_loss
from dpa4_core.data.readers import read_pymatgen_json

STEPS = 4
GLOBAL_BATCH = 4
CUTOFF = 5.0


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    channels = 8

    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(119, channels)
            self.radial = torch.nn.Sequential(torch.nn.Linear(6, channels), torch.nn.SiLU(), torch.nn.Linear(channels, channels))
            self.readout = torch.nn.Sequential(torch.nn.Linear(channels, channels), torch.nn.Tanh(), torch.nn.Linear(channels, 1))

        def atom_energies(self, numbers, edge_vec, edge_src, edge_dst):
            r = torch.sqrt((edge_vec**2).sum(-1) + 1e-14)
            x = (r / CUTOFF).clamp(max=1.0)
            basis = torch.sin(torch.arange(1, 7, dtype=r.dtype) * torch.pi * x[:, None]) / r[:, None] * (1 - x[:, None]) ** 3
            node = self.embed(numbers).index_add(0, edge_dst, self.radial(basis) * self.embed(numbers)[edge_src])
            return self.readout(node).squeeze(-1)

    return StandIn().to(torch.float64)


@pytest.fixture(scope="module")
def dataset() -> FrameDataset:
    return FrameDataset.from_frames(itertools.islice(read_pymatgen_json(vendored("maml_MoNbTaW", "NbMo_SS.json.gz")), 8))


def _train(ctx: DistContext, model: torch.nn.Module, dataset: FrameDataset) -> list[float]:
    """The trainer's loop in miniature: shard, predict, loss, backward, all-reduce, step; global loss logged."""
    ctx.broadcast_parameters(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    predictor = make_predictor(model)
    rng = np.random.default_rng(0)
    curve = []
    for _ in range(STEPS):
        global_idx = rng.choice(len(dataset), GLOBAL_BATCH, replace=False)
        batch, labels = dataset.batch(ctx.shard(global_idx), CUTOFF, torch.float64)
        loss, parts = compute_loss(predictor(batch), labels, batch.frame, LossWeights())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx.all_reduce_gradients(model)
        optimizer.step()
        curve.append(ctx.all_reduce_mean(parts["total"]))
    return curve


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with open(os.path.join(out_dir, "dataset.pkl"), "rb") as stream:
        dataset = pickle.load(stream)
    ctx = init_from_env()
    try:
        assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, world_size, "gloo")
        # averaging, not summing (Adam alone would not tell: it is invariant to the gradient's scale)
        probe = torch.nn.Linear(2, 1)
        probe.weight.grad = torch.full_like(probe.weight, rank + 1.0)  # bias has no grad on any rank
        ctx.all_reduce_gradients(probe)
        averaged = [probe.weight.grad.tolist(), probe.bias.grad.tolist()]
        # (a) the miniature loop: different initial weights on purpose, broadcast_parameters must fix them
        curve = _train(ctx, _model(seed=100 + rank), dataset)
        # (b) the real trainer on the real DPA4
        parts = _run_trainer(os.path.join(out_dir, "ddp"), dataset)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as stream:
            json.dump({"curve": curve, "parts": parts, "averaged": averaged}, stream)
    finally:
        ctx.close()


def _run_trainer(out_dir: str, dataset: FrameDataset) -> list[dict]:
    """``run_training`` of a DPA4 "tiny" (fp64) for STEPS steps; returns this rank's loss parts per step."""
    from dpa4_core.config import DPA4Config
    from dpa4_core.model.energy import DPA4
    from dpa4_core.train.config import TrainConfig
    from dpa4_core.train.trainer import run_training

    config = TrainConfig(
        data={"train": [str(vendored("maml_MoNbTaW", "NbMo_SS.json.gz"))]}, model={"dtype": "float64"},
        steps=STEPS, batch_size=GLOBAL_BATCH, valid_every=100, checkpoint_every=1, valid_batch_size=2,
        output_dir=out_dir, plots=False, progress=False, seed=0,
    )
    torch.manual_seed(0)
    model = DPA4(DPA4Config.preset("tiny")).to(torch.float64)
    parts = []
    run_training(config, model, dataset.subset(range(6)), dataset.subset([6, 7]),
                 callback=lambda step, p: parts.append(p))
    return parts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_reproduce_single_process_training(tmp_path, dataset):
    with open(tmp_path / "dataset.pkl", "wb") as stream:
        pickle.dump(dataset, stream)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single_ctx = init_from_env()
    assert not single_ctx.distributed and single_ctx.is_main

    for rank in ranks:
        assert rank["averaged"] == [[[1.5, 1.5]], [0.0]]
    # (a) miniature loop: same global loss curve and weights as one process on the whole global batch
    curve = _train(single_ctx, _model(seed=100), dataset)
    np.testing.assert_allclose(ranks[0]["curve"], curve, rtol=1e-10)
    assert ranks[0]["curve"] == ranks[1]["curve"]
    assert curve[-1] < curve[0]  # it trained

    # (b) trainer: the mean of the two shards' losses is the one-process loss of the global batch, step by step
    single = _run_trainer(str(tmp_path / "single"), dataset)
    for key in ("energy", "forces", "stress", "total"):
        ddp = [(a[key] + b[key]) / 2 for a, b in zip(ranks[0]["parts"], ranks[1]["parts"])]
        np.testing.assert_allclose(ddp, [p[key] for p in single], rtol=1e-8, err_msg=key)
    # ... the same final weights, written once (rank 0): one log record per step, not one per rank
    from dpa4_core.io.checkpoint import load_checkpoint

    ddp_model = load_checkpoint(tmp_path / "ddp" / "last.pt")
    one_model = load_checkpoint(tmp_path / "single" / "last.pt")
    for (name, a), b in zip(ddp_model.state_dict().items(), one_model.state_dict().values()):
        # Adam normalises each gradient entry: entries whose gradient is ~0 turn round-off (different summation
        # order over two shards) into updates of up to lr, so compare at a tolerance well below lr = 1e-3.
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5, msg=lambda m: f"{name}: {m}")
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in records if r["split"] == "train") == list(range(1, STEPS + 1))


def test_shard_splits_global_batch_exactly():
    indices = np.arange(10, 17)  # 7 frames over 3 ranks: 3 + 2 + 2
    shards = [DistContext(rank=r, world_size=3).shard(indices) for r in range(3)]
    assert [len(s) for s in shards] == [3, 2, 2]
    np.testing.assert_array_equal(np.concatenate(shards), indices)
    assert DistContext().shard(indices) is indices
    with pytest.raises(ShardError, match="2 frame"):
        DistContext(rank=0, world_size=3).shard([0, 1])


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_from_env()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.backend) == (0, 1, True, None)
    model = _model(seed=0)
    model.readout[0].weight.grad = torch.ones_like(model.readout[0].weight)
    ctx.all_reduce_gradients(model)
    ctx.broadcast_parameters(model)
    ctx.barrier()
    assert torch.equal(model.readout[0].weight.grad, torch.ones_like(model.readout[0].weight))
    assert ctx.all_reduce_mean(2.5) == 2.5


def test_bad_environment_is_reported(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        init_from_env()
