"""MD ensemble names, defined once for the three MD entry points, and their ASE and atomate2 spellings.

- ``nve``: ASE ``VelocityVerlet``; atomate2 ``("nve", "velocityverlet")``; ``md_batch`` yes.
- ``nvt_langevin``: ``Langevin``; atomate2 ``("nvt", "langevin")``; ``md_batch`` yes.
- ``nvt_nose_hoover``: ``NoseHooverChainNVT``; atomate2 ``("nvt", NoseHooverChainNVT)``; ``md_batch`` no.
- ``npt``: ``MTKNPT`` (full cell); atomate2 ``("npt", "nose-hoover-chain")``; ``md_batch`` no.
- ``npt_isotropic``: ``IsotropicMTKNPT`` (volume only); atomate2 ``("npt", IsotropicMTKNPT)``; ``md_batch`` no.

``"nvt"`` (atomate2's name, whose default thermostat is Langevin) is accepted as ``nvt_langevin``; so are
atomate2's ``MDEnsemble`` members. Where atomate2 has no preset for an integrator, its dynamics is the ASE class.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT, MTKNPT, NoseHooverChainNVT
from ase.md.verlet import VelocityVerlet


class Ensemble(str, Enum):
    """The MD ensembles of dpa4 (value = the name users pass)."""

    NVE = "nve"
    NVT_LANGEVIN = "nvt_langevin"
    NVT_NOSE_HOOVER = "nvt_nose_hoover"
    NPT = "npt"
    NPT_ISOTROPIC = "npt_isotropic"

    @property
    def has_barostat(self) -> bool:
        return self in (Ensemble.NPT, Ensemble.NPT_ISOTROPIC)


ENSEMBLES: tuple[str, ...] = tuple(e.value for e in Ensemble)
ALIASES: dict[str, Ensemble] = {"nvt": Ensemble.NVT_LANGEVIN}

ASE_INTEGRATORS: dict[Ensemble, type] = {
    Ensemble.NVE: VelocityVerlet,
    Ensemble.NVT_LANGEVIN: Langevin,
    Ensemble.NVT_NOSE_HOOVER: NoseHooverChainNVT,
    Ensemble.NPT: MTKNPT,
    Ensemble.NPT_ISOTROPIC: IsotropicMTKNPT,
}

ATOMATE2: dict[Ensemble, tuple[str, str | type]] = {
    Ensemble.NVE: ("nve", "velocityverlet"),
    Ensemble.NVT_LANGEVIN: ("nvt", "langevin"),
    Ensemble.NVT_NOSE_HOOVER: ("nvt", NoseHooverChainNVT),
    Ensemble.NPT: ("npt", "nose-hoover-chain"),
    Ensemble.NPT_ISOTROPIC: ("npt", IsotropicMTKNPT),
}

BATCHED: tuple[Ensemble, ...] = (Ensemble.NVE, Ensemble.NVT_LANGEVIN)  # what md_batch integrates


def ensemble_name(value: Any) -> str:
    """The lower-case name of ``value``: a string, an :class:`Ensemble` or atomate2's ``MDEnsemble``."""
    return str(getattr(value, "value", value)).split("MDEnsemble.")[-1].lower()


def parse_ensemble(value: Any, error: type[ValueError] = ValueError) -> Ensemble:
    """The :class:`Ensemble` for a name (or alias, or atomate2 ``MDEnsemble``); anything else raises ``error``."""
    name = ensemble_name(value)
    if name in ALIASES:
        return ALIASES[name]
    try:
        return Ensemble(name)
    except ValueError:
        raise error(f"ensemble={value!r} is not known; use one of {', '.join(ENSEMBLES)} (or 'nvt')") from None
