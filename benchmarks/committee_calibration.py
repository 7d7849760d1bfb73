"""Is a committee's spread a usable error bar? Spread of the members against the main model's error on held-out DFT
frames, calibrated on the validation split and checked on the test split (issue 18).

    OMP_NUM_THREADS=1 python benchmarks/committee_calibration.py --members small-MoNbTaW small-MoNbTaW-s1 \
        small-MoNbTaW-s2 small-MoNbTaW-s3 --valid runs/monbtaw_v2_data/valid.extxyz \
        --test runs/monbtaw_v2_data/test.extxyz --plot benchmarks/committee_calibration.png

Per frame: the energy per atom of every member; spread = sample std over members (ddof 1), error = |main - DFT| of
the first member (the model the screening relaxes with). Per atom: the force spread = sqrt(sum over x, y, z of the
per-component variance over members), error = |F_main - F_DFT|. The scale ``s`` that makes the spread an error bar
is fitted on the validation split (s^2 = mean(error^2) / mean(spread^2)); on the test split the script prints the
rank correlation of spread and error, the fraction of errors within s x spread and 2 s x spread (68% and 95% for a
calibrated Gaussian), and draws binned RMSE against the calibrated spread (a reliability diagram).
Last line: ``energy_scale=... force_scale=... energy_within_1s=... force_within_1s=...`` (test split).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import numpy as np
from scipy.stats import spearmanr

from dpa4_core.train.evaluate_report import evaluate_report


def spreads_and_errors(members: list[str], data: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"energy": (spread [F], error [F]) in meV/atom, "forces": (spread [N], error [N]) in meV/A}``."""
    reports = [evaluate_report(member, data, batch_size=16, progress=False) for member in members]
    dataset = reports[0].dataset
    energies = np.stack([r.energy / dataset.n_atoms for r in reports]) * 1000.0  # [M, F]
    forces = np.stack([r.forces for r in reports]) * 1000.0  # [M, N, 3]
    energy_error = np.abs(energies[0] - dataset.energy / dataset.n_atoms * 1000.0)
    force_error = np.linalg.norm(forces[0] - dataset.forces * 1000.0, axis=-1)
    return {"energy": (energies.std(axis=0, ddof=1), energy_error),
            "forces": (np.sqrt(forces.var(axis=0, ddof=1).sum(axis=-1)), force_error)}


def calibration(valid: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> dict:
    """The scale fitted on ``valid`` and how well it holds on ``test`` (both ``(spread, error)``)."""
    scale = float(np.sqrt(np.mean(valid[1] ** 2) / max(np.mean(valid[0] ** 2), 1e-30)))
    spread, error = test[0] * scale, test[1]
    rho = spearmanr(spread, error).statistic
    return {"scale": scale, "spearman": float(rho), "within_1s": float(np.mean(error <= spread)),
            "within_2s": float(np.mean(error <= 2 * spread)), "rmse": float(np.sqrt(np.mean(error ** 2))),
            "rms_spread": float(np.sqrt(np.mean(spread ** 2))), "n": int(len(error))}


def binned(spread: np.ndarray, error: np.ndarray, bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """RMS spread and RMSE in quantile bins of the spread."""
    edges = np.quantile(spread, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, spread, side="right") - 1, 0, bins - 1)
    keep = [b for b in range(bins) if np.any(which == b)]
    return (np.array([np.sqrt(np.mean(spread[which == b] ** 2)) for b in keep]),
            np.array([np.sqrt(np.mean(error[which == b] ** 2)) for b in keep]))


def plot(test: dict, results: dict, members: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a script, not the library: no display here
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, unit in ((axes[0], "energy", "meV/atom"), (axes[1], "forces", "meV/A")):
        spread, error = test[key]
        s = results[key]["scale"]
        x, y = binned(spread * s, error)
        ax.scatter(spread * s, error, s=4, alpha=0.25, color="0.5", label="frames" if key == "energy" else "atoms")
        ax.plot(x, y, "o-", color="C0", label="RMSE per bin of spread")
        top = max(x.max(), y.max()) * 1.2
        ax.plot([0, top], [0, top], "k--", lw=1, label="calibrated")
        ax.set_xscale("log")
        ax.set_yscale("log")
        r = results[key]
        ax.set_title(f"{key}: s = {s:.2f}, within 1s {r['within_1s']:.0%}, 2s {r['within_2s']:.0%}, "
                     f"rho {r['spearman']:.2f}", fontsize=9)
        ax.set_xlabel(f"calibrated committee spread s x std ({unit})")
        ax.set_ylabel(f"|error| of the main model ({unit})")
        ax.legend(fontsize=8)
    fig.suptitle(f"committee of {len(members)} ({', '.join(members)}): held-out test split", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", nargs="+", required=True, help="checkpoints or shipped names; first = main")
    parser.add_argument("--valid", required=True, help="labelled frames for the scale")
    parser.add_argument("--test", required=True, help="labelled held-out frames for the check")
    parser.add_argument("--plot", default=None, help="PNG of the reliability diagram")
    args = parser.parse_args(argv)
    if len(args.members) < 2:
        parser.error("a committee needs at least two members")
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    valid = spreads_and_errors(args.members, args.valid)
    test = spreads_and_errors(args.members, args.test)
    results = {key: calibration(valid[key], test[key]) for key in ("energy", "forces")}
    print(json.dumps(results, indent=1))
    if args.plot:
        plot(test, results, args.members, args.plot)
        print(f"plot: {args.plot}")
    print(f"energy_scale={results['energy']['scale']:.3f} force_scale={results['forces']['scale']:.3f} "
          f"energy_within_1s={results['energy']['within_1s']:.3f} force_within_1s={results['forces']['within_1s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
