# %% [markdown]
# # 7. atomate2's EOS, elastic and phonon flows with DPA4
#
# atomate2's force-field flows take any ASE calculator, so DPA4 runs them unchanged: name the calculator class
# with monty's `{"@module": ..., "@callable": ...}` spelling and pass its keyword arguments in
# `calculator_kwargs`. Here, on bcc W with the shipped starter model, we
#
# 1. fit an equation of state (`ForceFieldEosMaker`),
# 2. compute the elastic tensor (`ElasticMaker`), and
# 3. compute the phonon band structure and check it for imaginary modes (`PhononMaker`),
#
# all stored in the embedded store (`embedded_store`: one sqlite file, no server), so the results can be
# queried later like any jobflow store.
#
# Run: `python tutorials/07_atomate2_flows.py [--out DIR]`; `DPA4_TUTORIAL_QUICK=1` makes it smaller.
# atomate2's phonon flow needs `pip install "phonopy<4" seekpath`.

# %%
import shutil
import warnings

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from jobflow import run_locally
from pymatgen.analysis.eos import EOS
from pymatgen.core import Lattice, Structure
from pymatgen.phonon.plotter import PhononBSPlotter

from _helpers import model_checkpoint, output_dir, quick

from atomate2.forcefields.flows.elastic import ElasticMaker
from atomate2.forcefields.flows.eos import ForceFieldEosMaker
from atomate2.forcefields.flows.phonons import PhononMaker
from atomate2.forcefields.jobs import ForceFieldRelaxMaker
from dpa4_core import DPA4Calculator
from dpa4_flows.execution.stores import embedded_store

for note in ("Fixed symmetry relaxations", "Initial magnetic moments", "cd is deprecated"):  # library notices
    warnings.filterwarnings("ignore", message=note)
QUICK = quick()
OUT = output_dir("07_atomate2_flows")
print(f"output folder: {OUT}  (quick mode: {QUICK})")

# %% [markdown]
# ## DPA4 in atomate2's spelling
# atomate2 knows a closed list of force-field names, so `force_field_name="DPA4"` is refused; a dict that monty
# can decode to the calculator class is accepted by every force-field maker and `from_force_field_name`.
# `dtype="float64"` keeps the finite differences of the elastic and phonon flows clean.

# %%
checkpoint = model_checkpoint(OUT)
DPA4 = {"@module": "dpa4_core.calculator", "@callable": "DPA4Calculator"}
calculator_kwargs = {"checkpoint": str(checkpoint), "dtype": "float64"}
try:
    ForceFieldRelaxMaker(force_field_name="DPA4")
except ValueError as err:
    print(f'force_field_name="DPA4" is refused: {err}')
print("force_field_name =", DPA4, "with calculator_kwargs =", calculator_kwargs)
# The calculator records which model it runs (ASE databases and trajectories store this with every result):
params = DPA4Calculator(**calculator_kwargs).todict()
print(f"calculator parameters: model {params['model']}, sha256 {params['sha256'][:16]}..., dtype {params['dtype']}")

# %% [markdown]
# ## The store
# atomate2's force-field jobs put trajectories in an additional store named `data`; `embedded_store` has one.
# `run_locally(..., create_folders=True, root_dir=...)` runs each job in its own folder under the output folder.

# %%
for old in OUT.glob("atomate2.sqlite*"):
    old.unlink()
shutil.rmtree(OUT / "jobs", ignore_errors=True)
store = embedded_store(OUT / "atomate2.sqlite")


def run(flow):
    """Run a flow into the embedded store; stop at the first failed job."""
    run_locally(flow, store=store, create_folders=True, root_dir=OUT / "jobs", log=False, ensure_success=True)
    return flow.output.resolve(store)


tungsten = Structure(Lattice.cubic(3.17), ["W", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()
print(f"bcc W, primitive cell of {len(tungsten)} atom, a = 3.17 A before relaxation")

# %% [markdown]
# ## 1. Equation of state
# The flow relaxes the structure, then relaxes the atoms (not the cell) at `number_of_frames` volumes within
# +-5 % linear strain and fits several EOS forms; B0 for W is about 310 GPa in experiment, 300 GPa with PBE.

# %%
eos_maker = ForceFieldEosMaker.from_force_field_name(DPA4, calculator_kwargs=calculator_kwargs,
                                                     number_of_frames=5 if QUICK else 7)
eos = run(eos_maker.make(tungsten))["relax"]
fit = eos["EOS"]["birch_murnaghan"]
a0 = (2 * fit["v0"]) ** (1 / 3)  # conventional cubic cell of 2 atoms
print(f"EOS (Birch-Murnaghan): V0 = {fit['v0']:.3f} A^3/atom (a0 = {a0:.4f} A), B0 = {fit['b0 GPa']:.1f} GPa, "
      f"B0' = {fit['b1']:.2f}")
volumes, energies = np.array(eos["volume"]), np.array(eos["energy"])
curve = EOS("birch_murnaghan").fit(volumes, energies)
grid = np.linspace(volumes.min(), volumes.max(), 100)
fig, ax = plt.subplots(figsize=(4.5, 3.5))
ax.plot(volumes, energies, "o", label="DPA4 (atomate2 EOS flow)")
ax.plot(grid, curve.func(grid), "-", label=f"Birch-Murnaghan, B0 = {fit['b0 GPa']:.0f} GPa")
ax.set(xlabel="volume (A^3/atom)", ylabel="energy (eV/atom)", title="bcc W")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "07_atomate2_flows_eos.png", dpi=120)
plt.close(fig)

# %% [markdown]
# ## 2. Elastic tensor
# Strained copies of the relaxed cell (fixed-symmetry relaxations of the atoms), stresses fitted to a
# second-order elastic tensor, in GPa (IEEE convention). Experiment for W: C11 523, C12 204, C44 161 GPa.

# %%
elastic = run(ElasticMaker.from_force_field_name(DPA4, calculator_kwargs=calculator_kwargs).make(tungsten))
c = np.array(elastic.elastic_tensor.ieee_format)
derived = elastic.derived_properties
print(f"elastic tensor (GPa): C11 = {c[0, 0]:.1f}, C12 = {c[0, 1]:.1f}, C44 = {c[3, 3]:.1f}; "
      f"K_VRH = {derived.k_vrh:.1f}, G_VRH = {derived.g_vrh:.1f}")
print(f"cubic Born stability (C11 > |C12|, C11 + 2 C12 > 0, C44 > 0): "
      f"{bool(c[0, 0] > abs(c[0, 1]) and c[0, 0] + 2 * c[0, 1] > 0 and c[3, 3] > 0)}")

# %% [markdown]
# ## 3. Phonons
# Finite displacements in a supercell at least `min_length` A across (phonopy), then the band structure along
# seekpath's high-symmetry path. Imaginary frequencies (printed as negative) mean the model finds the structure
# dynamically unstable, or the supercell is too small for its force constants.

# %%
phonon_maker = PhononMaker.from_force_field_name(DPA4, calculator_kwargs=calculator_kwargs,
                                                 min_length=6.0 if QUICK else 10.0, store_force_constants=False)
phonons = run(phonon_maker.make(tungsten))
bands = phonons.phonon_bandstructure
lowest = np.unravel_index(np.argmin(bands.bands), bands.bands.shape)
q_lowest = bands.qpoints[lowest[1]].frac_coords
n_super = round(abs(np.linalg.det(np.array(phonons.supercell_matrix)))) * len(tungsten)
print(f"phonons: {n_super}-atom supercell, imaginary modes: {'yes' if phonons.has_imaginary_modes else 'no'} "
      f"(lowest frequency {bands.bands.min():.3f} THz at q = {np.round(q_lowest, 3).tolist()}); "
      f"highest {bands.bands.max():.2f} THz")
ax = PhononBSPlotter(bands).get_plot()
ax.set_title("bcc W, DPA4 starter")
ax.figure.tight_layout()
ax.figure.savefig(OUT / "07_atomate2_flows_phonons.png", dpi=120)
plt.close(ax.figure)

# %% [markdown]
# ## What the store holds
# Every job's output is a document in the embedded store (atomate2's `ForceFieldTaskDocument`s, the EOS,
# elastic and phonon documents); trajectories went to its `data` store.

# %%
store.connect()
names = sorted({doc["name"] for doc in store.query({}, properties=["name"])})
print(f"{store.count()} job documents in atomate2.sqlite ({store.additional_stores['data'].count()} in its data "
      f"store); jobs: {', '.join(names[:6])}, ...")
print("tutorial 07 done")
