"""Accuracy at equal CPU budget: our DPA4 vs the authors' reference DPA4 (deepmd-kit) vs MACE (issue 3).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/accuracy.py --budget-s 300 --datasets acac monbtaw

Every trainer gets the same seeded split (written once under ``--work-dir``: extxyz for ours and MACE, DeePMD npy
folders for deepmd-kit, all from the same frames), runs as its own process with one thread (``--threads``: under a
CPU-time budget one thread is the most efficient for every trainer, since a second one never doubles the speed), and
is killed when the CPU time of its process tree (user + system, children included, start-up and data loading
included) reaches ``--budget-s``. Wall time is reported beside it. ``--clock wall --threads 2`` budgets elapsed time
instead, each trainer using both cores as it can (on a quiet machine only). No schedule depends on a step count
that the budget decides: the peers run at a constant learning rate (their trainers have no schedule on the time
used; MACE's default ReduceLROnPlateau waits 50 epochs, more than it reaches), ours decays its rate over the last
30% of the budget's time (``time_limit_s``, ``--decay-fraction``); the newest checkpoint each trainer left is
evaluated:

    ours     `dpa4 train` (dpa4_core.train), preset "tiny" with cutoff 5 A (``--preset``, ``--cutoff``), ZBL taper
             ending at half the covalent-radius sum (``--zbl-taper-end``; off the sampled bonds, as only
             energies and forces are fitted), MSE loss 1:100 like MACE's, Muon (hidden matrices) + AdamW (rest)
             lr 5e-3 (``--optimizer``, ``--lr``), cosine decay to 1% over the last 30% of the time, eager fp32,
             validation (20 frames) every 100 steps (MACE validates once per epoch, 125 steps); it stops itself
             ``STARTUP_MARGIN_S`` seconds before the budget (``time_limit_s`` on the budget's clock, counted by its
             training loop) and saves last.pt (EMA weights), so it checkpoints every 100 steps instead of every 2
             (saving the state every 2 steps costs ~15% of a step)
    deepmd   `dp --pt train` (deepmd-kit 3.2.0), model "dpa4" (Air defaults), newest model.ckpt-N.pt (save_freq 2)
    mace     `mace_run_train` (mace-torch 0.3.16), small CPU MACE (below); newest checkpoint (MACE saves one after each
             epoch whose validation loss improved, EMA weights), exported to a .model by a restart with no epochs left

One evaluator computes the errors of all three on the same test frames (``errors``); peers predict through their own
ASE calculators in the peers' environment (``.venv-peers``). Energies and forces only (no stress/virial loss, so the
three trainers see the same labels). The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
TRAINERS = ("ours", "deepmd", "mace")
BATCH_SIZE = 4  # frames per optimiser step, the same for all three
STARTUP_MARGIN_S = 8.0  # our trainer's start-up (imports, data, bias fit) and final save, outside its loop clock
# Small MACE for CPU (MACE paper / mace-torch README defaults, narrowed): 32 channels, L=1 messages, body order 4.
MACE_ARGS = ["--model=MACE", "--num_channels=32", "--max_L=1", "--correlation=3", "--r_max=5.0",
             "--num_radial_basis=8", "--num_cutoff_basis=5", "--lr=0.01", "--ema", "--ema_decay=0.99", "--amsgrad",
             "--loss=weighted", "--energy_weight=1.0", "--forces_weight=100.0", "--scaling=rms_forces_scaling",
             "--E0s=average", "--default_dtype=float32", "--device=cpu", "--eval_interval=1", "--patience=100000",
             "--max_num_epochs=100000", "--error_table=PerAtomRMSE", "--energy_key=REF_energy",
             "--forces_key=REF_forces", "--num_workers=0", "--seed=0"]
MACE_ARGS += [f"--batch_size={BATCH_SIZE}", "--valid_batch_size=10"]


# ---------------------------------------------------------------------------------------------------- splits
def _pick(groups: np.ndarray, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint index sets of the given sizes, stratified over ``groups`` (quota per group proportional to its
    size, remainders to the largest fractions)."""
    names, counts = np.unique(groups, return_counts=True)
    pools = {g: list(rng.permutation(np.flatnonzero(groups == g))) for g in names}
    out = {}
    for split, size in sizes.items():
        exact = size * counts / counts.sum()
        quota = np.floor(exact).astype(int)
        for k in np.argsort(quota - exact)[: size - quota.sum()]:
            quota[k] += 1
        chosen = []
        for g, q in zip(names, quota):
            chosen += [pools[g].pop() for _ in range(min(q, len(pools[g])))]
        out[split] = np.array(sorted(chosen))
    return out


def load_split(name: str, seed: int, n_train: int, n_valid: int, n_test: int, n_extra: int = 0) -> dict[str, list]:
    """Labelled frames ``{"train", "valid", "test"}`` (lists of ``dpa4_core.data.readers.Frame``), plus ``"extra"``
    (monbtaw only: ``n_extra`` more held-out frames, drawn after the others so that they leave the split unchanged).

    acac: ``n_train + n_valid`` frames drawn (seeded) from BOTNet's ``train_300K`` (500 frames), test frames from
    ``test_MD_300K`` (``n_test`` of 650, seeded). monbtaw: all vendored maml Mo-Nb-Ta-W files, stratified over the
    19 files (AIMD, elastic, surface, solid-solution sets).
    """
    from dpa4_core.data.paths import vendored
    from dpa4_core.data.readers import read_frames

    rng = np.random.default_rng(seed)
    if name == "acac":
        folder = vendored("botnet/dataset_acac")
        pool = list(read_frames(folder / "train_300K.xyz.gz"))
        test = list(read_frames(folder / "test_MD_300K.xyz.gz"))
        idx = rng.permutation(len(pool))
        test_idx = np.sort(rng.permutation(len(test))[:n_test])
        return {"train": [pool[i] for i in idx[:n_train]], "valid": [pool[i] for i in idx[n_train:n_train + n_valid]],
                "test": [test[i] for i in test_idx]}
    if name == "monbtaw":
        frames = list(read_frames(vendored("maml_MoNbTaW")))
        groups = np.array([f.group for f in frames])
        picked = _pick(groups, {"test": n_test, "valid": n_valid, "train": n_train, "extra": n_extra}, rng)
        return {split: [frames[i] for i in idx] for split, idx in picked.items()}
    raise ValueError(f"unknown dataset {name!r}; choose 'acac' or 'monbtaw'")


def write_extxyz(frames: list, path: Path) -> Path:
    """One extxyz file: labels as ASE's calculator fields (``energy=``/``forces``) and as ``REF_energy``/
    ``REF_forces`` (MACE's keys)."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    images = []
    for f in frames:
        atoms = f.atoms.copy()
        atoms.info["REF_energy"] = f.energy
        atoms.arrays["REF_forces"] = np.asarray(f.forces, dtype=float)
        atoms.calc = SinglePointCalculator(atoms, energy=f.energy, forces=f.forces)
        images.append(atoms)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, images, format="extxyz")
    return path


def write_split(frames: dict[str, list], out: Path) -> dict[str, Path]:
    """extxyz files (``write_extxyz``) and DeePMD npy systems (one per atom-type sequence) of the same frames."""
    paths = {}
    for split, items in frames.items():
        paths[split] = write_extxyz(items, out / f"{split}.extxyz")
        write_deepmd(items, out / f"deepmd_{split}")
    return paths


def write_deepmd(frames: list, out: Path) -> list[Path]:
    """DeePMD npy systems: frames grouped by their exact atom-type sequence (a system has one ``type.raw``)."""
    type_map = sorted({s for f in frames for s in f.atoms.get_chemical_symbols()})
    systems: dict[tuple, list] = {}
    for f in frames:
        systems.setdefault(tuple(f.atoms.get_chemical_symbols()), []).append(f)
    paths = []
    for k, (symbols, items) in enumerate(sorted(systems.items(), key=lambda kv: -len(kv[1]))):
        path = out / f"sys{k:03d}"
        (path / "set.000").mkdir(parents=True, exist_ok=True)
        np.savetxt(path / "type.raw", [type_map.index(s) for s in symbols], fmt="%d")
        (path / "type_map.raw").write_text("\n".join(type_map) + "\n")
        periodic = bool(items[0].atoms.pbc.any())
        if not periodic:
            (path / "nopbc").write_text("")
        sets = {"coord": [f.atoms.positions.ravel() for f in items], "energy": [f.energy for f in items],
                "force": [np.asarray(f.forces).ravel() for f in items]}
        if periodic:
            sets["box"] = [f.atoms.cell.array.ravel() for f in items]
        for key, value in sets.items():
            np.save(path / "set.000" / f"{key}.npy", np.asarray(value, dtype=np.float64))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------- budget
def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its live descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant (torchrun's workers start their own sessions,
    so the group alone would miss them)."""
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class Budget:
    """Seconds per trainer on one clock: "cpu" (CPU time of the process tree) or "wall" (elapsed)."""

    seconds: float
    clock: str = "cpu"


def run_with_budget(cmd: list[str], cwd: Path, budget: Budget, env: dict, log: Path) -> dict:
    """Run ``cmd`` in its own process group; kill its process tree once the time spent on ``budget``'s clock
    reaches its seconds.

    Returns ``{"cpu_s", "wall_s", "killed", "returncode"}``.
    """
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        cpu, killed = 0.0, False
        while proc.poll() is None:
            cpu = max(cpu, tree_cpu_seconds(proc.pid))
            if (cpu if budget.clock == "cpu" else time.perf_counter() - start) >= budget.seconds:
                kill_tree(proc.pid)
                killed = True
                proc.wait()
                break
            time.sleep(0.5)
    return {"cpu_s": round(cpu, 1), "wall_s": round(time.perf_counter() - start, 1), "killed": killed,
            "returncode": proc.returncode}


def thread_env(threads: int, peers: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS=str(threads),
               DP_INTRA_OP_PARALLELISM_THREADS=str(threads), DP_INTER_OP_PARALLELISM_THREADS="1")
    if peers:  # e3nn / mace / deepmd pickles need the old torch.load default; our processes keep the safe one
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return env


# ---------------------------------------------------------------------------------------------------- trainers
def train_ours(split: dict[str, Path], run: Path, budget: Budget, threads: int, preset: str,
               overrides: dict, optimizer: str, lr: float, decay_fraction: float) -> tuple[dict, Path]:
    """`dpa4 train` with no warm-up, a rate that decays over the last ``decay_fraction`` of the time budget (the
    trainer's schedule follows the time used when ``time_limit_s`` bounds the run) and MACE's loss (MSE, energy
    per atom : forces = 1 : 100), since the benchmark compares force RMSE."""
    import yaml

    config = {
        "data": {"train": [str(split["train"])], "valid": [str(split["valid"])]},
        "model": {"preset": preset, "dtype": "float32",
                  "overrides": overrides},
        "loss": {"energy": 1.0, "forces": 100.0, "stress": 0.0, "kind": "mse"},
        "optim": {"optimizer": optimizer, "lr": lr, "warmup_fraction": 0.0, "decay_fraction": decay_fraction,
                  "ema_decay": 0.99},
        "steps": 1_000_000, "time_limit_s": budget.seconds - STARTUP_MARGIN_S, "time_clock": budget.clock,
        "batch_size": BATCH_SIZE, "valid_every": 100, "checkpoint_every": 100,
        "valid_batch_size": 10, "max_valid_frames": 20, "output_dir": str(run), "seed": 0, "plots": False,
        "progress": False, "resume": False,
    }
    run.mkdir(parents=True, exist_ok=True)
    (run / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "dpa4_core.cli", "train", str(run / "train.yaml")]
    stats = run_with_budget(cmd, ROOT, budget, thread_env(threads, peers=False), run / "train.log")
    ckpt = run / "last.pt"
    stats["steps"] = _count_lines(run / "metrics.jsonl", '"split": "train"')
    return stats, ckpt


def train_deepmd(split: dict[str, Path], run: Path, budget: Budget, threads: int, type_map: list[str]):
    """`dp --pt train` on the DeePMD copy of the split, model "dpa4" with the Air defaults (2.76M parameters)."""
    template = json.loads((ROOT / "benchmarks" / "accuracy" / "deepmd_dpa4_air.json").read_text())
    template["model"]["type_map"] = type_map
    template["training"]["training_data"]["systems"] = sorted(str(p) for p in (split["train"].parent /
                                                                               "deepmd_train").iterdir())
    template["training"]["validation_data"]["systems"] = sorted(str(p) for p in (split["train"].parent /
                                                                                 "deepmd_valid").iterdir())
    template["training"]["training_data"]["batch_size"] = BATCH_SIZE
    run.mkdir(parents=True, exist_ok=True)
    (run / "input.json").write_text(json.dumps(template, indent=1))
    dp = PEERS_PYTHON.parent / "dp"
    stats = run_with_budget([str(dp), "--pt", "train", "input.json"], run, budget,
                            thread_env(threads, peers=True), run / "train.log")
    ckpts = sorted(run.glob("model.ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[-1]))
    stats["steps"] = int(ckpts[-1].stem.split("-")[-1]) if ckpts else 0
    return stats, (ckpts[-1] if ckpts else run / "model.ckpt.pt")


def train_mace(split: dict[str, Path], run: Path, budget: Budget, threads: int, extra: list[str]):
    """`mace_run_train` with ``MACE_ARGS`` (then ``extra``, which overrides them); then a restart with
    ``max_num_epochs`` = the saved epoch exports the newest checkpoint as ``mace.model`` without further training
    (outside the budget)."""
    run.mkdir(parents=True, exist_ok=True)
    exe = str(PEERS_PYTHON.parent / "mace_run_train")
    base = [exe, "--name=mace", f"--train_file={split['train']}", f"--valid_file={split['valid']}",
            f"--work_dir={run}", *MACE_ARGS, *extra]
    env = thread_env(threads, peers=True)
    stats = run_with_budget(base, run, budget, env, run / "train.log")
    ckpts = sorted((run / "checkpoints").glob("*_epoch-*.pt"), key=lambda p: int(p.stem.split("-")[-1]))
    if not ckpts:
        stats["steps"] = 0
        return stats, run / "mace.model"
    epoch = int(ckpts[-1].stem.split("-")[-1])
    stats["epochs"] = epoch + 1  # MACE numbers epochs from 0 and saves after validating the finished epoch
    stats["steps"] = (epoch + 1) * -(-_count_frames(split["train"]) // BATCH_SIZE)
    export = [a for a in base if not a.startswith("--max_num_epochs")] + [f"--max_num_epochs={epoch}",
                                                                           "--restart_latest"]
    with open(run / "export.log", "w") as fh:
        subprocess.run(export, cwd=run, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    return stats, run / "mace.model"


def _count_lines(path: Path, needle: str) -> int:
    return sum(needle in line for line in path.open()) if path.exists() else 0


def _count_frames(path: Path) -> int:
    import ase.io

    return len(ase.io.read(path, index=":"))


# ---------------------------------------------------------------------------------------------------- evaluation
def predict(kind: str, model: str, frames_path: str, threads: int) -> dict:
    """Energies ``[F]`` (eV) and forces ``[N, 3]`` (eV/A) of a trained model on every frame of an extxyz file,
    through the trainer's own ASE calculator (run in the environment that has it)."""
    import ase.io
    import torch

    torch.set_num_threads(threads)
    if kind == "ours":
        from dpa4_core.calculator import DPA4Calculator

        calc = DPA4Calculator.from_checkpoint(model, dtype="float32")
    elif kind == "deepmd":
        from deepmd.calculator import DP

        calc = DP(model=model)
    elif kind == "mace":
        from mace.calculators import MACECalculator

        calc = MACECalculator(model_paths=model, device="cpu", default_dtype="float32")
    else:
        raise ValueError(f"unknown trainer {kind!r}; choose from {TRAINERS}")
    energies, forces = [], []
    for atoms in ase.io.read(frames_path, index=":"):
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
    return {"energy": energies, "forces": np.concatenate(forces).tolist()}


def errors(pred: dict, ref_frames: list) -> dict:
    """Energy per atom (meV/atom) and force component (meV/A) RMSE and MAE of ``pred`` against DFT labels."""
    n_atoms = np.array([len(f.atoms) for f in ref_frames])
    de = (np.asarray(pred["energy"]) - np.array([f.energy for f in ref_frames])) / n_atoms * 1000.0
    df = (np.asarray(pred["forces"]) - np.concatenate([f.forces for f in ref_frames])) * 1000.0
    return {"energy_rmse": float(np.sqrt(np.mean(de**2))), "energy_mae": float(np.mean(np.abs(de))),
            "force_rmse": float(np.sqrt(np.mean(df**2))), "force_mae": float(np.mean(np.abs(df)))}


def evaluate_trainer(kind: str, model: Path, test_path: Path, ref_frames: list, threads: int, log: Path) -> dict:
    """Predictions in a worker process (peers in ``.venv-peers``), errors here, by ``errors``."""
    python = sys.executable if kind == "ours" else str(PEERS_PYTHON)
    out = log.with_suffix(".json")
    cmd = [python, str(Path(__file__).resolve()), "predict", kind, str(model), str(test_path), str(out),
           "--threads", str(threads)]
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=thread_env(threads, peers=kind != "ours"), stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{kind}: evaluation failed, see {log}")
    return errors(json.loads(out.read_text()), ref_frames)


# ---------------------------------------------------------------------------------------------------- driver
def run_dataset(name: str, args, work: Path) -> dict:
    """Split, train the three (one at a time) and evaluate; results per trainer."""
    sizes = {"acac": (450, 50, args.acac_test), "monbtaw": (args.monbtaw_train, 50, args.monbtaw_test)}[name]
    frames = load_split(name, args.seed, *sizes, n_extra=args.monbtaw_extra_test if name == "monbtaw" else 0)
    extra = frames.pop("extra", [])
    split = write_split(frames, work / name / "split")
    if extra:  # evaluation only, after training: the trainers never see these frames
        extra_path = write_extxyz(extra, work / name / "split" / "extra_test.extxyz")
    type_map = sorted({s for f in frames["train"] for s in f.atoms.get_chemical_symbols()})
    budget = Budget(args.budget_s, args.clock)
    results = {}
    for kind in args.trainers:
        run = work / name / kind
        stats: dict = {}
        try:
            if args.skip_train:  # re-evaluate the checkpoints of an earlier run in the same --work-dir
                saved = json.loads((run / "train_stats.json").read_text())
                stats, model = saved["stats"], Path(saved["model"])
            elif kind == "ours":
                overrides = {"cutoff": args.cutoff, "zbl_taper_end": args.zbl_taper_end, **dict(args.model_override)}
                stats, model = train_ours(split, run, budget, args.threads, args.preset, overrides,
                                          args.optimizer, args.lr, args.decay_fraction)
            elif kind == "deepmd":
                stats, model = train_deepmd(split, run, budget, args.threads, type_map)
            else:
                stats, model = train_mace(split, run, budget, args.threads, args.mace_arg)
            (run / "train_stats.json").write_text(json.dumps({"stats": stats, "model": str(model)}))
            if not model.exists():
                raise RuntimeError(f"{kind} left no checkpoint in {run} (see {run / 'train.log'})")
            stats.update(evaluate_trainer(kind, model, split["test"], frames["test"], args.threads,
                                          run / "predict.log"))
            if extra:
                stats["extra_test"] = evaluate_trainer(kind, model, extra_path, extra, args.threads,
                                                       run / "predict_extra.log")
        except RuntimeError as exc:  # report the failure, still run the others
            stats["error"] = str(exc)
        results[kind] = stats
        print(f"[{name}] {kind}: {json.dumps(stats)}", flush=True)
    return {"sizes": dict(zip(("train", "valid", "test"), sizes)), "extra_test_frames": len(extra),
            "results": results}


def table(name: str, block: dict) -> str:
    rows = [f"{name}: train/valid/test = {block['sizes']['train']}/{block['sizes']['valid']}/"
            f"{block['sizes']['test']} frames",
            f"{'trainer':8s} {'cpu_s':>7s} {'wall_s':>7s} {'steps':>6s} {'E RMSE':>8s} {'E MAE':>8s} "
            f"{'F RMSE':>8s} {'F MAE':>8s}   (meV/atom, meV/A)"]
    for kind, r in block["results"].items():
        if "error" in r:
            rows.append(f"{kind:8s} FAILED: {r['error']}")
            continue
        rows.append(f"{kind:8s} {r['cpu_s']:7.0f} {r['wall_s']:7.0f} {r.get('steps', 0):6d} {r['energy_rmse']:8.2f} "
                    f"{r['energy_mae']:8.2f} {r['force_rmse']:8.1f} {r['force_mae']:8.1f}")
    res = block["results"]

    def ratios(prefix: str, errors_of: dict) -> None:  # ours / each peer, in ``block`` and as table rows
        for peer in ("mace", "deepmd"):
            if "ours" in errors_of and peer in errors_of:
                block[f"{prefix}ours_over_{peer}"] = errors_of["ours"]["force_rmse"] / errors_of[peer]["force_rmse"]
                rows.append(f"{prefix.replace('_', ' ')}force RMSE ours/{peer} = "
                            f"{block[f'{prefix}ours_over_{peer}']:.2f}")

    ratios("", {kind: r for kind, r in res.items() if "force_rmse" in r})
    extra_errors = {kind: r["extra_test"] for kind, r in res.items() if "extra_test" in r}
    if extra_errors:
        rows.append(f"extra held-out set ({block['extra_test_frames']} frames): "
                    + ", ".join(f"{kind} F RMSE {e['force_rmse']:.1f} E RMSE {e['energy_rmse']:.2f}"
                                for kind, e in extra_errors.items()))
        ratios("extra_", extra_errors)
    return "\n".join(rows)


def _override(text: str) -> tuple[str, object]:
    import yaml

    field, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return field, yaml.safe_load(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("predict", help="(worker) predictions of one trained model, as JSON")
    p.add_argument("kind", choices=TRAINERS)
    p.add_argument("model")
    p.add_argument("frames")
    p.add_argument("out")
    p.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=300.0, help="seconds per trainer per dataset")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="what --budget-s counts: CPU time of the trainer's process tree, or elapsed time")
    parser.add_argument("--datasets", nargs="+", default=["acac", "monbtaw"], choices=["acac", "monbtaw"])
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    parser.add_argument("--threads", type=int, default=1, help="threads per trainer (and per evaluation)")
    parser.add_argument("--preset", default="tiny", help="our DPA4Config preset")
    parser.add_argument("--cutoff", type=float, default=5.0, help="our cutoff in A (MACE's r_max is 5.0)")
    parser.add_argument("--zbl-taper-end", type=float, default=0.5,
                        help="our DPA4Config.zbl_taper_end (fraction of the covalent-radius sum where ZBL ends)")
    parser.add_argument("--model-override", nargs="*", action="extend", default=[], metavar="FIELD=VALUE",
                        type=_override, help="more DPA4Config fields for ours (YAML values; the last one wins)")
    parser.add_argument("--optimizer", choices=["muon", "adamw"], default="muon", help="our optim.optimizer")
    parser.add_argument("--lr", type=float, default=5e-3, help="our peak learning rate")
    parser.add_argument("--decay-fraction", type=float, default=0.3,
                        help="ours: cosine decay of the rate over this last fraction of the time budget")
    parser.add_argument("--mace-arg", nargs="*", action="extend", default=[], metavar="--OPTION=VALUE",
                        help="more mace_run_train options, written --mace-arg=--OPTION=VALUE (after MACE_ARGS, so they "
                             "override them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--acac-test", type=int, default=100, help="test frames drawn from test_MD_300K (of 650)")
    parser.add_argument("--monbtaw-train", type=int, default=500)
    parser.add_argument("--monbtaw-test", type=int, default=40)
    parser.add_argument("--monbtaw-extra-test", type=int, default=0,
                        help="also evaluate on this many more held-out Mo-Nb-Ta-W frames (split unchanged)")
    parser.add_argument("--work-dir", default="runs/accuracy")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the checkpoints already in --work-dir")
    args = parser.parse_args(argv)
    if args.command == "predict":
        Path(args.out).write_text(json.dumps(predict(args.kind, args.model, args.frames, args.threads)))
        return 0
    work = Path(args.work_dir).resolve()
    command = "python benchmarks/accuracy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = {"command": command, f"budget_{args.clock}_s": args.budget_s, "threads": args.threads, "datasets": {}}
    for name in args.datasets:
        report["datasets"][name] = run_dataset(name, args, work)
        print(table(name, report["datasets"][name]), flush=True)
    (work / f"report_{'_'.join(args.datasets)}.json").write_text(json.dumps(report, indent=1))
    print(f"command: {command}")
    summary = {f"{n}_{e}ours_over_{p}": round(b[f"{e}ours_over_{p}"], 3) for n, b in report["datasets"].items()
               for e in ("", "extra_") for p in ("mace", "deepmd") if f"{e}ours_over_{p}" in b}
    print(" ".join(f"{k}={v}" for k, v in summary.items()) or "no_ratio=1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
