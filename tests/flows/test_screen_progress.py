"""The progress bar of ``dpa4 screen`` over candidates (issue 15): on a terminal it counts every candidate of the
finished chunks (a resumed run starts at what is done); with --quiet or off a terminal there is none."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from _tiny_model import save_tiny_checkpoint

    from dpa4_flows.structures.candidates import bcc_orderings

    tmp = tmp_path_factory.mktemp("progress")
    model = save_tiny_checkpoint(tmp / "tiny.pt", dtype="float32")
    folder = tmp / "cands"
    folder.mkdir()
    for key, s in bcc_orderings(["Mo", "W", "Nb"]).items():
        s.to(filename=str(folder / f"{key}.cif"))
    return ["--model", str(model), str(folder), "--max-steps", "3", "--chunk-size", "2"]


@pytest.mark.timeout(120)
def test_bar_counts_candidates_on_a_terminal_and_is_off_when_quiet(inputs, tmp_path, monkeypatch):
    from dpa4_core.cli import main as dpa4

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert dpa4(["screen", "--out", str(tmp_path / "a"), *inputs]) == 0
    text = terminal.getvalue()
    n = len(list(Path(inputs[2]).iterdir()))
    assert n > 2 and "candidates: 100%" in text and f"{n}/{n}" in text and f" 2/{n}" in text, text[-500:]
    assert "jobs:" not in text  # one bar: candidates, not jobs
    # resumed: the bar starts full; --quiet: no bar at all
    terminal.seek(0), terminal.truncate()
    assert dpa4(["screen", "--out", str(tmp_path / "a"), *inputs]) == 0
    assert "candidates: 100%" in terminal.getvalue() and f" 0/{n}" not in terminal.getvalue()
    terminal.seek(0), terminal.truncate()
    assert dpa4(["screen", "--out", str(tmp_path / "b"), *inputs, "--quiet"]) == 0
    assert "candidates" not in terminal.getvalue()


def test_chunk_sizes_and_a_missing_state_file(tmp_path):
    from dpa4_flows.screen_progress import chunk_sizes, finished_candidates

    assert chunk_sizes(5, 2) == {1: 2, 2: 2, 3: 1}
    assert finished_candidates(tmp_path / "state.sqlite", {1: 2}) == 0
