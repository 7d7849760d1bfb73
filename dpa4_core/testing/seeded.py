"""A DPA4 with every parameter active, reproducible from a seed: the model the physics checks run on."""

from __future__ import annotations

import torch


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
