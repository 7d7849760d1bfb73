# %% [markdown]
# # 4. A jobflow screening flow: embedded store, resume, results as a DataFrame
#
# `dpa4_flows.flows.screening.ScreeningMaker` builds an ordinary jobflow `Flow`:
# chunks of candidates relaxed on the batched engine -> elemental references (bcc, fcc, hcp relaxed with the
# same model) -> convex hull and stability -> report. Every job is a jobflow job, so the flow runs with
# `run_locally`, FireWorks or jobflow-remote. Here we run it with `dpa4_flows.execution.runner.run_resumable` on the
# embedded on-disk store (one sqlite file, no database server): interrupt it, run again, and only the
# unfinished jobs run. Then we read the results back as pandas DataFrames and draw the hull.
#
# Run: `python tutorials/04_screening_flow.py [--out DIR]`; `DPA4_TUTORIAL_QUICK=1` makes it smaller.
# `dpa4 screen` (or `workflows/screen_candidates.py`) is the ready-made command-line version of this tutorial.

# %%
import shutil

from _helpers import model_checkpoint, output_dir, quick

from dpa4_flows.structures.candidates import bcc_orderings
from dpa4_flows.flows.screening import ScreeningMaker
from dpa4_flows.jobs.batch_relax import BatchRelaxMaker
from dpa4_flows.execution.results import candidate_record, flow_results
from dpa4_flows.analysis.report import format_table, plot_hull, results_dataframe
from dpa4_flows.execution.runner import run_resumable
from dpa4_flows.schemas import ScreeningReport
from dpa4_flows.execution.stores import embedded_store

QUICK = quick()
OUT = output_dir("04_screening_flow")
print(f"output folder: {OUT}  (quick mode: {QUICK})")
checkpoint = model_checkpoint(OUT)
# A fresh start each time the tutorial runs (a real screening keeps these to resume).
for old in ("jobs.sqlite", "work", "results"):
    path = OUT / old
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
for wal in OUT.glob("jobs.sqlite-*"):
    wal.unlink()

# %% [markdown]
# ## Candidates
# bcc-derived orderings in a 16-site cell (B2, B32, D0_3 both ways for each pair, L2_1 for each triple, the
# quaternary Y type),
# lattice constants from Vegard's law. Any list of pymatgen `Structure`s works, e.g. from
# `dpa4_flows.structures.candidates.read_candidates(["my_cifs/"])`.

# %%
elements = ["Mo", "W"] if QUICK else ["Mo", "Nb", "Ta", "W"]
candidates = bcc_orderings(elements)
print(f"{len(candidates)} candidates in {'-'.join(elements)}: {', '.join(candidates)}")

# %% [markdown]
# ## The flow
# Makers are dataclasses: the relaxation maker names the model (an absolute checkpoint path: jobs may run in
# other folders or on other machines), the force criterion and the step limit. `chunk_size` candidates go into
# one relaxation job. The flow's output is the `ScreeningReport`.

# %%
relax_maker = BatchRelaxMaker(
    calculator_kwargs={"model": str(checkpoint), "device": "cpu", "dtype": "float32"},
    fmax=0.05, max_steps=30 if QUICK else 200, progress=False,
)
# The starter model was trained on bcc-based structures only: relax only bcc elemental references (the default
# also relaxes fcc and hcp, which such a model extrapolates to, sometimes too low; see tutorial 5).
maker = ScreeningMaker(relax_maker=relax_maker, chunk_size=2 if QUICK else 8, prototypes=("bcc",),
                       output_dir=str(OUT / "results"))
flow = maker.make(list(candidates.values()), list(candidates))
print(f"flow {flow.uuid}: {len(flow.jobs)} jobs")
for job in flow.jobs:
    print(f"  {job.name}")

# %% [markdown]
# ## Run, interrupted
# `embedded_store(path)` is a `jobflow.JobStore` in one sqlite file, with the `data` additional store that
# atomate2 jobs need. `run_resumable` persists the flow in `workdir` (fixing its uuids) and records each job's
# state there. `max_jobs=2` stops this worker after two jobs: the same situation as a Ctrl-C, a killed process
# or a reboot part-way through.

# %%
store = embedded_store(OUT / "jobs.sqlite")
workdir = OUT / "work"
summary = run_resumable(flow, store, workdir, max_jobs=2, progress=False)
states = {s["name"]: s["state"] for s in summary.values()}
for job in flow.jobs:
    print(f"  {states[job.name]:<8} {job.name}")
print(f"after the interruption: {sum(s == 'done' for s in states.values())} of {len(states)} jobs done")

# %% [markdown]
# ## Resume
# Call it again with the same store and workdir (in a new process you would rebuild the flow the same way or
# pass `flow=None` to run the persisted one). Finished jobs are skipped; only the rest runs.

# %%
summary = run_resumable(None, store, workdir, progress=False, ensure_success=True)
states = {s["name"]: s["state"] for s in summary.values()}
print(f"after resuming: {sum(s == 'done' for s in states.values())} of {len(states)} jobs done")

# %% [markdown]
# ## Query the store
# `flow_results` gives one row per job with chosen output fields flattened into columns; it works on any
# JobStore (embedded, MongoDB, in memory), long after the run, from another process.

# %%
jobs = flow_results(store, workdir, output_fields=["engine", "elapsed_time", "n_candidates", "n_stable"])
print(jobs.drop(columns=["uuid", "completed_at"]).to_string(index=False))

# %% [markdown]
# The report is the output of the last job. `results_dataframe` turns it into a table (energies in eV/atom);
# `format_table` prints it in meV/atom.

# %%
report_doc = next(s["output"] for s in summary.values() if s["name"] == "DPA4 screening report")
report = ScreeningReport(**report_doc)
table = results_dataframe(report)
print(format_table(table))
print(f"{report.n_stable} of {report.n_candidates} candidates on the hull; model {report.model_id[:19]}...")
print(f"the report job also wrote {report.csv_path} and {report.plot_path}")

# %% [markdown]
# Everything stored about one candidate (its relaxation, stability document and report row):

# %%
cid = table["candidate_id"].iloc[0]
record = candidate_record(store, workdir, cid)
print(f"{cid}: found in", [r["job"] for r in record["records"]])
print({k: record["summary"][k] for k in ("formula", "energy_per_atom", "e_above_hull", "is_stable", "converged")
       if k in record["summary"]})

# %% [markdown]
# ## Hull plot
# One panel per element pair: formation energy against composition, stable phases joined by the hull.

# %%
plot = plot_hull(report.stability, OUT / "04_screening_flow_hull.png", title=f"DPA4 screening, {'-'.join(elements)}")
print(f"wrote {plot}")
print("tutorial 04 done")
