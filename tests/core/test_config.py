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
    ],
)
def test_bad_values_raise_clear_errors(changes, match):
    with pytest.raises(ConfigError, match=match):
        DPA4Config(**changes)
    assert issubclass(ConfigError, ValueError)
