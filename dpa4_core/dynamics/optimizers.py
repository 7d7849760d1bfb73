"""Batched optimisers over the filter's degrees of freedom, each matching its ASE counterpart step by step.

Every system has atom degrees of freedom ``x [n_atoms, 3]`` and cell degrees of freedom ``c [F, 3, 3]``
(``RelaxState.x`` and ``RelaxState.c`` in :mod:`dpa4_core.dynamics.relax`); each optimiser keeps its own typed
state (:class:`FIREState`, :class:`LBFGSState`) and its ``step`` returns the new ``(x, c)``. The generalised forces
come from :mod:`dpa4_core.dynamics.cellfilter`. All scalar bookkeeping (time step, mixing, histories) is per
system, so a system's trajectory does not depend on which other systems share the batch.

- :class:`FIRE`: ``ase.optimize.FIRE`` (dt 0.1, maxstep 0.2 A, dtmax 1.0, Nmin 5, finc 1.1, fdec 0.5,
  astart 0.1, fa 0.99); the step length is capped on the norm of the whole system's step, as in ASE.
- :class:`LBFGS`: ``ase.optimize.LBFGS`` without line search (memory 100, damping 1, alpha 70, maxstep 0.2 A,
  capped on the largest row of the step). We add it as the second optimiser because near a minimum it needs
  far fewer steps than FIRE (a step is one batched model call, so fewer steps is the direct win), it needs one
  model call per step (a line search would make systems in one batch need different numbers of calls) and its
  state is a short per-system history that moves with the system when the batch changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpa4_core.dynamics.state import Rows, rows


class OptimizerConfigError(ValueError):
    """An optimiser was given an unknown name or a bad parameter."""


def system_dot(frame: torch.Tensor, a: tuple, b: tuple) -> torch.Tensor:
    """Per-system dot product of two (atom ``[N, ...]``, cell ``[F, ...]``) vectors, shape ``[F]``."""
    atom = (a[0] * b[0]).flatten(1).sum(dim=1)
    cell = (a[1] * b[1]).flatten(1).sum(dim=1)
    return cell.index_add(0, frame, atom)


def system_max_row(frame: torch.Tensor, atom: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Largest row norm per system of (atom ``[N, 3]``, cell ``[F, 3, 3]``), shape ``[F]``."""
    out = cell.norm(dim=2).amax(dim=1)
    return out.scatter_reduce(0, frame, atom.norm(dim=1), reduce="amax", include_self=True)


@dataclass
class FIREState(Rows):
    """FIRE's per-system state: velocities of the atom ``v [N, 3]`` and cell ``vc [F, 3, 3]`` degrees of freedom,
    time step ``dt [F]``, mixing ``a [F]``, downhill steps ``n [F]`` (long), ``started [F]`` (bool)."""

    v: torch.Tensor = rows("atom")
    vc: torch.Tensor = rows("system")
    dt: torch.Tensor = rows("system")
    a: torch.Tensor = rows("system")
    n: torch.Tensor = rows("system")
    started: torch.Tensor = rows("system")


@dataclass
class LBFGSState(Rows):
    """L-BFGS's per-system history, newest first (slot 0), ``m = memory``: steps ``s [N, m, 3]``,
    ``sc [F, m, 3, 3]``, gradient changes ``y``, ``yc`` (same shapes), ``rho [F, m]`` (0 = empty slot), the previous
    point ``x0 [N, 3]``, ``c0 [F, 3, 3]`` and its gradient ``g0``, ``gc0``, and ``iteration [F]`` (long)."""

    s: torch.Tensor = rows("atom")
    y: torch.Tensor = rows("atom")
    x0: torch.Tensor = rows("atom")
    g0: torch.Tensor = rows("atom")
    sc: torch.Tensor = rows("system")
    yc: torch.Tensor = rows("system")
    rho: torch.Tensor = rows("system")
    c0: torch.Tensor = rows("system")
    gc0: torch.Tensor = rows("system")
    iteration: torch.Tensor = rows("system")


@dataclass(frozen=True)
class FIRE:
    """Batched FIRE with ASE's parameters (see module docstring)."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    nmin: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99
    a: float = 0.1

    def __post_init__(self) -> None:
        if not (self.dt > 0 and self.maxstep > 0 and self.dtmax > 0):
            raise OptimizerConfigError(
                f"FIRE needs dt, maxstep, dtmax > 0, got {self.dt}, {self.maxstep}, {self.dtmax}"
            )

    def new_state(self, n_atoms: int, dtype: torch.dtype, device) -> FIREState:
        """The state of one new system of ``n_atoms`` atoms."""
        zeros = dict(dtype=dtype, device=device)
        return FIREState(
            v=torch.zeros(n_atoms, 3, **zeros),
            vc=torch.zeros(1, 3, 3, **zeros),
            dt=torch.full((1,), self.dt, **zeros),
            a=torch.full((1,), self.a, **zeros),
            n=torch.zeros(1, dtype=torch.long, device=device),
            started=torch.zeros(1, dtype=torch.bool, device=device),
        )

    def step(self, st: FIREState, frame: torch.Tensor, x: torch.Tensor, c: torch.Tensor, f_atom: torch.Tensor,
             f_cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One FIRE step for every system from ``x [N, 3]``, ``c [F, 3, 3]`` with the generalised forces ``f_*``;
        updates ``st`` in place and returns the new ``(x, c)``."""
        v, vc = st.v, st.vc
        dt, a, n, started = st.dt, st.a, st.n, st.started
        vf = system_dot(frame, (f_atom, f_cell), (v, vc))
        f2 = system_dot(frame, (f_atom, f_cell), (f_atom, f_cell))
        v2 = system_dot(frame, (v, vc), (v, vc))
        downhill = started & (vf > 0.0)
        uphill = started & ~(vf > 0.0)
        # Mixing (downhill): v <- (1 - a) v + a |v| f / |f|
        scale = torch.where(downhill, a * torch.sqrt(v2) / torch.sqrt(torch.clamp(f2, min=1e-300)), 0.0)
        keep = torch.where(uphill, 0.0, torch.where(downhill, 1.0 - a, 1.0))
        v = keep[frame, None] * v + scale[frame, None] * f_atom
        vc = keep[:, None, None] * vc + scale[:, None, None] * f_cell
        grow = downhill & (n > self.nmin)
        dt = torch.where(grow, torch.clamp(dt * self.finc, max=self.dtmax), dt)
        a = torch.where(grow, a * self.fa, a)
        n = torch.where(downhill, n + 1, n)
        dt = torch.where(uphill, dt * self.fdec, dt)
        a = torch.where(uphill, torch.full_like(a, self.astart), a)
        n = torch.where(uphill, torch.zeros_like(n), n)
        # Euler step, then cap the norm of the whole system's step at maxstep.
        v = v + dt[frame, None] * f_atom
        vc = vc + dt[:, None, None] * f_cell
        dr, dc = dt[frame, None] * v, dt[:, None, None] * vc
        norm = torch.sqrt(system_dot(frame, (dr, dc), (dr, dc)))
        cap = torch.where(norm > self.maxstep, self.maxstep / torch.clamp(norm, min=1e-300), 1.0)
        st.v, st.vc = v, vc
        st.dt, st.a, st.n = dt, a, n
        st.started = torch.ones_like(started)
        return x + cap[frame, None] * dr, c + cap[:, None, None] * dc


@dataclass(frozen=True)
class LBFGS:
    """Batched L-BFGS with ASE's parameters, no line search (see module docstring)."""

    maxstep: float = 0.2
    memory: int = 100
    damping: float = 1.0
    alpha: float = 70.0

    def __post_init__(self) -> None:
        if not (0 < self.maxstep <= 1.0):
            raise OptimizerConfigError(f"LBFGS maxstep must be in (0, 1] A (as in ASE), got {self.maxstep}")
        if self.memory < 1 or self.alpha <= 0:
            raise OptimizerConfigError(f"LBFGS needs memory >= 1 and alpha > 0, got {self.memory}, {self.alpha}")

    def new_state(self, n_atoms: int, dtype: torch.dtype, device) -> LBFGSState:
        """The (empty) history of one new system of ``n_atoms`` atoms."""
        z = dict(dtype=dtype, device=device)
        m = self.memory
        return LBFGSState(
            s=torch.zeros(n_atoms, m, 3, **z),
            y=torch.zeros(n_atoms, m, 3, **z),
            x0=torch.zeros(n_atoms, 3, **z),
            g0=torch.zeros(n_atoms, 3, **z),
            sc=torch.zeros(1, m, 3, 3, **z),
            yc=torch.zeros(1, m, 3, 3, **z),
            rho=torch.zeros(1, m, **z),
            c0=torch.zeros(1, 3, 3, **z),
            gc0=torch.zeros(1, 3, 3, **z),
            iteration=torch.zeros(1, dtype=torch.long, device=device),
        )

    def step(self, st: LBFGSState, frame: torch.Tensor, x: torch.Tensor, c: torch.Tensor, f_atom: torch.Tensor,
             f_cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One L-BFGS step for every system; updates ``st`` in place and returns the new ``(x, c)``.

        The history is a per-system buffer, newest first (slot 0). Empty slots have ``rho = 0`` and so drop out
        of both loops of the two-loop recursion, which lets systems with different history lengths share a batch.
        """
        g, gc = -f_atom, -f_cell
        it = st.iteration
        started = it > 0
        # History update (ASE: only once a previous point exists).
        s, sc = x - st.x0, c - st.c0
        y, yc = g - st.g0, gc - st.gc0
        ys = system_dot(frame, (y, yc), (s, sc))
        rho_new = torch.where(started & (ys != 0), 1.0 / torch.where(ys != 0, ys, 1.0), 0.0)
        push_atom = started[frame]

        def push(buffer, new, mask):
            rolled = torch.cat([new.unsqueeze(1), buffer[:, :-1]], dim=1)
            shape = (-1,) + (1,) * (buffer.dim() - 1)
            return torch.where(mask.view(shape), rolled, buffer)

        st.s = push(st.s, s, push_atom)
        st.y = push(st.y, y, push_atom)
        st.sc = push(st.sc, sc, started)
        st.yc = push(st.yc, yc, started)
        st.rho = push(st.rho, rho_new, started)
        hs, hy, hsc, hyc, rho = st.s, st.y, st.sc, st.yc, st.rho
        depth = int(min(self.memory, int(it.max()) if it.numel() else 0))
        # Two-loop recursion: newest -> oldest, H0 = 1/alpha, oldest -> newest.
        q, qc = g.clone(), gc.clone()
        alphas = []
        for k in range(depth):
            ak = rho[:, k] * system_dot(frame, (hs[:, k], hsc[:, k]), (q, qc))
            q = q - ak[frame, None] * hy[:, k]
            qc = qc - ak[:, None, None] * hyc[:, k]
            alphas.append(ak)
        z, zc = q / self.alpha, qc / self.alpha
        for k in reversed(range(depth)):
            bk = rho[:, k] * system_dot(frame, (hy[:, k], hyc[:, k]), (z, zc))
            coef = alphas[k] - bk
            z = z + coef[frame, None] * hs[:, k]
            zc = zc + coef[:, None, None] * hsc[:, k]
        dr, dc = -z, -zc
        longest = system_max_row(frame, dr, dc)
        cap = torch.where(longest >= self.maxstep, self.maxstep / torch.clamp(longest, min=1e-300), 1.0) * self.damping
        st.x0, st.c0, st.g0, st.gc0 = x, c, g, gc
        st.iteration = it + 1
        return x + cap[frame, None] * dr, c + cap[:, None, None] * dc


def make_optimizer(name: str | FIRE | LBFGS, **kwargs) -> FIRE | LBFGS:
    """``"fire"`` or ``"lbfgs"`` (case-insensitive) with ASE-named keyword parameters, or an instance as is."""
    if isinstance(name, FIRE | LBFGS):
        return name
    table = {"fire": FIRE, "lbfgs": LBFGS}
    key = str(name).lower()
    if key not in table:
        raise OptimizerConfigError(f"unknown optimizer {name!r}; use one of {sorted(table)}")
    try:
        return table[key](**kwargs)
    except TypeError as exc:
        raise OptimizerConfigError(f"bad parameters for {key}: {exc}") from exc
