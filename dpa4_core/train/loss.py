"""Training loss and validation metrics on energy per atom, forces and stress (spec section 7).

Loss terms (each a weighted mean over frames, frame weights from the data):
    - energy: ``|E_pred - E_ref| / n_atoms`` (eV/atom);
    - forces: per-atom error norm ``||F_pred - F_ref||`` (eV/A), each atom weighted by its frame's weight;
    - stress: as a virial per atom, ``|sigma_pred - sigma_ref| V / n_atoms`` averaged over the 9 components (eV/atom),
      only on frames labelled with stress. Using the virial keeps the term on the energy scale, so the paper's
      20 / 20 / 5 weights balance without unit gymnastics.
``kind="mse"`` squares each error instead; ``"huber"`` uses a smooth L1 with ``delta`` (same units).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpa4_core.train.dataset import Labels

EV_PER_A3_TO_GPA = 160.21766208


@dataclass(frozen=True)
class LossWeights:
    """Weights of the energy, force and stress terms and the error kind (``"mae"``, ``"mse"``, ``"huber"``)."""

    energy: float = 20.0
    forces: float = 20.0
    stress: float = 5.0
    kind: str = "mae"
    huber_delta: float = 0.01

    @classmethod
    def from_config(cls, loss) -> LossWeights:
        """From the ``loss`` section of a ``TrainConfig``."""
        return cls(loss.energy, loss.forces, loss.stress, loss.kind, loss.huber_delta)


def _penalty(error: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Elementwise penalty of a non-negative error."""
    if kind == "mae":
        return error
    if kind == "mse":
        return error**2
    if kind == "huber":
        return torch.where(error < delta, 0.5 * error**2 / delta, error - 0.5 * delta)
    raise ValueError(f"unknown loss kind {kind!r}; allowed: 'mae', 'mse', 'huber'")


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    total = weights.sum()
    return (values * weights).sum() / total.clamp_min(1e-12)


def compute_loss(pred: dict, labels: Labels, frame: torch.Tensor, weights: LossWeights) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts.

    Args:
        pred: model output with ``energy [F]``, ``forces [N,3]`` and (if stress is trained) ``stress [F,3,3]``.
        labels: the batch's labels.
        frame: ``[N]`` frame index of every atom (``AtomsBatch.frame``).
        weights: term weights and error kind.

    Returns:
        ``(loss, parts)`` with ``parts`` holding detached floats ``energy``, ``forces``, ``stress`` (unweighted).
    """
    kind, delta = weights.kind, weights.huber_delta
    w = labels.weight
    e_err = (pred["energy"] - labels.energy).abs() / labels.n_atoms
    loss_e = _weighted_mean(_penalty(e_err, kind, delta), w)
    f_err = torch.linalg.vector_norm(pred["forces"] - labels.forces, dim=-1)
    loss_f = _weighted_mean(_penalty(f_err, kind, delta), w[frame])
    loss = weights.energy * loss_e + weights.forces * loss_f
    parts = {"energy": float(loss_e.detach()), "forces": float(loss_f.detach())}
    if weights.stress > 0 and bool(labels.has_stress.any()) and "stress" in pred:
        per_atom_volume = (labels.volume / labels.n_atoms)[:, None, None]
        s_err = ((pred["stress"] - labels.stress).abs() * per_atom_volume).flatten(1)
        w_s = w * labels.has_stress.to(w.dtype)
        loss_s = _weighted_mean(_penalty(s_err, kind, delta).mean(dim=1), w_s)
        loss = loss + weights.stress * loss_s
        parts["stress"] = float(loss_s.detach())
    parts["total"] = float(loss.detach())
    return loss, parts


class MetricAccumulator:
    """Running sums for validation MAEs: energy (meV/atom), force components (meV/A), stress components (GPa)."""

    def __init__(self) -> None:
        self.e_abs = self.f_abs = self.s_abs = 0.0
        self.n_frames = self.n_atoms = self.n_stress = 0
        self.records: dict[str, list] = {"e_ref": [], "e_pred": [], "f_ref": [], "f_pred": []}

    def add(self, pred: dict, labels: Labels, keep: bool = False) -> None:
        """Accumulate one batch; ``keep`` stores per-atom energies and forces for parity plots."""
        e_ref = (labels.energy / labels.n_atoms).detach().double()
        e_pred = (pred["energy"].detach().double() / labels.n_atoms.double())
        self.e_abs += float((e_pred - e_ref).abs().sum()) * 1000.0
        self.f_abs += float((pred["forces"].detach().double() - labels.forces.double()).abs().sum()) * 1000.0
        self.n_frames += len(e_ref)
        self.n_atoms += int(labels.forces.shape[0])
        if "stress" in pred and bool(labels.has_stress.any()):
            mask = labels.has_stress
            diff = (pred["stress"].detach().double()[mask] - labels.stress.double()[mask]).abs()
            self.s_abs += float(diff.sum()) * EV_PER_A3_TO_GPA
            self.n_stress += int(mask.sum())
        if keep:
            self.records["e_ref"].append(e_ref.cpu())
            self.records["e_pred"].append(e_pred.cpu())
            self.records["f_ref"].append(labels.forces.detach().double().cpu().flatten())
            self.records["f_pred"].append(pred["forces"].detach().double().cpu().flatten())

    def result(self) -> dict:
        """``energy_mae_mev_per_atom``, ``force_mae_mev_per_a``, ``stress_mae_gpa`` (None without stress labels),
        ``n_frames``, ``n_atoms``, ``n_stress_frames``."""
        return {
            "energy_mae_mev_per_atom": self.e_abs / max(self.n_frames, 1),
            "force_mae_mev_per_a": self.f_abs / max(3 * self.n_atoms, 1),
            "stress_mae_gpa": self.s_abs / (9 * self.n_stress) if self.n_stress else None,
            "n_frames": self.n_frames,
            "n_atoms": self.n_atoms,
            "n_stress_frames": self.n_stress,
        }
