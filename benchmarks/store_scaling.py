"""Write and read N job documents in each JobStore; print seconds.

Usage:
    python benchmarks/store_scaling.py                       # 10k and 100k, all stores
    python benchmarks/store_scaling.py --sizes 1000 --stores sqlite

Each store gets N documents shaped like jobflow's (uuid, index, output, metadata, hosts,
name, completed_at), written one job at a time through ``JobStore.update`` as a running flow
does, then read back as a reference resolution does: the latest index of a uuid, then its
output (2 queries per job).

MontyStore and mongomock keep no indexes, so each operation scans the collection and the
total is ~O(N^2). For them the script measures two small sizes, fits
``T(N) = a*N + b*N^2`` and prints the extrapolation, labelled ``extrapolated``, instead of
running for hours. The indexed SQLiteStore (``embedded_store``) is measured at every size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

from tqdm.auto import tqdm


def _docs(n: int, seed: int = 0) -> list[dict]:
    flow = str(uuidlib.UUID(int=seed))
    return [{"uuid": str(uuidlib.UUID(int=seed * 10**7 + i + 1)), "index": 1,
             "output": {"energy": -3.1 * i, "forces": [[0.1, 0.2, 0.3]] * 4,
                        "formula": f"Si{i % 7 + 1}"},
             "metadata": {"candidate_id": f"cand-{i}"}, "hosts": [flow],
             "name": "relax", "completed_at": "2026-11-25T00:00:00"} for i in range(n)]


def _make(kind: str, where: Path):
    from dpa4_flows.execution.stores import embedded_store, memory_store, monty_store

    if kind == "sqlite":
        return embedded_store(where / "jobs.sqlite")
    if kind == "monty":
        return monty_store(where / "monty")
    if kind == "memory":
        return memory_store()
    raise ValueError(f"unknown store kind {kind!r}; choose sqlite, monty or memory")


def measure(kind: str, n: int, progress: bool = True) -> tuple[float, float, float, float]:
    """(write, read) wall seconds then (write, read) CPU seconds of this process, for n
    documents in a fresh store of ``kind``. CPU time is the fairer number on a shared machine."""
    where = Path(tempfile.mkdtemp(prefix=f"store_{kind}_"))
    try:
        store = _make(kind, where)
        store.connect()
        docs = _docs(n)
        t0, c0 = time.perf_counter(), time.process_time()
        for d in tqdm(docs, desc=f"{kind} write {n}", disable=None if progress else True, leave=False):
            store.update(d, key=["uuid", "index"])
        t1, c1 = time.perf_counter(), time.process_time()
        for d in tqdm(docs, desc=f"{kind} read {n}", disable=None if progress else True, leave=False):
            last = store.query_one({"uuid": d["uuid"]}, ["index"], sort={"index": -1})
            out = store.query_one({"uuid": d["uuid"], "index": last["index"]}, ["output"])
            assert out["output"]["energy"] == d["output"]["energy"]
        t2, c2 = time.perf_counter(), time.process_time()
        store.close()
        return t1 - t0, t2 - t1, c1 - c0, c2 - c1
    finally:
        shutil.rmtree(where, ignore_errors=True)


def extrapolate(n1: int, t1: float, n2: int, t2: float, n: int) -> float:
    """Fit T = a*n + b*n^2 through (n1, t1), (n2, t2); return T(n) (b clipped at >= 0)."""
    b = (t2 / n2 - t1 / n1) / (n2 - n1)
    b = max(b, 0.0)
    a = t1 / n1 - b * n1
    return a * n + b * n * n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--stores", nargs="+", default=["sqlite", "monty", "memory"])
    p.add_argument("--fit-sizes", type=int, nargs=2, default=None,
                   help="small sizes measured for the unindexed stores (default: 200 400 for "
                        "monty, 500 1000 for memory)")
    p.add_argument("--measure-all", action="store_true",
                   help="measure the unindexed stores at the full sizes too (hours)")
    args = p.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'store':8} {'N':>8} {'write s':>10} {'read s':>10} {'write cpu':>10} {'read cpu':>10}  how")

    def row(kind, n, times, how, fmt=".2f"):
        print(f"{kind:8} {n:8d} " + " ".join(f"{t:10{fmt}}" for t in times) + f"  {how}", flush=True)

    for kind in args.stores:
        if kind == "sqlite" or args.measure_all:
            for n in args.sizes:
                row(kind, n, measure(kind, n), "measured")
            continue
        n1, n2 = args.fit_sizes or ((200, 400) if kind == "monty" else (500, 1000))
        m1, m2 = measure(kind, n1), measure(kind, n2)
        row(kind, n1, m1, "measured")
        row(kind, n2, m2, "measured")
        for n in args.sizes:
            row(kind, n, [extrapolate(n1, a, n2, b, n) for a, b in zip(m1, m2)],
                "EXTRAPOLATED from the two sizes above (a*N + b*N^2 fit)", ".0f")


if __name__ == "__main__":
    main()
