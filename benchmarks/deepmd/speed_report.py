"""Tables and the machine-readable last line of ``speed.py`` (ratios = deepmd-kit's time / dpa4's)."""

from __future__ import annotations


def print_single(single: list[dict], names: list[str], dtypes: list[str]) -> None:
    """One row per (model, threads, structure): ms per call for each side and the ratios."""
    head = " | ".join(f"dpa4 {d} ms (CPU ms)" for d in dtypes)
    ratios = " | ".join(f"ratio {d} (CPU)" for d in dtypes)
    print(f"\nsingle point, energy + forces + stress (median wall ms per call; median process CPU ms):\n\n"
          f"| model | threads | structure | atoms | deepmd-kit ms (CPU ms) | {head} | {ratios} |")
    print("|---" * (5 + 2 * len(dtypes)) + "|")
    for row in single:
        for k, name in enumerate(names):
            theirs = row["deepmd"][k]
            ours = [row[d][k] for d in dtypes]
            print(f"| {row['model']} | {row['threads']} | {name} | {theirs['n_atoms']} | {_ms(theirs)} | "
                  + " | ".join(_ms(t) for t in ours) + " | "
                  + " | ".join(f"{theirs['median_s'] / t['median_s']:.2f}x ({theirs['cpu_s'] / t['cpu_s']:.2f}x)"
                               for t in ours) + " |")


def _ms(result: dict) -> str:
    return f"{result['median_s'] * 1e3:.1f} ({result['cpu_s'] * 1e3:.1f})"


def _steps(side: dict) -> tuple[int, int]:
    results = side["results"]
    return sum(r["steps"] for r in results), sum(bool(r["converged"]) for r in results)


def print_relax(relax: dict) -> None:
    task = relax["task"]
    print(f"\nrelaxation of {len(relax['dpa4']['results'])} cells ({relax['model']}, FIRE"
          f"{' + FrechetCellFilter' if task['relax_cell'] else ', positions only'}, fmax {task['fmax']} eV/A, "
          f"at most {task['max_steps']} steps, {task['threads']} thread(s), dpa4 in {task['dtype']}):\n")
    print("| engine | wall s | CPU s | total steps | converged | ms per cell-step |")
    print("|---|---|---|---|---|---|")
    for label, key in (("deepmd-kit DP + ASE FIRE, one at a time", "deepmd"), ("dpa4 relax_batch", "dpa4")):
        steps, converged = _steps(relax[key])
        wall = relax[key]["wall_s"]
        print(f"| {label} | {wall:.1f} | {relax[key]['cpu_s']:.1f} | {steps} | {converged} | "
              f"{wall / max(steps, 1) * 1e3:.1f} |")
    errors = [r["error"] for r in relax["dpa4"]["results"] if r.get("error")]
    if errors:
        print(f"dpa4 errors: {errors[:3]}")
    print(f"\nratio (deepmd-kit / dpa4): wall {relax['deepmd']['wall_s'] / relax['dpa4']['wall_s']:.2f}x, "
          f"CPU {relax['deepmd']['cpu_s'] / relax['dpa4']['cpu_s']:.2f}x")


def summary(single: list[dict], dtypes: list[str], relax: dict | None) -> str:
    """``key=value`` pairs: the smallest single-point ratio per dtype (over models, threads and structures)."""
    parts = []
    for dtype in dtypes:
        ratios = [row["deepmd"][k]["median_s"] / row[dtype][k]["median_s"]
                  for row in single for k in range(len(row["deepmd"]))]
        cpu = [row["deepmd"][k]["cpu_s"] / row[dtype][k]["cpu_s"]
               for row in single if row["threads"] == 1 for k in range(len(row["deepmd"]))]
        if ratios:
            parts.append(f"single_min_ratio_{dtype}={min(ratios):.2f}")
        if cpu:
            parts.append(f"single_min_cpu_ratio_1thread_{dtype}={min(cpu):.2f}")
    if relax is not None:
        parts.append(f"relax_ratio={relax['deepmd']['wall_s'] / relax['dpa4']['wall_s']:.2f}")
        parts.append(f"relax_cpu_ratio={relax['deepmd']['cpu_s'] / relax['dpa4']['cpu_s']:.2f}")
    return " ".join(parts)
