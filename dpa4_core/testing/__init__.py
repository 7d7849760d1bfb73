"""Reusable physics checks for any model with the DPA4 call contract (e3nn / nequip style).

A "model" here is anything with ``model.config.cutoff`` and
``model(batch, compute_forces=..., compute_stress=...) -> {"energy" [F], "atom_energy" [N], "forces" [N, 3],
"stress" [F, 3, 3], "virial" [F, 3, 3]}`` (see DEVELOPING.md). Structures are ASE ``Atoms`` supplied by the caller;
results are float64 NumPy arrays in eV, eV/A and eV/A^3 (ASE stress sign).

- :mod:`~dpa4_core.testing.predict`: ``predict(model, structures)``, the model's outputs as NumPy arrays.
- :mod:`~dpa4_core.testing.symmetry`: ``assert_rotation_equivariant(model, atoms)``, translation, permutation.
- :mod:`~dpa4_core.testing.derivatives`: finite-difference forces and stress, energy/force along a path.
- :mod:`~dpa4_core.testing.seeded`: ``seeded_model(config, seed)``, a DPA4 with every parameter active.
- :mod:`~dpa4_core.testing.pair`: ``LennardJones``, an exact-physics toy model for optimisers and integrators.
"""

from dpa4_core.testing.derivatives import (
    assert_conservative,
    energy_along_path,
    finite_difference_forces,
    finite_difference_stress,
    path_consistency_error,
    strained,
)
from dpa4_core.testing.pair import LennardJones
from dpa4_core.testing.predict import model_device, model_dtype, predict
from dpa4_core.testing.seeded import seeded_model
from dpa4_core.testing.symmetry import (
    assert_close,
    assert_permutation_equivariant,
    assert_rotation_equivariant,
    assert_translation_invariant,
    random_rotation,
    relative_error,
    rotated,
)

__all__ = [
    "LennardJones",
    "assert_close",
    "assert_conservative",
    "assert_permutation_equivariant",
    "assert_rotation_equivariant",
    "assert_translation_invariant",
    "energy_along_path",
    "finite_difference_forces",
    "finite_difference_stress",
    "model_device",
    "model_dtype",
    "path_consistency_error",
    "predict",
    "random_rotation",
    "relative_error",
    "rotated",
    "seeded_model",
    "strained",
]
