# %% [markdown]
# # 6. Scaling out: MongoDB, FireWorks and jobflow-remote
#
# The flows of tutorial 4 are plain jobflow flows, so moving from a laptop to a cluster changes two things:
# **where outputs are stored** (the `JobStore`) and **who runs the jobs** (the manager). Nothing in the makers
# or the flow changes.
#
# | | laptop / one node | cluster |
# |---|---|---|
# | store | `embedded_store(path)`: one sqlite file, indexed, several processes on one machine | `mongo_store(host=...)` or `configured_store()` (from `jobflow.yaml`) |
# | manager | `run_resumable(flow, store, workdir)` (resumable, several workers per node) | FireWorks (`fireworks_workflow` + `rlaunch`/`qlaunch`) or jobflow-remote (`submit_remote` + `jf runner start`) |
#
# Facts worth knowing (checked on this project's stack, see `shared/design/workflow-stack.md`):
# - Every store needs a `data` additional store: atomate2 force-field jobs put trajectories there and fail
#   without it. All of `dpa4_flows.execution.stores`'s factories add it.
# - Paths must be absolute: FireWorks and `run_locally(create_folders=True)` change directory per job.
# - FireWorks serialises the store into every Firework, so it must be persistent (not in memory);
#   `fireworks_workflow` refuses an in-memory store.
# - jobflow-remote keeps its queue in MongoDB; the workers need no database (they send JSON back).
# - sqlite is not safe on NFS: on a cluster use MongoDB for the JobStore.
# - DPA4 makers load the model once per process (`dpa4_flows.jobs.calculators`), however many jobs a worker runs.
#
# No MongoDB server is reachable here, so this tutorial runs what works offline: it builds the MongoDB stores
# (no connection is made until a job runs), runs a small screening flow through FireWorks on an in-process
# mock LaunchPad with the embedded store, and builds the exact jobflow-remote submission documents.
#
# Run: `python tutorials/06_scaling_out.py [--out DIR]`; `DPA4_TUTORIAL_QUICK=1` makes it smaller.

# %%
import os

from _helpers import REPO, model_checkpoint, output_dir, quick

from dpa4_flows.structures.candidates import bcc_orderings
from dpa4_flows.flows.screening import ScreeningMaker
from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
from dpa4_flows.execution.results import flow_results
from dpa4_flows.analysis.report import format_table, results_dataframe
from dpa4_flows.execution.stores import StoreConfigError, configured_store, embedded_store, memory_store, mongo_store

QUICK = quick()
OUT = output_dir("06_scaling_out")
print(f"output folder: {OUT}  (quick mode: {QUICK})")

# %% [markdown]
# ## 1. The MongoDB store
# Either explicitly (host and database, or a `mongodb://` / `mongodb+srv://` URI) ...

# %%
store = mongo_store(host="mongodb.cluster.example.org", database="dpa4", username="dpa4_user", password="secret")
print(type(store.docs_store).__name__, store.docs_store.collection_name, "+ additional stores",
      {k: v.collection_name for k, v in store.additional_stores.items()})

# %% [markdown]
# ... or from jobflow's own configuration, so `run_locally`, FireWorks and your scripts share one setting:
# put a `JOB_STORE` in `~/.jobflow.yaml`, or point `JOBFLOW_CONFIG_FILE` at a file such as
# `examples/jobflow.yaml` (shown below). `configured_store()` returns the store it declares (MongoDB here; the
# embedded store or any maggma store elsewhere) and refuses jobflow's silent in-memory fallback.

# %%
example = REPO / "examples" / "jobflow.yaml"
print("\n".join(line for line in example.read_text().splitlines()[12:22] if "password" not in line))
os.environ["JOBFLOW_CONFIG_FILE"] = str(example)
store = configured_store()
print("from jobflow.yaml:", type(store.docs_store).__name__, store.docs_store.host, store.docs_store.database)
os.environ["JOBFLOW_CONFIG_FILE"] = str(OUT / "no-such-jobflow.yaml")
try:
    configured_store()
except StoreConfigError as err:
    print("without a JOB_STORE:", str(err)[:96], "...")
del os.environ["JOBFLOW_CONFIG_FILE"]

# %% [markdown]
# ## 2. FireWorks
# `fireworks_workflow(flow, store)` converts the flow (one Firework per job, dependencies kept) and checks the
# store is persistent. In production: `lpad = LaunchPad.auto_load()` (your `my_launchpad.yaml`), `lpad.add_wf(wf)`,
# then `rlaunch rapidfire` on a node or `qlaunch` through the queue.
#
# Offline we replace FireWorks' MongoDB client by `mongomock` in this process (the trick FireWorks' own tests
# use) - **for demonstrations only**: the LaunchPad lives in memory. The outputs go to the embedded store on disk.

# %%
import fireworks.core.launchpad as launchpad_module
import mongomock
import mongomock.gridfs
from fireworks import FWorker
from fireworks.core.rocket_launcher import rapidfire

from dpa4_flows.execution.distributed import fireworks_workflow

checkpoint = model_checkpoint(OUT)
candidates = bcc_orderings(["Mo", "W"])
if QUICK:
    candidates = dict(list(candidates.items())[:2])
maker = ScreeningMaker(
    relax_maker=BatchRelaxMaker(calculator_kwargs={"model": str(checkpoint), "device": "cpu", "dtype": "float32"},
                                max_steps=20 if QUICK else 200, progress=False),
    chunk_size=2, prototypes=("bcc",),
)
flow = maker.make(list(candidates.values()), list(candidates))

try:
    fireworks_workflow(flow, memory_store())
except StoreConfigError as err:
    print("an in-memory store is refused:", str(err)[:90], "...")

db_file = OUT / "fireworks_jobs.sqlite"
for old in OUT.glob("fireworks_jobs.sqlite*"):
    old.unlink()
store = embedded_store(db_file)
workflow = fireworks_workflow(flow, store)
print(f"workflow {workflow.name!r}: {len(workflow.fws)} Fireworks")

launchpad_module.MongoClient = mongomock.MongoClient  # offline only: an in-memory LaunchPad
mongomock.gridfs.enable_gridfs_integration()
lpad = launchpad_module.LaunchPad(name="dpa4_tutorial", strm_lvl="ERROR")
lpad.reset("", require_password=False)
lpad.add_wf(workflow)
launches = OUT / "launches"
launches.mkdir(exist_ok=True)
rapidfire(lpad, FWorker(), m_dir=str(launches), strm_lvl="ERROR")  # what `rlaunch rapidfire` does
states = [lpad.get_fw_by_id(i).state for i in lpad.get_fw_ids()]
print(f"Fireworks: {states.count('COMPLETED')} of {len(states)} COMPLETED")

# %% [markdown]
# The outputs are in the JobStore, not in FireWorks: read them back exactly as in tutorial 4, from a new
# connection (any process, any time later).

# %%
fresh = embedded_store(db_file)
jobs = flow_results(fresh, flow.uuid, output_fields=["n_candidates"])
print(jobs[["name", "index"]].to_string(index=False))
report = fresh.query_one({"name": "DPA4 screening report"}, properties=["output"])["output"]
print(format_table(results_dataframe(report)))

# %% [markdown]
# ## 3. jobflow-remote
# A project file names the queue database, the JobStore and the workers (local shell, or Slurm over SSH):
# `examples/jobflow-remote/dpa4.yaml`. `load_remote_project` validates it with jobflow-remote's own models,
# offline, and refuses a JobStore without the `data` store.

# %%
from dpa4_flows.execution.distributed import load_remote_project, remote_submission

project = load_remote_project(REPO / "examples" / "jobflow-remote" / "dpa4.yaml")
for name, worker in project.workers.items():
    print(f"worker {name}: {worker.type}, scheduler {worker.scheduler_type}, resources {getattr(worker, 'resources', None)}")

# %% [markdown]
# `remote_submission` builds the documents `submit_flow` would insert into the queue, without a database: a
# dry run to check a flow before submitting it. For real: `submit_remote(flow, project="dpa4", worker="cluster")`
# then `jf runner start`; follow with `jf job list`; read results with
# `flow_results(project.get_jobstore(), flow.uuid)`.

# %%
flow_doc, job_docs = remote_submission(flow, project, worker="cluster")
print(f"flow {flow_doc['uuid'][:8]}...: {len(job_docs)} job documents")
for doc in job_docs:
    print(f"  db_id {doc['db_id']:>2}  {doc['state']:<8} {doc['job']['name']:<28} parents {len(doc['parents'])}")
print("tutorial 06 done")
