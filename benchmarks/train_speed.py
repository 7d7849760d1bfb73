"""Training speed and peak memory on CPU: eager/compiled x fp32/bf16, plus the bf16 accuracy check.

Usage::

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 python benchmarks/train_speed.py --preset air --batch-size 1

One training step = predictor (energy, forces by the edge gradient, stress) -> loss (energy/atom, forces,
stress; weights 20/20/5, ``dpa4_core.train.loss``) -> ``loss.backward()`` (the force term needs the double
backward) -> AdamW step. Frames: real Mo-Nb-Ta-W DFT frames from ``data/maml_MoNbTaW`` (16-atom solid
solutions and 54-atom AIMD snapshots, cycled, so batch shapes vary as in training). Each configuration runs in
its own subprocess with the same seed, model and frames; the step time is the median over the timed steps
after ``--warmup`` steps (the first compiled step includes tracing and compilation, reported separately).

Peak memory, and why it is measured this way: ``tracemalloc`` cannot see torch's C++ allocations and torch has
no CPU allocator statistics, while ``ru_maxrss`` would report the compiler's own peak (inductor compiling in the
first step) rather than the training step's. So each configuration runs in a fresh process with glibc's mmap
threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``; large tensors are then mmapped and returned to the OS
when freed, so RSS follows live tensor memory), and after the warm-up the kernel's resident high-water mark is
reset (``/proc/self/clear_refs`` <- 5) and read back (``VmHWM``) after the timed steps. The warm-up should cover
every batch shape once (the default: 8 steps over the 8 frames): the first step at each new shape leaves memory
behind that later steps reuse (46 MiB over the first pass under bf16, 28 MiB in fp32, for ``air``), a one-time cost
per shape, not the step's working memory. Reported: ``peak_rss``
(whole process, incl. torch and the model) and ``step_mem`` = peak RSS during the timed steps minus RSS before
them (activations, saved tensors, gradients: the part bf16 can shrink). Where ``clear_refs`` is not writable
the script falls back to ``ru_maxrss`` and says so.

The last line is ``compile_speedup=X bf16_peak_memory_ratio=Y`` with X = eager fp32 / compiled fp32 step time
and Y = step_mem(eager bf16) / step_mem(eager fp32).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "eager-fp32": dict(compile=False, bf16=False),
    "compiled-fp32": dict(compile=True, bf16=False),
    "eager-bf16": dict(compile=False, bf16=True),
    "compiled-bf16": dict(compile=True, bf16=True),
}
# (file, frames taken from its start): 16-atom solid solutions and 54-atom AIMD snapshots.
SOURCES = [("NbMo_SS.json.gz", 2), ("TaW_SS.json.gz", 2), ("Mo_AIMD.json.gz", 2), ("W_AIMD.json.gz", 2)]
PEER_S_PER_STEP = 9.1  # deepmd-kit DPA4 Air, batch size 1, 2 threads, these frames (task statement)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def _dataset():
    from dpa4_core.data.paths import vendored
    from dpa4_core.data.readers import read_pymatgen_json
    from dpa4_core.train.dataset import FrameDataset

    frames = []
    for name, count in SOURCES:
        frames += itertools.islice(read_pymatgen_json(vendored("maml_MoNbTaW", name)), count)
    # interleave sizes: 16, 54, 16, 54, ...
    order = [i for pair in zip(range(0, 4), range(4, 8)) for i in pair]
    return FrameDataset.from_frames([frames[i] for i in order])


def _model(preset: str):
    import torch

    from dpa4_core.config import DPA4Config
    from dpa4_core.model.energy import DPA4

    torch.manual_seed(0)
    return DPA4(DPA4Config.preset(preset))


def worker(args) -> dict:
    """Time one configuration in this (fresh) process; returns a JSON-able record."""
    import gc

    import torch

    from dpa4_core.train.compile import make_predictor
    from dpa4_core.train.loss import LossWeights, compute_loss

    torch.set_num_threads(args.threads)
    options = CONFIGS[args.worker]
    dataset = _dataset()
    model = _model(args.preset)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    predictor = make_predictor(model, **options)
    batches = [dataset.batch([(s * args.batch_size + k) % len(dataset) for k in range(args.batch_size)],
                             model.config.cutoff, torch.float32) for s in range(len(dataset))]
    times, losses = [], []
    first_step_s = None
    rss_before = peak_reset = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            gc.collect()
            peak_reset = _reset_peak()
            rss_before = _status_kib("VmRSS")
        batch, labels = batches[step % len(batches)]
        start = time.perf_counter()
        loss, parts = compute_loss(predictor(batch), labels, batch.frame, LossWeights())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        if step == 0:
            first_step_s = elapsed
        if step >= args.warmup:
            times.append(elapsed)
        losses.append(parts["total"])
    peak = _status_kib("VmHWM") if peak_reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    median = statistics.median(times)
    return {
        "config": args.worker, "median_step_s": median, "steps_per_s": 1 / median,
        "frames_per_s": args.batch_size / median, "first_step_s": first_step_s,
        "peak_rss_mib": peak / 1024, "step_mem_mib": (peak - rss_before) / 1024 if rss_before else None,
        "peak_method": "VmHWM after clear_refs" if peak_reset else "ru_maxrss (includes compilation)",
        "compiled": getattr(predictor, "compiled", False), "recompiles": getattr(predictor, "recompiles", 0),
        "first_loss": losses[0], "losses": losses,
    }


def accuracy(args) -> dict:
    """bf16 vs fp32 at the same (perturbed) weights on every benchmark frame: loss, energy, forces, stress."""
    import torch

    from dpa4_core.train.compile import make_predictor
    from dpa4_core.train.loss import LossWeights, compute_loss

    torch.set_num_threads(args.threads)
    dataset = _dataset()
    model = _model(args.preset)
    # At initialisation every block is the identity (zero-initialised output maps), which would make the
    # comparison vacuous; move all weights off it with N(0, 0.05) noise so every block contributes.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    batch, labels = dataset.batch(list(range(len(dataset))), model.config.cutoff, torch.float32)
    out = {}
    for bf16 in (False, True):
        pred = make_predictor(model, bf16=bf16)(batch)
        loss, _ = compute_loss(pred, labels, batch.frame, LossWeights())
        out[bf16] = ({k: v.detach() for k, v in pred.items()}, float(loss.detach()))
    (p32, l32), (p16, l16) = out[False], out[True]
    network32 = p32["atom_energy"] - model.energy_bias[batch.numbers]
    network16 = p16["atom_energy"] - model.energy_bias[batch.numbers]
    return {
        "loss_rel_diff": abs(l16 - l32) / abs(l32),
        "force_rel_diff": float((p16["forces"] - p32["forces"]).norm() / p32["forces"].norm()),
        "stress_rel_diff": float((p16["stress"] - p32["stress"]).norm() / p32["stress"].norm()),
        "atom_energy_rel_diff": float((network16 - network32).norm() / network32.norm()),
    }


def _run_child(argv: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS=str(threads),
               MALLOC_MMAP_THRESHOLD_="131072")
    result = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child {argv} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="air", help="DPA4Config preset (tiny, neo, air, plus, pro)")
    parser.add_argument("--batch-size", type=int, default=1, help="frames per training step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=8,
                        help="untimed steps first (compilation happens here); the default, 8, runs every batch shape "
                             "once, so memory kept after the first step at a new shape is not counted as step memory")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--worker", choices=[*CONFIGS, "accuracy"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "accuracy":
        print(json.dumps(accuracy(args)))
        return
    if args.worker:
        print(json.dumps(worker(args)))
        return

    common = ["--preset", args.preset, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
              "--warmup", str(args.warmup), "--threads", str(args.threads)]
    command = " ".join(["OMP_NUM_THREADS=" + str(args.threads), "OPENBLAS_NUM_THREADS=1", "python",
                        "benchmarks/train_speed.py", *map(shlex.quote, common)])
    print(f"# command: {command}")
    print(f"# torch {__import__('torch').__version__}, {os.cpu_count()} visible cores, preset {args.preset}, "
          f"batch size {args.batch_size}, frames from data/maml_MoNbTaW ({', '.join(n for n, _ in SOURCES)})")
    results = {}
    for name in args.configs.split(","):
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}; allowed: {', '.join(CONFIGS)}")
        results[name] = record = _run_child([*common, "--worker", name], args.threads)
        mem = record["step_mem_mib"]
        print(f"{name:14s} {record['median_step_s']:8.3f} s/step {record['steps_per_s']:7.2f} steps/s "
              f"{record['frames_per_s']:7.2f} frames/s  first step {record['first_step_s']:6.1f} s  "
              f"peak RSS {record['peak_rss_mib']:7.0f} MiB  step memory "
              f"{'n/a' if mem is None else f'{mem:.0f} MiB'}  compiled={record['compiled']} "
              f"recompiles={record['recompiles']}  loss[0]={record['first_loss']:.5g}", flush=True)
    if "eager-fp32" in results:
        base = results["eager-fp32"]["median_step_s"]
        for name, record in results.items():
            print(f"# {name}: speed {base / record['median_step_s']:.2f}x eager fp32, "
                  f"{PEER_S_PER_STEP / record['median_step_s']:.2f}x deepmd-kit DPA4 Air "
                  f"({PEER_S_PER_STEP} s/step, batch 1, 2 threads; goal >= 5x for air)")
    acc = _run_child([*common, "--worker", "accuracy"], args.threads)
    print("# bf16 vs fp32 accuracy (same weights, perturbed off the identity init, all benchmark frames, eager): "
          + ", ".join(f"{k}={v:.2e}" for k, v in acc.items()))
    speedup = ratio = float("nan")
    if "eager-fp32" in results and "compiled-fp32" in results:
        speedup = results["eager-fp32"]["median_step_s"] / results["compiled-fp32"]["median_step_s"]
    if "eager-fp32" in results and "eager-bf16" in results:
        m32, m16 = results["eager-fp32"]["step_mem_mib"], results["eager-bf16"]["step_mem_mib"]
        if m32 and m16:
            ratio = m16 / m32
    print(f"compile_speedup={speedup:.2f} bf16_peak_memory_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
