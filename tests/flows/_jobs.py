"""Importable jobflow jobs for the store/resume/FireWorks tests (serialised flows store import paths).

Every job sleeps ``SLEEP`` seconds (environment ``DPA4_TEST_JOB_SLEEP``, default 0) so a test
can kill a run in the middle, and appends one line per execution to the file named by
``DPA4_TEST_JOB_LOG`` (if set), so a test can count how often each job really ran.
"""

from __future__ import annotations

import os
import time

from jobflow import Flow, Response, job


def _mark(tag: str) -> None:
    sleep = float(os.environ.get("DPA4_TEST_JOB_SLEEP", "0"))
    if sleep:
        time.sleep(sleep)
    log = os.environ.get("DPA4_TEST_JOB_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{tag}\n")
            fh.flush()


@job
def add(a: float, b: float, tag: str = "add") -> float:
    """a + b."""
    _mark(tag)
    return a + b


@job(data="trajectory")
def square_all(values: list[float], tag: str = "square") -> dict:
    """Squares, with a 'trajectory' saved to the ``data`` store like atomate2 jobs do."""
    _mark(tag)
    return {"trajectory": [v * v for v in values], "total": sum(v * v for v in values)}


@job
def gather(values: list[float], tag: str = "gather") -> float:
    """Sum of many outputs."""
    _mark(tag)
    return float(sum(values))


@job
def fail_if(x: float, threshold: float, tag: str = "fail") -> float:
    """Raise when x > threshold (a job failure that must not stop unrelated jobs)."""
    _mark(tag)
    if x > threshold:
        raise RuntimeError(f"x={x} above threshold {threshold}")
    return x


@job
def replace_with_add(x: float, tag: str = "replace") -> Response:
    """Replaced by add(x, 100): the final output of this uuid is x + 100."""
    _mark(tag)
    return Response(replace=add(x, 100, tag=f"{tag}.add"))


@job
def detour_then(x: float, tag: str = "detour") -> Response:
    """Outputs x, with a detour add(x, 1) that must finish before this job's children."""
    _mark(tag)
    return Response(output=x, detour=add(x, 1, tag=f"{tag}.add"))


@job
def fan_out(n: int, tag: str = "fanout") -> Response:
    """Adds a flow of n add jobs and a gather of them (a dynamic addition)."""
    _mark(tag)
    adds = [add(i, i, tag=f"{tag}.add{i}") for i in range(n)]
    total = gather([a.output for a in adds], tag=f"{tag}.gather")
    return Response(output=n, addition=Flow([*adds, total]))


def make_flow(n_chain: int = 4) -> Flow:
    """A flow exercising references, the data store, replace, detour, addition and gathering.

    Final result: ``gather`` of everything; deterministic, so two runs can be compared.
    """
    chain = [add(1, 1, tag="c0")]
    for i in range(1, n_chain):
        chain.append(add(chain[-1].output, i, tag=f"c{i}"))
    sq = square_all([c.output for c in chain], tag="sq")
    rep = replace_with_add(sq.output["total"], tag="rep")
    det = detour_then(rep.output, tag="det")
    fan = fan_out(3, tag="fan")
    after = add(det.output, rep.output, tag="after")
    final = gather([after.output, fan.output, sq.output["total"]], tag="final")
    return Flow([*chain, sq, rep, det, fan, after, final], output=final.output, name="resume-test")


@job
def stop_here(x: float, tag: str = "stop") -> Response:
    """Outputs x and stops its children (``Response.stop_children``)."""
    _mark(tag)
    return Response(output=x, stop_children=True)


@job
def describe(x, tag: str = "describe") -> str:
    """repr of its input: runs even when the input's job failed (with on_missing NONE)."""
    _mark(tag)
    return repr(x)
