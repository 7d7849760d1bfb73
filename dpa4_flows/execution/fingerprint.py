"""The flow fingerprint: one stable hash that says whether two flows are the same work.

Hashed per job, in flow order: the name, the function's import path (for a Maker's ``make``,
the Maker with all its settings) and the inputs. Every uuid of the flow's own jobs is
replaced by the job's position, so two builds of the same flow (fresh random uuids) match,
and so does the flow reloaded from a workdir. Package versions (``@version``) are left out:
upgrading a library does not make a half-done flow a different one. A caller may leave out
more keys (``ignore``): settings that change how a job runs but not what it computes (a device,
a progress bar).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobflow import Flow, Job


def _canonical(obj: Any, labels: dict[str, str], drop: Collection[str]) -> Any:
    """``obj`` (already JSON-safe) with uuids replaced by labels and the ``drop`` keys dropped."""
    if isinstance(obj, dict):
        return {k: _canonical(v, labels, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_canonical(v, labels, drop) for v in obj]
    if isinstance(obj, str):
        return labels.get(obj, obj)
    return obj


def flow_fingerprint(flow: Flow | Job, ignore: Collection[str] = ()) -> str:
    """Hex sha256 of ``flow``'s jobs (names, function import paths, inputs), uuid-free.

    Args:
        flow: a jobflow ``Flow`` or a single ``Job``.
        ignore: keys left out wherever they occur in the inputs (e.g. ``("device", "progress")``).

    Returns:
        64 hex characters; equal for two builds of the same flow and for the flow reloaded
        from JSON, different when a job, its function or one of its inputs changes.
    """
    from jobflow.core.flow import get_flow
    from monty.json import jsanitize

    jobs = [job for job, _ in get_flow(flow, allow_external_references=True).iterflow()]
    labels: dict[str, str] = {}
    for i, job in enumerate(jobs):
        labels.setdefault(job.uuid, f"<job {i}>")
        for host in job.hosts:  # uuids of the enclosing flows
            labels.setdefault(host, f"<flow {len(labels)}>")
    drop = {"@version", *ignore}
    digest = hashlib.sha256()
    for job in jobs:
        doc = job.as_dict()
        part = {"name": job.name, "function": doc["function"], "args": doc["function_args"],
                "kwargs": doc["function_kwargs"]}
        part = _canonical(jsanitize(part, strict=True, enum_values=True), labels, drop)
        digest.update(json.dumps(part, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()
