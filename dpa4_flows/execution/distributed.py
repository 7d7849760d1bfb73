"""Run dpa4 flows on clusters: FireWorks and jobflow-remote, with a persistent store.

Both engines deserialise each job in its own process, possibly on another machine, and
write outputs to the JobStore they were given, so that store must outlive the process and
be reachable from every worker: ``mongo_store()`` on a cluster, or ``embedded_store(path)``
with ``path`` on a file system every worker sees (one machine; sqlite is not safe on NFS).

- FireWorks: ``fireworks_workflow(flow, store)`` -> ``LaunchPad.add_wf``, then ``rlaunch`` /
  ``qlaunch`` on the workers (FireWorks needs a MongoDB server for its own LaunchPad).
- jobflow-remote: a project file (``examples/jobflow-remote/dpa4.yaml``) names the queue
  database, the JobStore and the workers; ``load_remote_project`` validates it offline,
  ``remote_submission`` builds exactly the documents ``jf`` would insert for a flow (to
  check a flow before submitting), and ``submit_remote`` submits (needs the queue DB).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpa4_flows.execution.stores import DATA_STORE, StoreConfigError, check_persistent

if TYPE_CHECKING:
    from fireworks import Workflow
    from jobflow import Flow, Job, JobStore

logger = logging.getLogger(__name__)


class RemoteConfigError(ValueError):
    """A jobflow-remote project file is invalid or cannot run dpa4 flows."""


def fireworks_workflow(flow: Flow | Job, store: JobStore, **kwargs: Any) -> Workflow:
    """Convert ``flow`` to a FireWorks ``Workflow`` whose jobs write to ``store``.

    Args:
        flow: the flow or job.
        store: persistent JobStore with a ``data`` store (``embedded_store`` with an absolute
            path, or ``mongo_store``); it is serialised into every Firework.
        **kwargs: passed to ``jobflow.managers.fireworks.flow_to_workflow`` (``name``,
            ``metadata``, ``allow_external_references``).

    Raises:
        StoreConfigError: ``store`` is in memory, has a relative path or no ``data`` store
            (each Firework would write to its own throw-away copy).
    """
    from jobflow.managers.fireworks import flow_to_workflow

    check_persistent(store)
    return flow_to_workflow(flow, store=store, **kwargs)


def load_remote_project(path: str | os.PathLike) -> Any:
    """Read and validate a jobflow-remote project file (YAML/JSON) without touching a database.

    Returns:
        ``jobflow_remote.config.base.Project``.

    Raises:
        RemoteConfigError: invalid file, no worker, or a JobStore without a ``data`` store
            (atomate2 jobs need it).
        ImportError: jobflow-remote is not installed (``pip install dpa4[distributed]``).
    """
    from jobflow_remote.config.base import Project
    from monty.serialization import loadfn
    from pydantic import ValidationError

    path = Path(path).expanduser().resolve()
    try:
        project = Project.model_validate(loadfn(path))
    except (ValidationError, OSError) as err:
        raise RemoteConfigError(f"invalid jobflow-remote project {path}: {err}") from err
    if not project.workers:
        raise RemoteConfigError(f"project {project.name!r} in {path} defines no worker")
    jobstore = project.get_jobstore()
    if jobstore is None or DATA_STORE not in jobstore.additional_stores:
        raise RemoteConfigError(
            f"project {project.name!r}: its jobstore needs a '{DATA_STORE}' additional store")
    return project


def remote_submission(flow: Flow | Job, project: Any, worker: str | None = None,
                      first_db_id: int = 1, **kwargs: Any) -> tuple[dict, list[dict]]:
    """The flow document and job documents jobflow-remote would insert for ``flow``; no DB.

    Uses jobflow-remote's own builders (``get_initial_job_doc_dict``,
    ``get_initial_flow_doc_dict``), with the checks ``submit_flow`` makes first.

    Args:
        flow: the flow or job.
        project: a ``Project`` (``load_remote_project``).
        worker: worker name (default: the project's first).
        first_db_id: db_id of the first job (the queue assigns the real ones).
        **kwargs: ``exec_config``, ``resources``, ``priority`` as in ``submit_flow``.

    Raises:
        RemoteConfigError: unknown worker, or a job needs an additional store the
            project's jobstore lacks.
    """
    from jobflow.core.flow import get_flow
    from jobflow_remote.jobs.data import get_initial_flow_doc_dict, get_initial_job_doc_dict
    from jobflow_remote.remote.data import check_additional_stores

    worker = worker or next(iter(project.workers))
    if worker not in project.workers:
        raise RemoteConfigError(f"worker {worker!r} not in project {project.name!r}; "
                                f"known: {sorted(project.workers)}")
    flow = get_flow(flow, allow_external_references=kwargs.pop("allow_external_references", False))
    jobstore = project.get_jobstore()
    prefix = project.queue.db_id_prefix or ""
    job_docs = []
    for i, (job, parents) in enumerate(flow.iterflow()):
        missing = check_additional_stores(job, jobstore)
        if missing:
            raise RemoteConfigError(f"job {job.name!r} needs additional store(s) {missing} "
                                    f"that project {project.name!r} does not define")
        job_docs.append(get_initial_job_doc_dict(
            job, parents, f"{prefix}{first_db_id + i}", worker=worker,
            exec_config=kwargs.get("exec_config"), resources=kwargs.get("resources"),
            priority=kwargs.get("priority", 0)))
    return get_initial_flow_doc_dict(flow, job_docs), job_docs


def submit_remote(flow: Flow | Job, project: str | None = None, worker: str | None = None,
                  **kwargs: Any) -> list[str]:
    """Submit ``flow`` to jobflow-remote's queue (``jf`` project ``project``); returns db_ids.

    Needs the project's queue MongoDB. Start the runner with ``jf runner start``.
    """
    from jobflow_remote import submit_flow

    return submit_flow(flow, worker=worker, project=project, **kwargs)


__all__ = ["RemoteConfigError", "StoreConfigError", "fireworks_workflow", "load_remote_project",
           "remote_submission", "submit_remote"]
