# %% [markdown]
# # 5. Stability against your own references: `compute_stability` and the `StabilityDoc`
#
# `dpa4_flows.analysis.stability.compute_stability(candidates, references)` builds one convex hull (pymatgen
# `PhaseDiagram`, or `PatchedPhaseDiagram` from 5 elements) from reference entries and candidates, and returns a
# `StabilityDoc` per candidate: formation energy, energy above the hull, decomposition products, and the
# provenance (model and reference set). It runs outside jobflow; `StabilityMaker` is the same as a job.
#
# 1. Pure DFT: the Li-Fe-O set of pymatgen's own hull tests (a CSV of total energies) - the results must agree
#    with pymatgen.
# 2. DPA4: Mo-Ta orderings relaxed with DPA4 against elemental references relaxed with the same model and
#    saved as a user entries file.
# 3. Why references must come from the same energy model (Materials Project references vs DPA4).
#
# Run: `python tutorials/05_stability_and_hull.py [--out DIR]`; `DPA4_TUTORIAL_QUICK=1` makes it smaller.

# %%
import csv
import warnings

import numpy as np
import pandas as pd
from monty.serialization import dumpfn, loadfn
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedStructureEntry

from _helpers import data_file, model_checkpoint, output_dir, quick

from dpa4_core.dynamics import relax_batch
from dpa4_flows.structures.candidates import bcc_orderings
from dpa4_flows.flows.screening import elemental_prototype
from dpa4_flows.jobs.calculators import file_sha256
from dpa4_flows.analysis.report import results_dataframe
from dpa4_flows.analysis.stability import compute_stability

QUICK = quick()
OUT = output_dir("05_stability_and_hull")
print(f"output folder: {OUT}  (quick mode: {QUICK})")

# %% [markdown]
# ## 1. DFT energies from a CSV: Li-Fe-O
# Each row: a name, atom counts of Li, Fe and O, and the total energy (eV). Candidates and references can be
# plain dicts `{"composition" or "structure", "energy", "entry_id"}`, pymatgen entries, or atomate2 task
# documents. The references must contain every element of the candidates.

# %%
rows = list(csv.DictReader(open(data_file("pymatgen_entries", "pd_entries_test.csv"))))
items = []
for i, row in enumerate(rows):
    composition = {el: int(row[el]) for el in ("Li", "Fe", "O") if int(row[el])}
    items.append({"composition": composition, "energy": float(row["Final energy"]), "entry_id": f"{row['Name']}-{i}"})
references = [it for it in items if len(it["composition"]) == 1]
candidates = [it for it in items if len(it["composition"]) > 1]
print(f"{len(references)} elemental references, {len(candidates)} candidates")
docs = compute_stability(candidates, references)
stable = sorted({d.formula for d in docs if d.is_stable})
print(f"stable candidates ({len(stable)}): {', '.join(stable)}")

# %% [markdown]
# Check against pymatgen directly (one `PhaseDiagram` over everything) and against the assertions of
# pymatgen's own test for this file.

# %%
diagram = PhaseDiagram([PDEntry(Composition(it["composition"]), it["energy"]) for it in items])
direct = np.array([diagram.get_e_above_hull(PDEntry(Composition(it["composition"]), it["energy"]))
                   for it in candidates])
ours = np.array([d.e_above_hull for d in docs])
print(f"max |e_above_hull - pymatgen| = {np.abs(ours - direct).max():.2e} eV/atom")
expected = loadfn(data_file("pymatgen_entries", "pd_entries_test_expected.json"))
expected_compounds = {Composition(f).reduced_formula for f in expected["stable_reduced_formulas"]
                      if len(Composition(f).elements) > 1}
print("stable set equals pymatgen's test assertion:", set(stable) == expected_compounds)

# %% [markdown]
# ## What a `StabilityDoc` holds
# A pydantic model (units in the field descriptions); `model_dump()` gives a plain dict for a database.

# %%
doc = min(docs, key=lambda d: d.formation_energy_per_atom)
for name, field in type(doc).model_fields.items():
    value = getattr(doc, name)
    if name == "decomposition":
        value = [f"{p.formula} x {p.fraction:.3f}" for p in value]
    print(f"  {name:<26} {value!s:<44.44} {field.description}")
unstable = max(docs, key=lambda d: d.e_above_hull)
print(f"least stable: {unstable.formula}, {1000 * unstable.e_above_hull:.0f} meV/atom above the hull, decomposes to "
      + " + ".join(f"{p.fraction:.2f} {p.formula} ({p.entry_id})" for p in unstable.decomposition))

# %% [markdown]
# ## 2. DPA4 energies against user references from the same model
# Relax Mo-Ta orderings and the bcc/fcc/hcp elements with the same checkpoint, save the elemental energies as
# a pymatgen entries JSON file (what you would keep and reuse across screenings), and pass its path as the
# references. `model_id` records which checkpoint produced the energies.

# %%
checkpoint = model_checkpoint(OUT)
model_id = f"sha256:{file_sha256(checkpoint)}"
steps = 30 if QUICK else 200
cands = bcc_orderings(["Mo", "Ta"])
refs = {f"{el}-{p}": elemental_prototype(el, p) for el in ("Mo", "Ta") for p in ("bcc", "fcc", "hcp")}
relaxed = relax_batch(list(cands.values()) + list(refs.values()), str(checkpoint), fmax=0.05, max_steps=steps,
                      progress=False)
cand_relaxed, ref_relaxed = relaxed[:len(cands)], relaxed[len(cands):]
ref_entries = [ComputedStructureEntry(r.structure, r.energy, entry_id=f"dpa4:{name}")
               for name, r in zip(refs, ref_relaxed)]
for e in ref_entries:
    print(f"  {e.entry_id:<12} {e.energy_per_atom:9.4f} eV/atom")
for el in ("Mo", "Ta"):
    lowest = min((e for e in ref_entries if e.entry_id.startswith(f"dpa4:{el}-")), key=lambda e: e.energy_per_atom)
    print(f"  lowest {el} phase according to this model: {lowest.entry_id.split('-')[-1]} (DFT and experiment: bcc)")

# %% [markdown]
# **Sanity-check the references.** The starter model was trained on bcc-based structures only
# (`data/maml_MoNbTaW`): its fcc and hcp energies are extrapolations and may come out too low. The hull takes
# the lowest entry per element as the reference, so a wrong one shifts every formation energy of that element.
# Keep references inside the model's training domain; here, the bcc phases.

# %%
ref_entries = [e for e in ref_entries if e.entry_id.endswith("-bcc")]
ref_file = OUT / "dpa4_elemental_references.json"
dumpfn(ref_entries, ref_file)
print(f"saved {len(ref_entries)} reference entries to {ref_file.name}: {[e.entry_id for e in ref_entries]}")
cand_items = [{"structure": r.structure, "energy": r.energy, "entry_id": cid} for cid, r in zip(cands, cand_relaxed)]
print(f"relaxations converged: {sum(r.converged for r in relaxed)}/{len(relaxed)}")

# %% [markdown]
# Two hull conventions. `include_candidates_in_hull=True` (default): candidates compete with each other as well
# as with the references, so `e_above_hull >= 0`. `False` (Matbench Discovery style): the hull is the references
# only; a negative value means the candidate would lower the known hull.

# %%
with_cands = compute_stability(cand_items, ref_file, model_id=model_id)
refs_only = compute_stability(cand_items, ref_file, model_id=model_id, include_candidates_in_hull=False)
table = results_dataframe(with_cands)[["candidate_id", "formula", "formation_energy_per_atom", "e_above_hull",
                                       "is_stable"]]
table["e_above_ref_hull"] = table["candidate_id"].map({d.candidate_id: d.e_above_hull for d in refs_only})
for col in ("formation_energy_per_atom", "e_above_hull", "e_above_ref_hull"):
    table[col] = (1000 * table[col]).round(1)
print("energies in meV/atom")
print(table.to_string(index=False))
print(f"every doc names its references: {with_cands[0].reference_ids}, set {with_cands[0].reference_set_id[:12]}..., "
      f"model {with_cands[0].model_id[:19]}...")
pd.DataFrame([d.model_dump(exclude={"structure"}) for d in with_cands]).to_json(OUT / "stability_docs.json",
                                                                                 orient="records", indent=1)

# %% [markdown]
# ## 3. Do not mix energy models
# Matbench Discovery ships the Materials Project elemental references (PBE, MP settings, with MP2020
# corrections). Loaded with `monty.serialization.loadfn` they are a dict element -> `ComputedEntry`, and
# `compute_stability` would accept `list(mp_refs.values())`. But total energies from another DFT setup or from
# an ML model trained on other data differ by a constant per element, which goes straight into formation
# energies. Compare the per-atom energies of bcc Mo and Ta:

# %%
with warnings.catch_warnings():  # pymatgen warns about noble gases without electronegativity: irrelevant here
    warnings.simplefilter("ignore", UserWarning)
    mp_refs = loadfn(data_file("matbench_discovery_refs", "2023-02-07-mp-elemental-reference-entries.json.gz"))
for el in ("Mo", "Ta"):
    ours = min(e.energy_per_atom for e in ref_entries if e.entry_id.startswith(f"dpa4:{el}-"))
    mp = mp_refs[el].energy_per_atom
    print(f"  {el}: DPA4 {ours:9.4f}  MP ({mp_refs[el].entry_id}) {mp:9.4f} eV/atom  difference {1000 * (ours - mp):8.1f} meV/atom")
print("Use references computed with the same model (as above, or let ScreeningMaker relax them in the flow);")
print("MP references only fit models trained on MP-compatible energies.")
print("tutorial 05 done")
