"""Read results back from a JobStore: a flow's jobs as a pandas DataFrame, one candidate's record.

Works on any JobStore (embedded, MongoDB, in memory). A flow is named by its uuid, the
``Flow`` object, or the workdir of ``run_resumable`` (whose persisted flow fixes the uuids);
its jobs are the documents whose ``hosts`` contain the flow uuid (dynamic jobs included).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpa4_flows.execution.workdir import load_flow

if TYPE_CHECKING:
    import pandas as pd
    from jobflow import Flow, JobStore

logger = logging.getLogger(__name__)

#: Job-document fields that every row of ``flow_results`` carries.
JOB_FIELDS = ["uuid", "index", "name", "completed_at"]


class UnknownFlowError(ValueError):
    """The store holds no job of the requested flow."""


class UnknownCandidateError(ValueError):
    """No job output of the flow mentions the requested candidate id."""


def flow_uuid(flow: str | os.PathLike | Flow) -> str:
    """The uuid of ``flow``: a uuid string, a ``Flow``, or a ``run_resumable`` workdir."""
    from jobflow import Flow

    if isinstance(flow, Flow):
        return flow.uuid
    if isinstance(flow, Path) or (isinstance(flow, str) and os.path.isdir(flow)):
        return load_flow(flow).uuid
    if isinstance(flow, str):
        return flow
    raise UnknownFlowError(f"expected a flow uuid, Flow or workdir, got {type(flow).__name__}")


def _latest(docs) -> dict[str, dict]:
    """Keep the highest index of each uuid (a replaced job's final output)."""
    out: dict[str, dict] = {}
    for doc in docs:
        prev = out.get(doc["uuid"])
        if prev is None or doc["index"] > prev["index"]:
            out[doc["uuid"]] = doc
    return out


def flow_results(store: JobStore, flow: str | os.PathLike | Flow, output_fields: list[str] | None = None,
                 max_level: int = 1, load: bool = False) -> pd.DataFrame:
    """One row per job of ``flow`` (its final index), outputs flattened into columns.

    Args:
        store: the JobStore the flow ran on.
        flow: flow uuid, ``Flow`` or ``run_resumable`` workdir.
        output_fields: dotted fields of the output to keep (e.g. ``["energy", "results"]``);
            None keeps the whole output.
        max_level: nesting depth flattened into ``output.a.b`` columns
            (``pandas.json_normalize``); deeper values stay as dicts/lists.
        load: also load blobs from the additional stores (``data``); slower.

    Returns:
        DataFrame with columns ``uuid, index, name, completed_at`` then ``output...`` columns,
        sorted by ``completed_at``. Non-dict outputs go to column ``output``.

    Raises:
        UnknownFlowError: no job document of that flow in the store.
    """
    import pandas as pd

    uuid = flow_uuid(flow)
    props = [*JOB_FIELDS, *([f"output.{f}" for f in output_fields] if output_fields else ["output"])]
    store.connect()
    docs = _latest(store.query({"hosts": uuid}, properties=props, load=load))
    if not docs:
        raise UnknownFlowError(f"no job of flow {uuid} in store {store.name}")
    rows = []
    for doc in docs.values():
        row = {k: doc.get(k) for k in JOB_FIELDS}
        out = doc.get("output")
        row["output"] = out
        rows.append(row)
    frame = pd.json_normalize(rows, max_level=max_level)
    # json_normalize leaves an all-NaN "output" column when every output was a dict.
    if "output" in frame and frame["output"].isna().all():
        frame = frame.drop(columns="output")
    return frame.sort_values("completed_at", kind="stable").reset_index(drop=True)


def _find(obj: Any, candidate_id: str, path: str, hits: list[tuple[str, dict]]) -> None:
    """Collect every dict under ``obj`` whose ``candidate_id`` matches.

    (Not ``entry_id``: decomposition products of *other* candidates carry that.)
    """
    if isinstance(obj, dict):
        if obj.get("candidate_id") == candidate_id:
            hits.append((path, obj))
            return
        for k, v in obj.items():
            _find(v, candidate_id, f"{path}.{k}" if path else k, hits)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _find(v, candidate_id, f"{path}.{i}", hits)


def candidate_record(store: JobStore, flow: str | os.PathLike | Flow, candidate_id: str,
                     load: bool = False) -> dict[str, Any]:
    """Everything the flow's jobs stored about one candidate.

    Scans the outputs of the flow's jobs for dicts whose ``candidate_id`` equals
    ``candidate_id``: the relaxation result in a chunk's ``BatchRelaxDoc``, the
    ``StabilityDoc``, the report row, and any job whose metadata names the candidate.

    Args:
        store: the JobStore the flow ran on.
        flow: flow uuid, ``Flow`` or ``run_resumable`` workdir.
        candidate_id: the id given to the candidate when the flow was made.
        load: load blobs from the ``data`` store (trajectories) as well.

    Returns:
        ``{"candidate_id", "flow_uuid", "records": [{"job", "uuid", "index", "path", "data"}],
        "summary": {...}}``, records in completion order, ``path`` being where in the output
        the candidate was found; ``summary`` merges the scalar fields of all records (later
        jobs win), e.g. ``energy_per_atom``, ``e_above_hull``, ``is_stable``.

    Raises:
        UnknownFlowError, UnknownCandidateError.
    """
    uuid = flow_uuid(flow)
    store.connect()
    docs = _latest(store.query({"hosts": uuid}, properties=[*JOB_FIELDS, "output", "metadata"],
                               load=load))
    if not docs:
        raise UnknownFlowError(f"no job of flow {uuid} in store {store.name}")
    records = []
    for doc in sorted(docs.values(), key=lambda d: d.get("completed_at") or ""):
        hits: list[tuple[str, dict]] = []
        if (doc.get("metadata") or {}).get("candidate_id") == candidate_id:
            hits.append(("output", doc.get("output")))
        else:
            _find(doc.get("output"), candidate_id, "output", hits)
        records += [{"job": doc["name"], "uuid": doc["uuid"], "index": doc["index"], "path": p,
                     "data": d} for p, d in hits]
    if not records:
        raise UnknownCandidateError(f"no output of flow {uuid} mentions candidate {candidate_id!r}")
    summary: dict[str, Any] = {}
    for rec in records:
        if isinstance(rec["data"], dict):
            for k, v in rec["data"].items():
                if isinstance(v, (str, int, float, bool)) or (v is None and k not in summary):
                    summary[k] = v
    return {"candidate_id": candidate_id, "flow_uuid": uuid, "records": records, "summary": summary}
