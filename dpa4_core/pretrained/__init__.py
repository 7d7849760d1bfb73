"""Pretrained DPA4 checkpoints shipped with the package, by name, each with a model card (markdown next to its file).

``resolve_checkpoint("starter-MoNbTaW")`` is the shipped file; ``dpa4_core.io.checkpoint.read_checkpoint`` (the one
function every loader goes through) resolves names with it, so a name works wherever a checkpoint path does.
``dpa4 models`` (:mod:`dpa4_core.pretrained.cli`) lists them. This module imports nothing of dpa4_core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
STARTER = HERE / "dpa4-starter.pt"


class UnknownModelError(ValueError):
    """A checkpoint argument that is neither an existing file nor the name of a shipped model."""


@dataclass(frozen=True)
class PretrainedModel:
    """One shipped model: its file and card (in this folder) and the card's summary for ``dpa4 models``.

    ``errors``: held-out errors by subset, ``{subset: (energy meV/atom, force meV/A)}``, on ``test_split``.
    """

    name: str
    file: str
    card: str
    elements: tuple[str, ...]
    preset: str
    parameters: int
    training_data: str
    test_split: str
    errors: dict[str, tuple[float, float]] = field(default_factory=dict)
    reference: str = ""

    @property
    def path(self) -> Path:
        return HERE / self.file

    @property
    def card_path(self) -> Path:
        return HERE / self.card


MODELS: dict[str, PretrainedModel] = {m.name: m for m in (
    PretrainedModel(
        name="starter-MoNbTaW", file="dpa4-starter.pt", card="README.md", elements=("Nb", "Mo", "Ta", "W"),
        preset="tiny (cutoff 5 A)", parameters=57_973,
        training_data="maml_MoNbTaW (Li et al. 2020, VASP PBE), 4859 frames",
        test_split="random by frame, 264 frames", errors={"all": (12.4, 94.0)},
        reference="least-squares composition bias (no isolated-atom reference)",
    ),
    PretrainedModel(
        name="small-MoNbTaW", file="dpa4-small-MoNbTaW.pt", card="small-MoNbTaW.md", elements=("Nb", "Mo", "Ta", "W"),
        preset="tiny widened to 32 channels (cutoff 5 A)", parameters=212_677,
        training_data="maml_MoNbTaW (Li et al. 2020, VASP PBE), 4541 frames, + 159 PBE dimer frames; fine-tuned "
                      "with the *_Elastic frames weighted up",
        test_split="grouped by trajectory (examples/monbtaw_split.py), 562 frames",
        errors={"AIMD": (17.0, 219.6), "Elastic": (6.9, 0.0), "Surface": (37.2, 120.0), "SS": (3.9, 8.4),
                "all": (8.1, 135.0)},
        reference="E0 = half the PBE dimer energy at 6 A (Matbench Discovery diatomics)",
    ),
    *(PretrainedModel(
        name=f"small-MoNbTaW-s{seed}", file=f"dpa4-small-MoNbTaW-s{seed}.pt", card="small-MoNbTaW-committee.md",
        elements=("Nb", "Mo", "Ta", "W"), preset="tiny widened to 32 channels (cutoff 5 A)", parameters=212_677,
        training_data=f"small-MoNbTaW fine-tuned 300 CPU-s more on its training split, seed {seed} (data order); a "
                      "member of small-MoNbTaW-committee",
        test_split="grouped by trajectory (examples/monbtaw_split.py), 562 frames", errors={"all": errors},
        reference="E0 = half the PBE dimer energy at 6 A (kept from small-MoNbTaW)",
    ) for seed, errors in ((1, (7.5, 130.9)), (2, (7.6, 130.7)))),
)}


#: Shipped committees (`dpa4 screen --committee NAME`): members by model name, the first is the main model.
COMMITTEES: dict[str, tuple[str, ...]] = {
    "small-MoNbTaW-committee": ("small-MoNbTaW", "small-MoNbTaW-s1", "small-MoNbTaW-s2"),
}


#: How many committee standard deviations make one standard error of the main model's energy per atom, measured on
#: held-out frames (benchmarks/committee_calibration.py; the card): the default ``--committee-k`` for that committee.
COMMITTEE_SCALES: dict[str, float] = {"small-MoNbTaW-committee": 5.6}


def expand_committee(entries: list[str] | tuple[str, ...]) -> list[str]:
    """``entries`` with every shipped committee's name replaced by its members' names (others unchanged)."""
    return [member for entry in entries for member in COMMITTEES.get(os.fspath(entry), (entry,))]


#: Short names that earlier releases and `dpa4 screen --model starter` accept.
ALIASES: dict[str, str] = {"starter": "starter-MoNbTaW", "dpa4-starter": "starter-MoNbTaW"}


def known_names() -> list[str]:
    return sorted(MODELS)


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """The file of a shipped model's name, or ``name_or_path`` itself as a path.

    An existing file always wins over a name. A string without a path separator or suffix that is no shipped
    model's name is refused, listing the names (a path that does not exist is left to the caller's loader).

    Raises:
        UnknownModelError: an unknown name.
        FileNotFoundError: a known name whose file is missing from this installation.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    model = MODELS.get(ALIASES.get(text, text))
    if model is None:
        if os.sep in text or "/" in text or path.suffix:
            return path
        raise UnknownModelError(f"{text!r} is neither a checkpoint file nor a shipped model; known models: "
                                f"{', '.join(known_names())}")
    if not model.path.is_file():
        raise FileNotFoundError(f"shipped model {model.name}: {model.path} is missing from this dpa4 installation")
    return model.path


def starter_checkpoint() -> Path:
    """Path of the starter model (tiny DPA4 trained on the vendored Mo-Nb-Ta-W DFT data).

    Raises:
        FileNotFoundError: the file is not part of this installation.
    """
    if not STARTER.is_file():
        raise FileNotFoundError(f"starter checkpoint {STARTER} is missing from this dpa4 installation")
    return STARTER
