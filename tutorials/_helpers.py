"""Shared set-up of the dpa4 tutorials: where files go, quick mode, and which model to use.

Every tutorial writes only under its output folder: ``--out DIR`` on the command line, else the environment
variable ``DPA4_TUTORIAL_OUT``, else ``<system temp>/dpa4_tutorials``; each tutorial uses ``<that>/<name>``.
``DPA4_TUTORIAL_QUICK=1`` shrinks every tutorial (fewer structures and steps) for smoke tests.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))


def quick() -> bool:
    """True when ``DPA4_TUTORIAL_QUICK`` is set to anything but ``""``/``"0"`` (smoke-test size)."""
    return os.environ.get("DPA4_TUTORIAL_QUICK", "0") not in ("", "0")


def output_dir(name: str) -> Path:
    """The folder this tutorial writes to (created), absolute: ``<--out | DPA4_TUTORIAL_OUT | tmp>/<name>``."""
    root = os.environ.get("DPA4_TUTORIAL_OUT") or str(Path(tempfile.gettempdir()) / "dpa4_tutorials")
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            root = argv[i + 1]
        elif arg.startswith("--out="):
            root = arg.split("=", 1)[1]
    out = (Path(root).expanduser() / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def data_file(*parts: str) -> Path:
    """A vendored DFT data file (``data/...``, see ``data/README.md``)."""
    from dpa4_core.data.paths import vendored

    return vendored(*parts)


def _loads(path: Path) -> str | None:
    """None if ``path`` loads with this dpa4 version, else the reason it does not."""
    from dpa4_core.io.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
    except (ValueError, OSError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return None


def model_checkpoint(out: Path) -> Path:
    """The starter model if this installation has a loadable one, else a tiny model trained here for a few steps.

    The stand-in exists only so the tutorials run without the starter model; its numbers are far from
    converged, and the printed notice says so. It is trained once per output root (``out.parent``) and reused.
    """
    from dpa4_core.pretrained import starter_checkpoint

    try:
        path = starter_checkpoint()
    except FileNotFoundError:
        reason = "this installation has no starter checkpoint"
    else:
        reason = _loads(path)
        if reason is None:
            print(f"model: starter checkpoint {path.name} (tiny DPA4 trained on the vendored Mo-Nb-Ta-W DFT data)")
            return path
        reason = f"the starter checkpoint {path} does not load with this dpa4 version ({reason})"
    from dpa4_core.train import train

    folder = Path(out).parent / "standin_model"
    best = folder / "best.pt"
    if not best.is_file() or _loads(best) is not None:
        maml = data_file("maml_MoNbTaW")
        sources = [str(maml / f) for f in ("Mo_Elastic.json.gz", "Nb_Elastic.json.gz", "Ta_Elastic.json.gz",
                                           "W_Elastic.json.gz", "NbMo_SS.json.gz", "TaW_SS.json.gz")]
        config = {
            "data": {"train": sources, "max_frames": 96, "split": {"valid": 0.05, "seed": 0}},
            "model": {"preset": "tiny", "overrides": {"cutoff": 5.0}},
            "steps": 20 if quick() else 150, "batch_size": 4, "valid_every": 1000, "checkpoint_every": 1000,
            "max_valid_frames": 8, "optim": {"lr": 0.005}, "output_dir": str(folder), "progress": False,
            "plots": False, "resume": False,
        }
        best = train(config).checkpoint
    print(f"model: NOT the starter model: {reason}. Using a stand-in tiny DPA4 trained here for a few steps on "
          f"Mo-Nb-Ta-W data ({best}); its numbers are illustrative only.")
    return Path(best)
