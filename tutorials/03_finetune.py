# %% [markdown]
# # 3. Fine-tuning a checkpoint on your own DFT data
#
# You have a few hundred DFT calculations of your system and a pretrained DPA4. `dpa4_core.train.finetune`
# starts from the checkpoint, refits the per-element energy bias to your DFT reference (different codes,
# pseudopotentials or settings shift total energies), optionally freezes the first blocks, and trains with a
# small learning rate. Here: the starter model (trained on the Mo-Nb-Ta-W data of Li et al. 2020) fine-tuned on
# the mlearn Mo set (Zuo et al. 2020, other VASP settings), then the same from YAML with the `dpa4` command.
#
# Run: `python tutorials/03_finetune.py [--out DIR]`; `DPA4_TUTORIAL_QUICK=1` makes it smaller.

# %%
import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import yaml

from _helpers import data_file, model_checkpoint, output_dir, quick

from dpa4_core import DPA4Calculator
from dpa4_core.data.readers import read_frames
from dpa4_core.train import evaluate, finetune

QUICK = quick()
OUT = output_dir("03_finetune")
print(f"output folder: {OUT}  (quick mode: {QUICK})")
base = model_checkpoint(OUT)

# %% [markdown]
# ## The configuration
# The same keys as the YAML file the `dpa4 finetune` command reads (`dpa4_core.train.config.FinetuneConfig`;
# unknown keys are rejected). The data file is the Materials Virtual Lab JSON format (pymatgen structures with
# VASP energies, forces and stresses in kbar); `split` holds out validation and test frames, seeded.
# The architecture comes from the checkpoint; `freeze_blocks: 1` keeps the embedding and the first block.

# %%
mo_data = str(data_file("mlearn", "Mo", "training.json.gz"))
config = {
    "base_checkpoint": str(base),
    "data": {"train": [mo_data], "split": {"valid": 0.1, "test": 0.1, "seed": 0},
             "max_frames": 24 if QUICK else 120},
    "model": {"dtype": "float32"},
    "freeze_blocks": 1,
    "optim": {"lr": 1e-3, "warmup_fraction": 0.05, "ema_decay": 0.95},
    "steps": 6 if QUICK else 200,
    "batch_size": 2,
    "valid_every": 6 if QUICK else 100,
    "checkpoint_every": 6 if QUICK else 100,
    "max_valid_frames": 8,
    "output_dir": str(OUT / "run"),
    "progress": False,
}
print(yaml.safe_dump(config, sort_keys=False))

# %% [markdown]
# ## Fine-tune
# `finetune` returns the checkpoint paths and metrics: `base` (the base model as is), `base_refit` (after
# the bias refit only), `valid` (fine-tuned, best checkpoint) and `test` (fine-tuned, on the held-out frames).
# Energies in meV/atom, forces in meV/A, stresses in GPa. Read the table critically: a few hundred steps on about
# a hundred frames mostly improve the forces; judge a fine-tuned model on the held-out test frames, not only on
# the validation frames that chose its best checkpoint.

# %%
result = finetune(config)
print(f"best checkpoint: {result.checkpoint}")
print(f"{'model':<28}{'E MAE (meV/atom)':>18}{'F MAE (meV/A)':>15}{'S MAE (GPa)':>13}")
for key, label in (("base", "base model, as is"), ("base_refit", "base, bias refit only"),
                   ("valid", "fine-tuned (validation)"), ("test", "fine-tuned (test)")):
    m = result.metrics.get(key)
    if m:
        stress = m.get("stress_mae_gpa")
        print(f"{label:<28}{m['energy_mae_mev_per_atom']:>18.1f}{m['force_mae_mev_per_a']:>15.1f}"
              f"{(f'{stress:.2f}' if stress is not None else '-'):>13}")

# %% [markdown]
# ## Parity plot on the held-out test frames
# The trainer saved the test frames with their DFT labels as `test_split.extxyz`. We predict them with the base
# and the fine-tuned model through the ASE calculator. The trainer also writes its own validation parity plots
# (`parity_energy.png`, `parity_forces.png`) into the run folder.

# %%
test_frames = list(read_frames(OUT / "run" / "test_split.extxyz"))
models = {"base": DPA4Calculator.from_checkpoint(base), "fine-tuned": DPA4Calculator.from_checkpoint(result.checkpoint)}
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for label, calc in models.items():
    e_ref, e_pred, f_ref, f_pred = [], [], [], []
    for frame in test_frames:
        atoms = frame.atoms.copy()
        atoms.calc = calc
        e_ref.append(frame.energy / len(atoms))
        e_pred.append(atoms.get_potential_energy() / len(atoms))
        f_ref.append(frame.forces.ravel())
        f_pred.append(atoms.get_forces().ravel())
    e_ref, e_pred = np.array(e_ref), np.array(e_pred)
    f_ref, f_pred = np.concatenate(f_ref), np.concatenate(f_pred)
    e_mae, f_mae = 1000 * np.abs(e_pred - e_ref).mean(), 1000 * np.abs(f_pred - f_ref).mean()
    print(f"test set ({len(test_frames)} frames), {label:<10}: E MAE {e_mae:8.1f} meV/atom, F MAE {f_mae:6.1f} meV/A")
    axes[0].scatter(e_ref, e_pred, s=10, label=f"{label} ({e_mae:.0f} meV/atom)")
    axes[1].scatter(f_ref, f_pred, s=3, alpha=0.5, label=f"{label} ({f_mae:.0f} meV/A)")
for ax, name, unit in ((axes[0], "energy", "eV/atom"), (axes[1], "force component", "eV/A")):
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.set_xlabel(f"DFT {name} ({unit})")
    ax.set_ylabel(f"DPA4 {name} ({unit})")
    ax.legend(fontsize=8)
fig.suptitle("mlearn Mo test frames: base vs fine-tuned")
fig.tight_layout()
fig.savefig(OUT / "03_finetune_parity.png", dpi=120)
plt.close(fig)
print(f"wrote {OUT / '03_finetune_parity.png'}")

# %% [markdown]
# `evaluate` is the Python form of `dpa4 eval`: any labelled data the readers know (extxyz, VASP, pymatgen
# JSON, DeePMD folders).

# %%
metrics = evaluate(result.checkpoint, OUT / "run" / "test_split.extxyz")
print("evaluate(best.pt, test_split.extxyz):", {k: (round(v, 2) if isinstance(v, float) else v)
                                                for k, v in metrics.items()})

# %% [markdown]
# ## The same from the command line
# Write the configuration as YAML and run `dpa4 finetune config.yaml` (add `--from other.pt` to change the
# base), then `dpa4 eval CHECKPOINT DATA...`. Both print JSON to stdout. (`examples/finetune_mlearn_mo.yaml` is
# a ready-made version of this file.) We run the CLI for a few steps only, into a separate folder; a rerun of
# the same command resumes an interrupted run from its `train_state.pt`.

# %%
cli_config = {**config, "steps": 2 if QUICK else 10, "valid_every": 1000, "checkpoint_every": 1000,
              "output_dir": str(OUT / "cli_run"), "plots": False}
yaml_path = OUT / "finetune.yaml"
yaml_path.write_text(yaml.safe_dump(cli_config, sort_keys=False))
dpa4 = [sys.executable, "-m", "dpa4_core.cli"]  # the same as the `dpa4` console script
print(f"$ dpa4 finetune {yaml_path.name}")
done = subprocess.run([*dpa4, "finetune", str(yaml_path)], capture_output=True, text=True, check=True)
cli_result = json.loads(done.stdout)
print(f"  -> checkpoint {cli_result['checkpoint']}")
print(f"  -> valid metrics {json.dumps({k: round(v, 1) for k, v in cli_result['metrics']['valid'].items() if isinstance(v, float)})}")
print(f"$ dpa4 eval {cli_result['checkpoint']} run/test_split.extxyz")
done = subprocess.run([*dpa4, "eval", cli_result["checkpoint"], str(OUT / "run" / "test_split.extxyz")],
                      capture_output=True, text=True, check=True)
print(done.stdout.strip())
print("tutorial 03 done")
