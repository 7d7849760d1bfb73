"""Where the vendored real DFT data lives (``data/`` at the repository root; see ``data/README.md``).

A helper for a repository checkout (tests, tutorials, benchmarks): ``data/`` is not installed with the package,
and package code never reads it at run time (what the package needs, the starter model, ships as package data).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The vendored data folder; override with the ``DPA4_DATA`` environment variable."""
    root = Path(os.environ.get("DPA4_DATA", REPO_ROOT / "data")).resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"vendored data folder {root} not found; set DPA4_DATA to the repository's data/ folder"
        )
    return root


def vendored(*parts: str) -> Path:
    """Absolute path of a vendored file, e.g. ``vendored("maml_MoNbTaW", "Mo_Elastic.json.gz")``."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"vendored data file {path} not found")
    return path
