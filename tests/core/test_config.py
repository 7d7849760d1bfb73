"""DPA4Config (dpa4_core/config.py): presets, parameter counts against the paper, round trip, clear errors."""

from __future__ import annotations

import json

import pytest

from dpa4_core.config import PAPER_PARAMETERS, ConfigError, DPA4Config
from dpa4_core.model.energy import DPA4


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_preset_parameter_count_matches_paper(name):
    config = DPA4Config.preset(name)
    assert config.channels == 64 and config.mmax == 1
    n_params = sum(p.numel() for p in DPA4(config).parameters())
    assert abs(n_params / PAPER_PARAMETERS[name] - 1) < 0.10, (name, n_params)


def test_preset_sizes_follow_the_paper_table():
    table = {"neo": (2, 3, 3, 1), "air": (3, 3, 4, 1), "plus": (4, 4, 4, 1), "pro": (6, 5, 4, 2)}
    for name, sizes in table.items():
        c = DPA4Config.preset(name)
        assert (c.n_blocks, c.lmax, c.so2_layers, c.rank) == sizes
        assert (c.cutoff, c.r_in, c.r_out) == (6.0, 0.5, 0.8)


def test_round_trip_and_overrides():
    config = DPA4Config.preset("tiny", cutoff=5.0)
    data = json.loads(json.dumps(config.to_dict()))
    assert DPA4Config.from_dict(data) == config and config.cutoff == 5.0
    with pytest.raises(ConfigError, match="unknown DPA4Config field"):
        DPA4Config.from_dict({**data, "colour": "red"})
    with pytest.raises(ConfigError, match="unknown DPA4 preset 'huge'"):
        DPA4Config.preset("huge")


def test_a_config_written_before_scalar_density_loads_the_model_it_describes():
    """Stored configs lack fields added later; those must take the value of the model that was stored."""
    old = DPA4Config.preset("tiny").to_dict()
    del old["scalar_density"]
    assert DPA4Config.from_dict(old).scalar_density is False
    assert DPA4Config.preset("tiny").scalar_density is True  # new models get the density


def test_scalar_density_reaches_the_energy_without_new_parameters():
    import torch

    from dpa4_core.data.batch import AtomsBatch
    from dpa4_core.data.paths import vendored
    from dpa4_core.data.readers import read_frames

    atoms = next(iter(read_frames(vendored("maml_MoNbTaW", "Mo_Surface.json.gz")))).atoms
    torch.manual_seed(0)
    with_density = DPA4(DPA4Config.preset("tiny"))
    without = DPA4(DPA4Config.preset("tiny", scalar_density=False))
    without.load_state_dict(with_density.state_dict())  # same parameter set: loads strictly
    batch = AtomsBatch.from_atoms([atoms], cutoff=6.0, dtype=torch.float32)
    e1 = with_density(batch, compute_forces=False, compute_stress=False)["energy"]
    e0 = without(batch, compute_forces=False, compute_stress=False)["energy"]
    assert not torch.allclose(e1, e0)


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(channels=0), "channels"),
        (dict(lmax=7), "lmax"),
        (dict(mmax=4, lmax=3), "mmax"),
        (dict(ffn="relu"), "ffn"),
        (dict(r_in=0.9, r_out=0.8), "r_in < r_out"),
        (dict(cutoff=-1.0), "cutoff"),
        (dict(hidden=30, attn_heads=4), "divisible"),
        (dict(zbl="yes"), "zbl"),
        (dict(scalar_density=1), "scalar_density"),
    ],
)
def test_bad_values_raise_clear_errors(changes, match):
    with pytest.raises(ConfigError, match=match):
        DPA4Config(**changes)
    # Callers that catch ValueError see the same message.
    with pytest.raises(ValueError, match=match):
        DPA4Config(**changes)


def test_one_config_error_for_model_and_training_configs():
    """A bad training config and a bad model field are caught by the same ``except ConfigError``."""
    from dpa4_core.train import TrainConfig
    from dpa4_core.train.config import load_config

    caught = []
    for bad in (lambda: load_config({"data": {"train": ["x"]}, "steps": 0}, TrainConfig),
                lambda: DPA4Config.preset("huge")):
        try:
            bad()
        except ConfigError as exc:
            caught.append(str(exc))
    assert len(caught) == 2 and "steps" in caught[0] and "huge" in caught[1]
