"""Composition energy bias: least-squares ``sum_t n_{f,t} b_t ~ E_f`` over training frames (spec section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

N_ELEMENTS = 119


class BiasFitError(ValueError):
    """Inputs to :func:`fit_energy_bias` that cannot define a bias (empty, mismatched, non-finite, bad Z)."""


def fit_energy_bias(numbers_per_frame: Sequence, energies: Sequence | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-element reference energies ``b [119]`` (eV, float64) minimising ``sum_f (sum_t n_{f,t} b_t - E_f)^2``.

    Elements that never occur get 0. When the composition matrix is rank deficient (e.g. every frame has the
    same stoichiometry) the minimum-norm solution is returned, which still reproduces the fitted energies.

    Args:
        numbers_per_frame: F arrays/tensors of atomic numbers (1..118), one per frame.
        energies: ``[F]`` total energies in eV.
    """
    energies = np.asarray(torch.as_tensor(energies, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1)
    if len(numbers_per_frame) == 0:
        raise BiasFitError("fit_energy_bias needs at least one frame, got 0")
    if len(numbers_per_frame) != len(energies):
        raise BiasFitError(f"got {len(numbers_per_frame)} frames but {len(energies)} energies")
    if not np.isfinite(energies).all():
        raise BiasFitError("energies contain NaN or infinite values")
    counts = np.zeros((len(energies), N_ELEMENTS))
    for f, numbers in enumerate(numbers_per_frame):
        z = np.asarray(torch.as_tensor(numbers).cpu()).astype(np.int64).reshape(-1)
        if z.size == 0 or z.min() < 1 or z.max() >= N_ELEMENTS:
            raise BiasFitError(f"frame {f}: atomic numbers must be in 1..{N_ELEMENTS - 1}, got {z.tolist()[:10]}")
        counts[f] = np.bincount(z, minlength=N_ELEMENTS)
    present = counts.sum(0) > 0
    solution, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    bias = np.zeros(N_ELEMENTS)
    bias[present] = solution
    return torch.as_tensor(bias, dtype=torch.float64)


# ------------------------------------------------------------------------------------ isolated-atom energies E0
def dimer_curve(path, element: str, functional: str = "PBE") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(distances [P] A, energies [P] eV, forces [P,2,3] eV/A)`` of the homonuclear dimer ``element``-``element``
    from a Matbench Discovery ``diatomics-dft.json(.gz)`` file (VASP, 15 A box, spin-polarised; sorted by distance).

    Raises:
        BiasFitError: the file has no curve for this element and functional.
    """
    import gzip
    import json
    from pathlib import Path

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        curves = json.load(handle)
    curve = curves.get(functional, {}).get(f"{element}-{element}")
    if curve is None:
        raise BiasFitError(f"{path}: no {functional} dimer curve for {element}")
    r = np.asarray(curve["distances"], dtype=np.float64)
    order = np.argsort(r)
    energies = np.asarray(curve["energies"], dtype=np.float64)[order]
    forces = np.asarray(curve["forces"], dtype=np.float64).reshape(len(r), 2, 3)[order]
    return r[order], energies, forces


def dimer_e0(path, elements, functional: str = "PBE") -> dict[str, float]:
    """Isolated-atom energies ``E0(el) = E_dimer(r_max) / 2`` (eV) at the largest separation of each curve.

    At 6 A the vendored curves are 2-10 meV (per atom) below the free-atom limit (their last steps still rise by
    ~5 meV per atom); the E0 is that of the largest computed separation, not an extrapolation.
    """
    return {el: float(dimer_curve(path, el, functional)[1][-1] / 2.0) for el in elements}


def e0_vector(e0: dict[str, float]) -> torch.Tensor:
    """``{"Mo": -4.6, ...}`` -> ``[119]`` float64 by atomic number (0 for elements not given)."""
    from ase.data import atomic_numbers

    vector = torch.zeros(N_ELEMENTS, dtype=torch.float64)
    for symbol, value in e0.items():
        if symbol not in atomic_numbers or atomic_numbers[symbol] < 1:
            raise BiasFitError(f"e0: unknown element symbol {symbol!r}")
        if not np.isfinite(value):
            raise BiasFitError(f"e0[{symbol}] = {value} is not finite")
        vector[atomic_numbers[symbol]] = float(value)
    return vector


def packaged_dimer_e0(elements) -> dict[str, float]:
    """The E0 of :func:`dimer_e0` for ``elements`` from the table shipped with dpa4 (``pbe_dimer_e0.json``: the
    Matbench Discovery PBE dimer curves, Z = 1-92, MIT licence), so an installed dpa4 needs no data folder.

    Raises:
        BiasFitError: an element without a PBE dimer curve (Z > 92).
    """
    import json
    from importlib.resources import files

    table = json.loads(files("dpa4_core.model").joinpath("pbe_dimer_e0.json").read_text())["e0_ev"]
    missing = [el for el in elements if el not in table]
    if missing:
        raise BiasFitError(f"no PBE dimer E0 for {missing} (the shipped table covers Z = 1-92); give bias.e0 values")
    return {el: float(table[el]) for el in elements}
