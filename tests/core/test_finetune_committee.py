"""A fine-tuned committee (``dpa4 finetune --seeds``): one member per seed in ``<output_dir>/seed<k>``; the seed
changes the member (data order), the same seed gives the same weights, an interrupted committee resumes to the
weights of an uninterrupted one, and the command prints the members and the ``dpa4 screen`` line. Real Nb
surface frames (VASP PBE) fine-tuning a tiny model whose bias was fitted on Mo surfaces."""

from __future__ import annotations

import json

import pytest

from dpa4_core.cli import main
from dpa4_core.data.paths import vendored
from dpa4_core.io.checkpoint import load_checkpoint, save_checkpoint
from dpa4_core.train import load_dataset
from dpa4_core.train.finetune import FinetuneError, finetune_committee
from dpa4_core.train.setup import fit_composition_bias, set_energy_bias
from train_models import small_model

MO = str(vendored("maml_MoNbTaW", "Mo_Surface.json.gz"))
NB = str(vendored("maml_MoNbTaW", "Nb_Surface.json.gz"))


def _config(out, base) -> dict:
    # 8 training frames in batches of 2: the seed decides which frames each of the 4 steps sees.
    return {"data": {"train": [NB], "max_frames": 8, "split": {"valid": 0.2, "seed": 0}},
            "base_checkpoint": str(base), "steps": 4, "batch_size": 2, "valid_every": 4, "checkpoint_every": 2,
            "valid_batch_size": 8, "optim": {"lr": 1e-3}, "output_dir": str(out), "progress": False,
            "plots": False}


def _weights(path) -> dict:
    return {k: v.clone() for k, v in load_checkpoint(path).state_dict().items()}


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


def _same(a: dict, b: dict) -> bool:
    """Equal up to the round-off of multi-threaded sums (bit-identical with one thread; CI runs two)."""
    return _max_difference(a, b) < 1e-6


def _different(a: dict, b: dict) -> bool:
    return _max_difference(a, b) > 1e-4


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    model = small_model()
    set_energy_bias(model, fit_composition_bias(load_dataset(MO)))
    return save_checkpoint(model, tmp_path_factory.mktemp("base") / "base.pt", elements=[42])


@pytest.fixture(scope="module")
def committee(tmp_path_factory, base):
    """Seeds 0 and 1 fine-tuned without interruption: (folder, results)."""
    out = tmp_path_factory.mktemp("committee") / "c"
    return out, finetune_committee(_config(out, base), [0, 1])


def test_each_seed_is_a_different_member_and_the_same_seed_the_same_one(committee, base, tmp_path):
    out, results = committee
    assert [seed for seed, _ in results] == [0, 1]
    assert [r.checkpoint for _, r in results] == [out / "seed0" / "best.pt", out / "seed1" / "best.pt"]
    seed0, seed1 = (_weights(r.checkpoint) for _, r in results)
    assert _different(seed0, seed1), _max_difference(seed0, seed1)
    assert _different(seed0, _weights(base))
    # Every member is measured on the same validation frames (the split's seed is not the member's).
    assert results[0][1].metrics["valid"]["n_frames"] == results[1][1].metrics["valid"]["n_frames"] > 0
    again = finetune_committee(_config(tmp_path / "again", base), [0])
    assert _same(_weights(again[0][1].checkpoint), seed0)


def test_an_interrupted_committee_resumes_to_the_uninterrupted_weights(committee, base, tmp_path):
    calls = []

    def crash_in_second_member(step, parts):  # seed 0 runs steps 1-4, then seed 1 dies after its step 3
        calls.append(step)
        if len(calls) == 7:
            raise KeyboardInterrupt

    config = _config(tmp_path / "c", base)
    with pytest.raises(KeyboardInterrupt):
        finetune_committee(config, [0, 1], callback=crash_in_second_member)
    calls.clear()
    resumed = finetune_committee(config, [0, 1], callback=lambda step, parts: calls.append(step))
    assert calls == [3, 4]  # seed 0 was finished; seed 1 went on from its state at step 2
    _, uninterrupted = committee
    for (_, a), (_, b) in zip(resumed, uninterrupted):
        assert _same(_weights(a.checkpoint), _weights(b.checkpoint))
        assert _same(_weights(a.last_checkpoint), _weights(b.last_checkpoint))


def test_finetune_seeds_command_prints_members_and_the_screen_line(committee, base, tmp_path, capsys):
    out, results = committee
    config = tmp_path / "ft.yaml"
    config.write_text(json.dumps(_config(out, base)))  # JSON is YAML; the finished committee resumes at once
    assert main(["finetune", str(config), "--seeds", "0", "1"]) == 0
    captured = capsys.readouterr()
    members = json.loads(captured.out)
    assert [m["seed"] for m in members] == [0, 1]
    assert [m["checkpoint"] for m in members] == [str(r.checkpoint) for _, r in results]
    assert all(m["metrics"]["valid"]["n_frames"] > 0 for m in members)
    paths = " ".join(m["checkpoint"] for m in members)
    assert f"dpa4 screen CANDIDATES... --store STORE --model {members[0]['checkpoint']} --committee {paths}" \
        in captured.err


def test_a_committee_needs_distinct_seeds(base, tmp_path):
    for seeds in ([], [3, 3]):
        with pytest.raises(FinetuneError, match="seed"):
            finetune_committee(_config(tmp_path, base), seeds)
