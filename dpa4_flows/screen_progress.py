"""The progress bar of ``dpa4 screen`` over candidates (tqdm on stderr; off with ``--quiet`` or off a terminal).

A thread reads the run's job states (``<out>/work/state.sqlite``, read-only) twice a second and counts the
candidates of the finished relaxation chunks, whichever worker process ran them; the chunk log lines go on as
before. A resumed run starts the bar at what is already done.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from tqdm.auto import tqdm

CHUNK_PREFIX = "DPA4 batch relax "  # the candidate chunks' job names: "<prefix><index from 1>"


def chunk_sizes(n_candidates: int, chunk: int) -> dict[int, int]:
    """{chunk index (from 1): candidates in it}."""
    return {i + 1: min(chunk, n_candidates - start) for i, start in enumerate(range(0, n_candidates, chunk))}


def finished_candidates(state_file: Path, sizes: dict[int, int]) -> int:
    """Candidates in the chunks the state file records as done (0 while it does not exist)."""
    if not state_file.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state_file}?mode=ro", uri=True, timeout=1.0) as conn:
            names = conn.execute("SELECT name FROM jobs WHERE state = 'done' AND name LIKE ?",
                                 (CHUNK_PREFIX + "%",)).fetchall()
    except sqlite3.Error:  # a state file being created or rebuilt: try again at the next tick
        return -1
    done = 0
    for (name,) in names:
        tail = name[len(CHUNK_PREFIX):]
        done += sizes.get(int(tail), 0) if tail.isdigit() else 0
    return done


class CandidateProgress:
    """Context manager: a tqdm bar over ``n_candidates`` fed from ``state_file`` while the run lasts."""

    def __init__(self, state_file: Path, n_candidates: int, chunk: int, enabled: bool = True, file=None,
                 interval: float = 0.5):
        self.state_file, self.sizes, self.interval = state_file, chunk_sizes(n_candidates, chunk), interval
        self.bar = tqdm(total=n_candidates, desc="candidates", unit="cand", file=file,
                        initial=max(finished_candidates(state_file, self.sizes), 0) if enabled else 0,
                        disable=None if enabled else True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True, name="dpa4-screen-progress")

    def update(self) -> None:
        done = finished_candidates(self.state_file, self.sizes)
        if done >= 0 and done != self.bar.n:
            self.bar.n = done
            self.bar.refresh()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.update()

    def __enter__(self) -> CandidateProgress:
        if not self.bar.disable:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self.bar.disable:
            self.update()
        self.bar.close()
