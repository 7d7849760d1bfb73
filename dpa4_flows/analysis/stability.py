"""Formation energy and energy above the convex hull, outside jobflow.

``compute_stability(candidates, references)`` builds pymatgen entries from whatever the caller has
(entries, task documents, ``{"structure"|"composition", "energy"}`` dicts, or an entries JSON file for the
references), builds one convex hull over references and candidates (candidates compete with each other as
well as with the references), and returns one :class:`~dpa4_flows.schemas.StabilityDoc` per candidate.

atomate2 has no hull code, and MP2020 corrections need parameters that its task documents lack, so energies
are used uncorrected: candidates and references must come from the same model (or the same DFT setup).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from monty.serialization import loadfn
from pymatgen.analysis.phase_diagram import PatchedPhaseDiagram, PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from dpa4_flows.schemas import DecompositionProduct, StabilityDoc

logger = logging.getLogger(__name__)

#: Above this many elements the hull is split into patches (pymatgen's PatchedPhaseDiagram), which is
#: ~50x faster for thousands of entries; below it one PhaseDiagram is fast enough and simplest.
PATCHED_MIN_ELEMENTS = 5


class StabilityInputError(ValueError):
    """A candidate or reference cannot be turned into an entry, or references miss an element."""


def to_entry(obj: Any, default_id: str) -> ComputedEntry:
    """A pymatgen entry (total energy in eV) from an entry, a task document or a dict.

    Accepted: ``ComputedEntry``/``PDEntry``; an object with ``.structure`` and ``.output.energy`` (atomate2
    ``ForceFieldTaskDocument``); a dict with ``energy`` (eV, total) and ``structure`` or ``composition``,
    optionally ``entry_id``; a serialised entry dict (``@class``). The id defaults to ``default_id``.
    """
    if isinstance(obj, dict) and "@class" in obj:
        obj = loadfn_dict(obj)
    if isinstance(obj, ComputedEntry):
        entry = obj
    elif isinstance(obj, PDEntry):
        entry = ComputedEntry(obj.composition, obj.energy, entry_id=getattr(obj, "entry_id", None))
    elif hasattr(obj, "structure") and hasattr(obj, "output") and getattr(obj.output, "energy", None) is not None:
        entry = ComputedStructureEntry(obj.structure, float(obj.output.energy), entry_id=getattr(obj, "uuid", None))
    elif isinstance(obj, dict) and "energy" in obj and ("structure" in obj or "composition" in obj):
        energy = float(obj["energy"])
        if obj.get("structure") is not None:
            structure = obj["structure"]
            structure = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
            entry = ComputedStructureEntry(structure, energy, entry_id=obj.get("entry_id"))
        else:
            entry = ComputedEntry(Composition(obj["composition"]), energy, entry_id=obj.get("entry_id"))
    else:
        raise StabilityInputError(
            f"cannot make an entry from {type(obj).__name__} {str(obj)[:80]!r}: give a pymatgen entry, a task "
            "document with structure and output.energy, or a dict with 'energy' and 'structure'/'composition'"
        )
    if not entry.entry_id:
        entry.entry_id = default_id
    if entry.composition.num_atoms <= 0:
        raise StabilityInputError(f"entry {entry.entry_id!r} has an empty composition")
    return entry


def loadfn_dict(obj: dict) -> Any:
    from monty.json import MontyDecoder

    return MontyDecoder().process_decoded(obj)


def load_entries(path: str | Path) -> list[ComputedEntry]:
    """Entries from a JSON file: a list of serialised pymatgen entries or ``{composition, energy}`` dicts, or a
    dict of them keyed by name (e.g. Matbench Discovery's element -> reference entry file)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise StabilityInputError(f"reference entries file {str(path)!r} does not exist")
    data = loadfn(path)
    if isinstance(data, dict) and "entries" in data:
        data = data["entries"]
    elif isinstance(data, dict) and data and all(isinstance(k, str) for k in data) and "energy" not in data:
        data = list(data.values())
    if not isinstance(data, list):
        raise StabilityInputError(f"{path}: expected a list of entries, got {type(data).__name__}")
    return [to_entry(item, f"{path.name}:{i}") for i, item in enumerate(data)]


def _as_entries(items: Iterable[Any] | str | Path, prefix: str) -> list[ComputedEntry]:
    if isinstance(items, str | Path):
        return load_entries(items)
    return [to_entry(item, f"{prefix}-{i}") for i, item in enumerate(items)]


def reference_set_id(references: Sequence[ComputedEntry]) -> str:
    """sha256 of the sorted (id, formula, energy) of the references: equal sets give equal ids."""
    keys = sorted(f"{e.entry_id}|{e.composition.formula}|{e.energy:.8f}" for e in references)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def build_phase_diagram(
    entries: Sequence[ComputedEntry], method: Literal["auto", "phase_diagram", "patched"] = "auto"
) -> PhaseDiagram:
    """A convex hull over ``entries``; raises :class:`StabilityInputError` if an element has no pure entry."""
    elements = sorted({el for e in entries for el in e.composition.elements})
    pure = {e.composition.elements[0] for e in entries if len(e.composition.elements) == 1}
    missing = [str(el) for el in elements if el not in pure]
    if missing:
        raise StabilityInputError(f"no elemental reference for {missing}: supply references for every element")
    if method not in ("auto", "phase_diagram", "patched"):
        raise StabilityInputError(f"method={method!r}; allowed: 'auto', 'phase_diagram', 'patched'")
    patched = method == "patched" or (method == "auto" and len(elements) >= PATCHED_MIN_ELEMENTS)
    return PatchedPhaseDiagram(entries, keep_all_spaces=True) if patched else PhaseDiagram(entries)


def compute_stability(
    candidates: Iterable[Any],
    references: Iterable[Any] | str | Path,
    *,
    model_id: str | None = None,
    tolerance: float = 1e-6,
    include_candidates_in_hull: bool = True,
    method: Literal["auto", "phase_diagram", "patched"] = "auto",
) -> list[StabilityDoc]:
    """Formation energy, e_above_hull and decomposition of every candidate.

    Args:
        candidates: entries, task documents or dicts (see :func:`to_entry`); total energies in eV.
        references: the same kinds, or the path of an entries JSON file; must contain every element.
        model_id: identifier of the model that computed the energies (``sha256:<hex>`` of the checkpoint).
        tolerance: a candidate is stable if ``e_above_hull <= tolerance`` (eV/atom).
        include_candidates_in_hull: build the hull from references and candidates (True: the candidates'
            mutual competition counts) or from references only (False: Matbench-Discovery style).
        method: "phase_diagram", "patched" (PatchedPhaseDiagram), or "auto" (patched from 5 elements).

    Returns:
        One ``StabilityDoc`` per candidate, in input order. Properties (tested): ``e_above_hull >= 0``;
        ``energy_per_atom - e_above_hull`` equals the fraction-weighted energy of the decomposition products.
    """
    cand = _as_entries(candidates, "candidate")
    refs = _as_entries(references, "reference")
    if not cand:
        return []
    hull_entries = refs + cand if include_candidates_in_hull else refs
    diagram = build_phase_diagram(hull_entries, method)
    set_id = reference_set_id(refs)
    ref_ids_by_element = {}
    for el, ref in diagram.el_refs.items():
        ref_ids_by_element[el] = str(ref.entry_id)

    docs = []
    for entry in cand:
        decomp, e_hull = diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)
        if e_hull < 0:
            # Only possible when the hull excludes the candidates: it is below the reference hull.
            logger.debug("candidate %s is %.4f eV/atom below the reference hull", entry.entry_id, e_hull)
        e_hull = max(float(e_hull), 0.0) if include_candidates_in_hull else float(e_hull)
        structure = entry.structure if isinstance(entry, ComputedStructureEntry) else None
        docs.append(
            StabilityDoc(
                candidate_id=str(entry.entry_id),
                formula=entry.composition.reduced_formula,
                composition={str(el): float(n) for el, n in entry.composition.items()},
                n_atoms=int(round(entry.composition.num_atoms)),
                energy_per_atom=float(entry.energy_per_atom),
                formation_energy_per_atom=float(diagram.get_form_energy_per_atom(entry)),
                e_above_hull=e_hull,
                decomposition=[
                    DecompositionProduct(
                        formula=p.composition.reduced_formula, entry_id=str(p.entry_id), fraction=float(f)
                    )
                    for p, f in sorted(decomp.items(), key=lambda kv: -kv[1])
                ],
                is_stable=e_hull <= tolerance,
                stability_tolerance=tolerance,
                model_id=model_id,
                reference_ids=sorted(ref_ids_by_element[el] for el in entry.composition.elements),
                reference_set_id=set_id,
                structure=structure,
            )
        )
    return docs
