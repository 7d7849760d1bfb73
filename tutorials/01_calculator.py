# %% [markdown]
# # 1. DPA4 as an ASE calculator
#
# `DPA4Calculator` is an ordinary ASE calculator: attach it to `Atoms` and ask for energy, forces and stress
# (eV, eV/A, eV/A^3 with ASE's sign: tension positive). Here we
#
# 1. compare DPA4 with DFT on a real Mo-Nb-Ta-W structure from the vendored data,
# 2. fit an equation of state of bcc Mo with `ase.eos`, and
# 3. run a short Langevin NVT molecular dynamics with ASE.
#
# Run: `python tutorials/01_calculator.py [--out DIR]` (files go to `DIR/01_calculator`);
# `DPA4_TUTORIAL_QUICK=1` makes it smaller.

# %%
import time

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from ase import units
from ase.build import bulk
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.optimize import FIRE

from _helpers import data_file, model_checkpoint, output_dir, quick

from dpa4_core import DPA4Calculator
from dpa4_core.data.readers import read_frames

QUICK = quick()
OUT = output_dir("01_calculator")
print(f"output folder: {OUT}  (quick mode: {QUICK})")

# %% [markdown]
# ## The model
# The package ships a starter checkpoint (a tiny DPA4 trained on the vendored Mo-Nb-Ta-W DFT data).
# `DPA4Calculator()` with no argument loads it; here we pass the path explicitly.
# `dtype="float64"` is available when you need tighter finite differences; float32 is the fast default.

# %%
checkpoint = model_checkpoint(OUT)
calc = DPA4Calculator.from_checkpoint(checkpoint, device="cpu", dtype="float32")
print(f"cutoff {calc.cutoff} A, {sum(p.numel() for p in calc.model.parameters())} parameters")

# %% [markdown]
# ## Energy, forces and stress of a real structure
# `read_frames` reads the Materials Virtual Lab JSON (pymatgen structures + VASP labels) and converts the DFT
# labels to ASE units and sign (the raw stress is in kbar, compression positive).

# %%
frame = next(read_frames(data_file("maml_MoNbTaW", "NbMo_SS.json.gz")))
atoms = frame.atoms.copy()
atoms.calc = calc
energy = atoms.get_potential_energy()
forces = atoms.get_forces()
stress = atoms.get_stress()  # Voigt xx yy zz yz xz xy, eV/A^3
n = len(atoms)
print(f"structure: {atoms.get_chemical_formula()} ({n} atoms), source {frame.source}")
print(f"energy per atom   DPA4 {energy / n:9.4f}   DFT {frame.energy / n:9.4f} eV/atom   "
      f"diff {1000 * (energy - frame.energy) / n:7.1f} meV/atom")
print(f"force MAE vs DFT  {1000 * np.abs(forces - frame.forces).mean():.1f} meV/A "
      f"(DFT forces range up to {np.abs(frame.forces).max():.3f} eV/A)")
dft_voigt = frame.stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
print("stress (GPa, xx yy zz yz xz xy)")
print("  DPA4", " ".join(f"{x:7.2f}" for x in stress / units.GPa))
print("  DFT ", " ".join(f"{x:7.2f}" for x in dft_voigt / units.GPa))
print("per-atom energies sum to the total:", np.isclose(atoms.get_potential_energies().sum(), energy))

# %% [markdown]
# ## Equation of state of bcc Mo
# First relax the cell of a conventional bcc cube (ASE's FIRE on `FrechetCellFilter`: positions and cell), then
# scale it around the minimum, compute the energy at each volume and fit Birch-Murnaghan with `ase.eos`.
# For reference, PBE gives a = 3.16 A and B = 260 GPa for Mo (experiment: 3.147 A, 263 GPa).

# %%
mo = bulk("Mo", "bcc", a=3.16, cubic=True)
mo.calc = calc
FIRE(FrechetCellFilter(mo), logfile=None).run(fmax=0.005, steps=200)
print(f"relaxed bcc Mo: a = {mo.cell.lengths()[0]:.4f} A, stress {np.abs(mo.get_stress()).max() / units.GPa:.3f} GPa")
scales = np.linspace(0.94, 1.06, 5 if QUICK else 9)
volumes, energies = [], []
for s in scales:
    strained = mo.copy()
    strained.set_cell(mo.cell * s ** (1 / 3), scale_atoms=True)  # volume scaled by s
    strained.calc = calc
    volumes.append(strained.get_volume() / len(strained))
    energies.append(strained.get_potential_energy() / len(strained))
eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
v0, e0, b = eos.fit()
a0 = (2 * v0) ** (1 / 3)  # two atoms per conventional cube
print(f"bcc Mo: V0 = {v0:.3f} A^3/atom, a0 = {a0:.3f} A, E0 = {e0:.4f} eV/atom, B = {b / units.GPa:.0f} GPa")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(volumes, energies, "o", label="DPA4")
v_fine = np.linspace(min(volumes), max(volumes), 100)
ax.plot(v_fine, eos.func(v_fine, *eos.eos_parameters), "-", label=f"Birch-Murnaghan, B = {b / units.GPa:.0f} GPa")
ax.set_xlabel("volume (A^3/atom)")
ax.set_ylabel("energy (eV/atom)")
ax.set_title("bcc Mo equation of state")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "01_calculator_eos.png", dpi=120)
plt.close(fig)
print(f"wrote {OUT / '01_calculator_eos.png'}")

# %% [markdown]
# ## Langevin NVT molecular dynamics
# A 2x2x2 supercell of the conventional cube (16 atoms) at 300 K, 1 fs steps. The calculator keeps its
# neighbour list while atoms move less than half the skin, so MD steps are cheap. (The same run is one call
# with `dpa4_core.dynamics.ase_md.run_md(atoms, calc, "nvt_langevin", steps=...)`.)

# %%
md_atoms = bulk("Mo", "bcc", a=a0, cubic=True).repeat((2, 2, 2))
md_atoms.calc = calc
thermalize_momenta(md_atoms, temperature_K=300, rng=np.random.default_rng(0))
Stationary(md_atoms)
dyn = Langevin(md_atoms, timestep=1.0 * units.fs, temperature_K=300, friction=0.02 / units.fs, fixcm=False,
               rng=np.random.default_rng(1))
log = {"t": [], "epot": [], "etot": [], "T": []}


def record():
    epot = md_atoms.get_potential_energy() / len(md_atoms)
    ekin = md_atoms.get_kinetic_energy() / len(md_atoms)
    log["t"].append(dyn.get_time() / units.fs)
    log["epot"].append(epot)
    log["etot"].append(epot + ekin)
    log["T"].append(md_atoms.get_temperature())


dyn.attach(record, interval=5)
n_steps = 40 if QUICK else 400
start = time.perf_counter()
dyn.run(n_steps)
elapsed = time.perf_counter() - start
print(f"MD: {n_steps} steps in {elapsed:.1f} s ({1000 * elapsed / n_steps:.0f} ms/step), "
      f"{calc.neighbor_list_builds} neighbour-list builds")
second_half = log["T"][len(log["T"]) // 2:]
print(f"mean temperature over the second half: {np.mean(second_half):.0f} K (target 300 K)")

fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(5, 5), sharex=True)
ax1.plot(log["t"], log["epot"], label="potential")
ax1.plot(log["t"], log["etot"], label="potential + kinetic")
ax1.set_ylabel("energy (eV/atom)")
ax1.legend()
ax2.plot(log["t"], log["T"])
ax2.axhline(300, color="grey", lw=1)
ax2.set_xlabel("time (fs)")
ax2.set_ylabel("T (K)")
fig.suptitle("bcc Mo, Langevin NVT 300 K")
fig.tight_layout()
fig.savefig(OUT / "01_calculator_md.png", dpi=120)
plt.close(fig)
print(f"wrote {OUT / '01_calculator_md.png'}")
print("tutorial 01 done")
