"""What an installed dpa4 can read: every data file in the packages is declared as package data, and package
code does not read the repository's ``data/`` folder (which is not installed)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dpa4_core", "dpa4_flows")


def _tracked(*paths: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", *paths], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return out.stdout.split()


def _declared(package_data: dict[str, list[str]], path: str) -> bool:
    folder, name = path.rsplit("/", 1)
    patterns = package_data.get(folder.replace("/", "."), [])
    return any(fnmatch(name, pattern) for pattern in patterns)


def test_every_data_file_in_the_packages_is_package_data():
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    data_files = [p for p in _tracked(*PACKAGES) if not p.endswith(".py")]
    assert "dpa4_core/pretrained/dpa4-starter.pt" in data_files
    missing = [p for p in data_files if not _declared(package_data, p)]
    assert not missing, f"not declared in [tool.setuptools.package-data], so not installed: {missing}"


def test_package_code_does_not_read_the_repository_data_folder():
    """Only ``dpa4_core/data/paths.py`` (the checkout helper) may locate ``data/``; no package module calls it."""
    uses = re.compile(r"\b(vendored|data_root)\(|from dpa4_core\.data\.paths import|REPO_ROOT")
    offenders = [
        path for path in _tracked(*PACKAGES)
        if path.endswith(".py") and path != "dpa4_core/data/paths.py" and uses.search((REPO / path).read_text())
    ]
    assert not offenders, f"package modules reading the checkout's data/ folder: {offenders}"
