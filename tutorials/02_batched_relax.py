# %% [markdown]
# # 2. Relaxing many structures at once with `relax_batch`
#
# Screening means relaxing thousands of small cells. One ASE optimiser per structure calls the model once per
# step per structure; `dpa4_core.dynamics.relax_batch` packs many structures into one model call, runs each
# one's FIRE (or L-BFGS) step on the batch, and swaps converged structures out for waiting ones
# ("in-flight batching"). Each structure follows the path ASE's `FIRE(FrechetCellFilter(atoms))` would take.
#
# Here we relax real Mo-Nb-Ta-W solid-solution cells from the vendored DFT data (positions rattled so there is
# work to do) both ways and compare energies, steps and time per structure.
#
# Run: `python tutorials/02_batched_relax.py [--out DIR]`; `DPA4_TUTORIAL_QUICK=1` makes it smaller.

# %%
import itertools
import json
import time

import numpy as np
import pandas as pd
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from _helpers import data_file, model_checkpoint, output_dir, quick

from dpa4_core import DPA4Calculator
from dpa4_core.dynamics import relax_batch
from dpa4_core.data.readers import read_frames

QUICK = quick()
OUT = output_dir("02_batched_relax")
print(f"output folder: {OUT}  (quick mode: {QUICK})")
checkpoint = model_checkpoint(OUT)

# %% [markdown]
# ## Candidate structures
# Frames from the binary solid-solution files (16-atom bcc-based cells), rattled by 0.05 A and strained by
# up to 2%, seeded so the run is reproducible. `relax_batch` takes ASE `Atoms` or pymatgen `Structure`s and
# returns the same type.

# %%
rng = np.random.default_rng(0)
files = ["NbMo_SS", "MoTa_SS", "MoW_SS", "NbTa_SS", "NbW_SS", "TaW_SS"]
structures = []
wanted = (0,) if QUICK else (0, 300)  # frame indices taken from each file
for name in files[:3] if QUICK else files[:4]:
    frames = list(itertools.islice(read_frames(data_file("maml_MoNbTaW", f"{name}.json.gz")), max(wanted) + 1))
    for index in wanted:
        atoms = frames[index].atoms.copy()
        atoms.rattle(0.05, seed=int(rng.integers(1 << 31)))
        strain = np.eye(3) + np.diag(rng.uniform(-0.02, 0.02, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.info["label"] = f"{name}#{index}"
        structures.append(atoms)
print(f"{len(structures)} structures, {sum(len(a) for a in structures)} atoms in total")

# %% [markdown]
# ## Batched relaxation
# `fmax` is ASE's criterion on the cell filter's generalised forces (eV/A). `max_atoms` caps the atoms per
# model call (the batch budget); a larger budget means fewer, bigger calls.

# %%
fmax, max_steps = 0.05, 40 if QUICK else 300
start = time.perf_counter()
results = relax_batch(structures, str(checkpoint), fmax=fmax, max_steps=max_steps, relax_cell=True,
                      optimizer="fire", max_atoms=256, dtype="float32", progress=False)
t_batched = time.perf_counter() - start
print(f"relax_batch: {len(results)} structures in {t_batched:.1f} s")

# %% [markdown]
# ## The same, one structure at a time with ASE
# FIRE on `FrechetCellFilter` (positions and cell) with the DPA4 calculator: the textbook ASE recipe.

# %%
calc = DPA4Calculator.from_checkpoint(checkpoint, dtype="float32")
ase_rows = []
start = time.perf_counter()
for atoms in structures:
    work = atoms.copy()
    work.calc = calc
    opt = FIRE(FrechetCellFilter(work), logfile=None)
    converged = opt.run(fmax=fmax, steps=max_steps)
    ase_rows.append({"energy": work.get_potential_energy(), "steps": opt.nsteps, "converged": bool(converged),
                     "volume": work.get_volume()})
t_ase = time.perf_counter() - start
print(f"ASE one at a time: {len(structures)} structures in {t_ase:.1f} s")

# %% [markdown]
# ## Per-structure results
# Energies per atom from both routes, steps taken, final volume change. The two routes take the same
# optimiser path, so steps and energies agree up to float32 round-off (long relaxations can drift apart by a
# step or two once round-off changes FIRE's decisions).

# %%
rows = []
for atoms, res, ref in zip(structures, results, ase_rows):
    n = len(atoms)
    rows.append({
        "structure": atoms.info["label"],
        "formula": atoms.get_chemical_formula(),
        "E batched (eV/at)": round(res.energy / n, 5),
        "E ASE (eV/at)": round(ref["energy"] / n, 5),
        "|dE| (meV/at)": round(1000 * abs(res.energy - ref["energy"]) / n, 3),
        "steps batched": res.steps,
        "steps ASE": ref["steps"],
        "converged": res.converged,
        "fmax (eV/A)": round(res.fmax, 4),
        "dV (%)": round(100 * (res.structure.get_volume() / atoms.get_volume() - 1), 2),
    })
table = pd.DataFrame(rows)
with pd.option_context("display.width", 200, "display.max_columns", 20):
    print(table.to_string(index=False))
print(f"converged: {int(table['converged'].sum())}/{len(table)}; "
      f"largest |dE| batched vs ASE: {table['|dE| (meV/at)'].max():.3f} meV/atom")
print(f"time per structure: batched {t_batched / len(structures):.2f} s, ASE {t_ase / len(structures):.2f} s "
      f"(speed-up {t_ase / t_batched:.1f}x on this CPU)")
table.to_csv(OUT / "relax_results.csv", index=False)
(OUT / "timing.json").write_text(json.dumps({"batched_s": t_batched, "ase_s": t_ase, "n": len(structures)}))
print(f"wrote {OUT / 'relax_results.csv'}")

# %% [markdown]
# ## What a `RelaxResult` holds
# `structure` (same type as the input, with a `SinglePointCalculator` on Atoms), `energy` (eV), `forces`
# (eV/A), `stress` (3x3, eV/A^3), `steps`, `converged`, `fmax`, optional `trajectory`, and `error` when a
# structure was given up (non-finite energy). Unconverged results are flagged, never silently returned.

# %%
first = results[0]
print({k: (v if np.isscalar(v) or v is None else type(v).__name__) for k, v in vars(first).items()})
print("tutorial 02 done")
