"""Reusable physics checks for any model with the DPA4 call contract (e3nn / nequip style).

A "model" here is anything with ``model.config.cutoff`` and
``model(batch, compute_forces=..., compute_stress=...) -> {"energy" [F], "atom_energy" [N], "forces" [N, 3],
"stress" [F, 3, 3], "virial" [F, 3, 3]}`` (see DEVELOPING.md). Structures are ASE ``Atoms``. Results come back as
float64 NumPy arrays in eV, eV/A and eV/A^3 (ASE stress sign: ``sigma = (1/V) dE/d(strain)``).

The ``assert_*`` helpers raise ``AssertionError`` with the measured error; the other helpers return numbers so a
test can state its own bound. Finite differences batch all displaced copies into one model call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from dpa4_core.data.batch import AtomsBatch, validate_atoms
from dpa4_core.data.paths import vendored

# ZBL universal screening function (Ziegler, Biersack, Littmark 1985), restated from the formula.
ZBL_COULOMB = 14.399645  # e^2 / (4 pi eps0) in eV A
ZBL_COEFFICIENTS = ((0.18175, 3.19980), (0.50986, 0.94229), (0.28022, 0.40290), (0.02817, 0.20162))


def read_vendored(*parts: str, index: int = 0) -> Atoms:
    """Frame ``index`` of a vendored data file as plain ASE ``Atoms`` (see ``data/README.md``).

    ``.json.gz`` files are lists of records with a pymatgen ``structure`` (maml, mlearn); ``.xyz.gz`` files are
    extended XYZ (botnet molecules, read without pbc).
    """
    import gzip
    import io

    from ase.io import read

    path = vendored(*parts)
    if path.name.endswith(".json.gz"):
        import json

        from pymatgen.core import Structure
        from pymatgen.io.ase import AseAtomsAdaptor

        with gzip.open(path, "rt") as stream:
            records = json.load(stream)
        return Atoms(AseAtomsAdaptor.get_atoms(Structure.from_dict(records[index]["structure"])))
    # Cut the frame out of the text ourselves: ase's extxyz reader first seeks through the whole gzip file.
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as stream:
        for _ in range(index + 1):
            count = int(stream.readline())
            lines = [stream.readline() for _ in range(count + 1)]
    atoms = read(io.StringIO(f"{count}\n" + "".join(lines)), format="extxyz")
    atoms.calc = None
    return atoms


def seeded_model(config, seed: int = 0, dtype: torch.dtype = torch.float64, noise: float = 0.1):
    """``DPA4(config)`` with every parameter and the energy bias randomised reproducibly.

    Initialisation leaves several maps at zero (post-mix, output heads: every block starts as the identity),
    which would let a symmetry test pass without exercising the blocks; adding seeded Gaussian noise of
    scale ``noise`` to every parameter makes all of them active. Torch's global RNG is left untouched.
    """
    from dpa4_core.model.energy import DPA4

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DPA4(config).double()
        generator = torch.Generator().manual_seed(seed + 1)
        # Draw in float64 and cast afterwards, so the same seed gives the same model in every dtype.
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(noise * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
            model.energy_bias.copy_(-5 * torch.rand(model.energy_bias.shape, generator=generator, dtype=torch.float64))
    return model.to(dtype).eval()


def saved_tensor_bytes(fn):
    """``(fn(), bytes)``: the result of ``fn`` and the bytes of the distinct storages autograd saved for backward
    while it ran (views of one storage count once; a dtype cast is a new storage)."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """Floating dtype of the model's parameters (float64 if it has none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float64


def model_device(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def evaluate(
    model,
    structures: Atoms | Sequence[Atoms],
    compute_forces: bool = True,
    compute_stress: bool = True,
    cutoff: float | None = None,
    chunk: int | None = None,
    validate: bool = True,
) -> dict[str, np.ndarray]:
    """Run ``model`` on one or many structures in the model's dtype.

    Args:
        structures: one ``Atoms`` or a list (frames of any size, periodic or not).
        cutoff: neighbour-list cutoff in A, default ``model.config.cutoff`` (a larger one must not matter).
        chunk: evaluate at most this many frames per model call (bounds memory of finite differences).
        validate: run ``AtomsBatch``'s input checks on every frame (its coincident-atom search costs ~20 ms
            per frame, so the scan helpers validate only the undisplaced structure).

    Returns:
        ``energy [F]``, ``atom_energy [N]``, ``forces [N, 3]`` (if computed), ``stress``/``virial [F, 3, 3]``
        (if computed), ``frame [N]``, all float64 NumPy arrays (``frame`` int64).
    """
    if isinstance(structures, Atoms):
        structures = [structures]
    structures = list(structures)
    chunk = chunk or len(structures)
    parts = []
    for start in range(0, len(structures), chunk):
        batch = AtomsBatch.from_atoms(
            structures[start : start + chunk],
            cutoff=model.config.cutoff if cutoff is None else cutoff,
            dtype=model_dtype(model),
            device=model_device(model),
            validate=validate,
        )
        out = model(batch, compute_forces=compute_forces, compute_stress=compute_stress)
        part = {k: v.detach().cpu().double().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
        part["frame"] = batch.frame.cpu().numpy() + start
        parts.append(part)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def random_rotation(seed: int = 0) -> np.ndarray:
    """A uniformly random proper rotation matrix ``[3, 3]`` (det +1), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def rotated(atoms: Atoms, rotation: np.ndarray) -> Atoms:
    """Copy of ``atoms`` with positions and cell rows rotated: ``x -> R x`` (row vectors: ``x @ R.T``)."""
    out = atoms.copy()
    out.positions = atoms.positions @ rotation.T
    if atoms.pbc.any():
        out.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    return out


def relative_error(actual: np.ndarray, expected: np.ndarray, floor: float = 1e-12) -> float:
    """``max |actual - expected| / max(max |expected|, floor)``."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected shape {expected.shape}")
    scale = max(float(np.abs(expected).max(initial=0.0)), floor)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def assert_close(actual, expected, rtol: float, name: str, floor: float = 1e-12) -> None:
    """Assert ``relative_error(actual, expected, floor) <= rtol`` with a message giving the error."""
    error = relative_error(actual, expected, floor)
    if not error <= rtol:  # also catches NaN
        raise AssertionError(f"{name}: relative error {error:.3e} > {rtol:.1e}")


def assert_rotation_equivariant(model, atoms: Atoms, seed: int = 0, rtol: float = 1e-10) -> None:
    """E invariant, forces rotate (``F -> F R^T``), stress rotates (``R S R^T``) under a random rotation."""
    rotation = random_rotation(seed)
    periodic = bool(atoms.pbc.any())
    ref = evaluate(model, atoms, compute_stress=periodic)
    rot = evaluate(model, rotated(atoms, rotation), compute_stress=periodic)
    assert_close(rot["energy"], ref["energy"], rtol, "energy under rotation")
    assert_close(rot["atom_energy"], ref["atom_energy"], rtol, "atom energies under rotation")
    assert_close(rot["forces"], ref["forces"] @ rotation.T, rtol, "forces under rotation")
    if periodic:
        assert_close(rot["stress"][0], rotation @ ref["stress"][0] @ rotation.T, rtol, "stress under rotation")


def assert_translation_invariant(model, atoms: Atoms, seed: int = 0, rtol: float = 1e-10) -> None:
    """E, forces and stress unchanged by a random rigid translation (and, for cells, by wrapping)."""
    shift = np.random.default_rng(seed).normal(scale=3.0, size=3)
    moved = atoms.copy()
    moved.positions += shift
    candidates = [moved]
    if atoms.pbc.all():
        wrapped = moved.copy()
        wrapped.wrap()
        candidates.append(wrapped)
    periodic = bool(atoms.pbc.any())
    ref = evaluate(model, atoms, compute_stress=periodic)
    for index, other in enumerate(candidates):
        out = evaluate(model, other, compute_stress=periodic)
        label = "translation" if index == 0 else "translation + wrap"
        assert_close(out["energy"], ref["energy"], rtol, f"energy under {label}")
        assert_close(out["forces"], ref["forces"], rtol, f"forces under {label}")
        if periodic:
            assert_close(out["stress"], ref["stress"], rtol, f"stress under {label}")


def assert_permutation_equivariant(model, atoms: Atoms, seed: int = 0, rtol: float = 1e-10) -> None:
    """Renumbering the atoms permutes forces and atom energies and leaves E and stress unchanged."""
    order = np.random.default_rng(seed).permutation(len(atoms))
    periodic = bool(atoms.pbc.any())
    ref = evaluate(model, atoms, compute_stress=periodic)
    out = evaluate(model, atoms[order], compute_stress=periodic)
    assert_close(out["energy"], ref["energy"], rtol, "energy under permutation")
    assert_close(out["atom_energy"], ref["atom_energy"][order], rtol, "atom energies under permutation")
    assert_close(out["forces"], ref["forces"][order], rtol, "forces under permutation")
    if periodic:
        assert_close(out["stress"], ref["stress"], rtol, "stress under permutation")


def finite_difference_forces(
    model, atoms: Atoms, delta: float = 1e-4, indices: Sequence[int] | None = None, chunk: int = 64
) -> np.ndarray:
    """Central-difference forces ``-(E(x + d) - E(x - d)) / 2d`` for the atoms in ``indices`` (default all).

    Returns:
        ``[len(indices), 3]`` in eV/A. Error O(delta^2); round-off about eps * E / delta.
    """
    validate_atoms(atoms)
    indices = range(len(atoms)) if indices is None else indices
    images = []
    for atom in indices:
        for axis in range(3):
            for sign in (1.0, -1.0):
                image = atoms.copy()
                image.positions[atom, axis] += sign * delta
                images.append(image)
    energy = evaluate(model, images, compute_forces=False, compute_stress=False, chunk=chunk, validate=False)
    energy = energy["energy"]
    return -(energy[0::2] - energy[1::2]).reshape(-1, 3) / (2 * delta)


def strained(atoms: Atoms, strain: np.ndarray) -> Atoms:
    """Copy with cell and positions deformed by ``x -> (1 + strain) x`` (row vectors: ``x @ (I + strain)``)."""
    deformation = np.eye(3) + strain
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ deformation, scale_atoms=False)
    out.positions = atoms.positions @ deformation
    return out


def finite_difference_stress(model, atoms: Atoms, delta: float = 1e-5) -> np.ndarray:
    """Stress ``(1/V) dE/d(strain)`` by central differences of symmetric strains, ``[3, 3]`` eV/A^3 (ASE sign)."""
    if not atoms.pbc.all():
        raise ValueError(f"finite_difference_stress needs a periodic structure, got pbc={atoms.pbc.tolist()}")
    validate_atoms(atoms)
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]
    images = []
    for a, b in pairs:
        for sign in (1.0, -1.0):
            strain = np.zeros((3, 3))
            strain[a, b] += 0.5 * sign * delta
            strain[b, a] += 0.5 * sign * delta
            images.append(strained(atoms, strain))
    energy = evaluate(model, images, compute_forces=False, compute_stress=False, validate=False)["energy"]
    stress = np.zeros((3, 3))
    for index, (a, b) in enumerate(pairs):
        stress[a, b] = stress[b, a] = (energy[2 * index] - energy[2 * index + 1]) / (2 * delta)
    return stress / atoms.get_volume()


def energy_along_path(
    model, atoms: Atoms, direction: np.ndarray, steps: np.ndarray, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Energy and its path derivative from the forces along ``positions + s * direction``.

    Args:
        direction: ``[N, 3]`` displacement per unit ``s`` (A).
        steps: ``[S]`` values of ``s``.

    Returns:
        ``(energy [S], dE/ds [S])`` with ``dE/ds = -sum(F * direction)`` from the model's forces.
    """
    images = []
    for s in steps:
        image = atoms.copy()
        image.positions = atoms.positions + s * direction
        images.append(image)
    validate_atoms(images[0])
    out = evaluate(model, images, compute_stress=False, chunk=chunk, validate=False)
    forces = out["forces"].reshape(len(steps), len(atoms), 3)
    slope = -np.einsum("sni,ni->s", forces, direction)
    return out["energy"], slope


def path_consistency_error(steps: np.ndarray, energy: np.ndarray, slope: np.ndarray) -> float:
    """Largest mismatch between the forces' path derivative and the energy's, in eV per unit ``s``.

    ``max_k |dE/ds(s_k) - D(s_k)|`` over ``k = 2 .. S-3``, with ``D`` the fourth-order (Richardson) central
    difference ``(8 (E_{k+1} - E_{k-1}) - (E_{k+2} - E_{k-2})) / 12h`` on an evenly spaced path. For a smooth
    energy the mismatch is O(h^4 E^(5)) plus round-off ``~eps |E| / h``; a jump J in the energy shows up as
    about ``J / h``, a jump J in the force as about ``J / 2``: the check catches both.
    """
    steps = np.asarray(steps, dtype=float)
    spacing = np.diff(steps)
    if len(steps) < 5 or not np.allclose(spacing, spacing[0], rtol=1e-9, atol=0.0):
        raise ValueError(f"need >= 5 evenly spaced path points, got {len(steps)} with spacings {spacing[:3]}...")
    h = spacing[0]
    central = (8 * (energy[3:-1] - energy[1:-3]) - (energy[4:] - energy[:-4])) / (12 * h)
    return float(np.abs(slope[2:-2] - central).max())


def zbl_pair_energy(z1: int, z2: int, r: float | np.ndarray) -> np.ndarray:
    """Untapered ZBL repulsion ``V(r)`` in eV for a pair of atomic numbers at distance ``r`` (A)."""
    r = np.asarray(r, dtype=float)
    screening_length = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / screening_length
    phi = sum(c * np.exp(-d * x) for c, d in ZBL_COEFFICIENTS)
    return ZBL_COULOMB * z1 * z2 / r * phi


def zbl_pair_force(z1: int, z2: int, r: float | np.ndarray) -> np.ndarray:
    """``-dV/dr`` of :func:`zbl_pair_energy` in eV/A (positive = repulsive), differentiated analytically."""
    r = np.asarray(r, dtype=float)
    screening_length = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / screening_length
    phi = sum(c * np.exp(-d * x) for c, d in ZBL_COEFFICIENTS)
    dphi = sum(-c * d * np.exp(-d * x) for c, d in ZBL_COEFFICIENTS) / screening_length
    prefactor = ZBL_COULOMB * z1 * z2
    return -(prefactor * (dphi / r - phi / r**2))


class PairModelConfig:
    """Minimal config for :class:`MorsePairModel` (only ``cutoff`` is part of the contract)."""

    def __init__(self, cutoff: float = 5.0) -> None:
        self.cutoff = float(cutoff)


class MorsePairModel(torch.nn.Module):
    """A synthetic conservative pair potential with the DPA4 call contract, for checking the checks.

    ``E = sum_i b[Z_i] + 1/2 sum_edges D (e^{-2a(r - r0)} - 2 e^{-a(r - r0)}) f(r)`` with ``f`` the C^3 envelope
    ``E_5(r / r_c)`` or, with ``hard_cutoff=True``, a step function: the latter is deliberately discontinuous
    at the cutoff so a smoothness test can show that it fails.
    """

    def __init__(self, cutoff: float = 5.0, hard_cutoff: bool = False, depth: float = 0.3, r0: float = 2.7) -> None:
        super().__init__()
        self.config = PairModelConfig(cutoff)
        self.hard_cutoff = hard_cutoff
        self.depth, self.r0, self.a = depth, r0, 1.3
        self.register_buffer("energy_bias", torch.zeros(119, dtype=torch.float64))

    def _envelope(self, r: torch.Tensor) -> torch.Tensor:
        x = r / self.config.cutoff
        if self.hard_cutoff:
            return (x < 1).to(r.dtype)
        u = (1 - x).clamp(min=0)
        poly = 1 + 4 * x + 10 * x**2 + 20 * x**3 + 35 * x**4
        return u**4 * poly * (x < 1)

    def atom_energies(
        self, numbers: torch.Tensor, edge_vec: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
    ) -> torch.Tensor:
        """Per-atom energies ``[N]`` (eV) from edge vectors, the pure tensor function of the contract."""
        r = edge_vec.norm(dim=-1)
        pair = self.depth * (torch.exp(-2 * self.a * (r - self.r0)) - 2 * torch.exp(-self.a * (r - self.r0)))
        atom_energy = self.energy_bias.to(edge_vec.dtype)[numbers].clone()
        return atom_energy.index_add(0, edge_dst, 0.5 * pair * self._envelope(r))

    def forward(self, batch: AtomsBatch, compute_forces: bool = True, compute_stress: bool = True) -> dict:
        edge_vec = batch.edge_vectors().detach().requires_grad_(True)
        with torch.enable_grad():
            atom_energy = self.atom_energies(batch.numbers, edge_vec, batch.edge_src, batch.edge_dst)
            energy = torch.zeros(batch.n_frames, dtype=edge_vec.dtype).index_add(0, batch.frame, atom_energy)
            (grad,) = torch.autograd.grad(energy.sum(), edge_vec)
        forces = torch.zeros_like(batch.positions).index_add(0, batch.edge_dst, grad)
        forces = forces.index_add(0, batch.edge_src, -grad)
        edge_frame = batch.frame[batch.edge_dst]
        virial = torch.zeros(batch.n_frames, 3, 3, dtype=edge_vec.dtype).index_add(
            0, edge_frame, -grad[:, :, None] * edge_vec.detach()[:, None, :]
        )
        volume = batch.volume()
        periodic = volume > 0
        stress = torch.where(periodic[:, None, None], -virial / volume.clamp(min=1e-30)[:, None, None], 0.0)
        return {"energy": energy.detach(), "atom_energy": atom_energy.detach(), "forces": forces,
                "stress": stress, "virial": virial}
