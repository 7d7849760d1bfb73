"""deepmd-kit DPA4 weights and conventions expressed in dpa4's (the weight map, one component at a time).

Each function here is checked against deepmd-kit's own numbers (tests/fixtures/deepmd/, written by
benchmarks/deepmd/make_fixtures.py) in tests/core/test_deepmd_weights.py. Verified so far:

- edge frames: deepmd-kit's two-chart quaternion blend is dpa4's ``geometry.frames.edge_quaternion`` up to the
  quaternion's overall sign (the same rotation; both map the edge onto +z), poles included;
- real spherical harmonics / Wigner-D: ``D_dpa4 = S D_deepmd S`` with the diagonal sign ``S`` of
  :func:`sh_signs` (``+m`` carries ``(-1)^m``, ``-m`` carries ``-(-1)^m``, ``m = 0`` unchanged), so a
  degree-l weight acting on the m index maps as ``W_dpa4 = S W_deepmd S``;
- radial basis: deepmd-kit's ``w_n sinc(w_n r / pi) E_7(r / r_c)`` is dpa4's ``RadialBasis`` without its
  ``sqrt(2 / r_c)`` prefactor (``adam_freqs`` are the frequencies; the prefactor folds into the next layer);
  the edge envelope ``E_5`` is dpa4's ``polynomial_envelope(r / r_c, 5)``;
- energy offset per type: ``out_bias + bias_atom_e`` (``out_std`` does not scale energies), by ``type_map``.
"""

from __future__ import annotations

import math

import torch

from dpa4_core.io.checkpoint_data import CheckpointData, CheckpointError
from dpa4_core.io.deepmd import DeepmdCheckpoint, provenance, read_deepmd_checkpoint
from dpa4_core.io.deepmd_keys import check_weight_names
from dpa4_core.io.deepmd_options import deepmd_config

N_ELEMENTS = 119


def sh_signs(l: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:  # noqa: E741
    """The diagonal ``S`` (``[2l+1]``, m = -l..l) with ``D_dpa4^l = S D_deepmd^l S`` and ``Y_dpa4 = S Y_deepmd``."""
    signs = [(-1.0) ** abs(m) * (1.0 if m >= 0 else -1.0) if m else 1.0 for m in range(-l, l + 1)]
    return torch.tensor(signs, dtype=dtype)


def radial_frequencies(checkpoint: DeepmdCheckpoint) -> torch.Tensor:
    """deepmd-kit's learnt radial frequencies ``w_n`` (1/A) as dpa4's ``RadialBasis.frequencies`` ``[n_radial]``."""
    name = "atomic_model.descriptor.radial_basis.adam_freqs"
    if name not in checkpoint.state_dict:
        raise CheckpointError(f"{checkpoint.path}: no {name} in the checkpoint")
    return checkpoint.state_dict[name].reshape(-1).clone()


def radial_basis_scale(cutoff: float) -> float:
    """deepmd-kit's radial basis = this factor x dpa4's (dpa4 multiplies by ``sqrt(2 / r_c)``): multiply the
    weights that read deepmd's basis by it to read dpa4's instead."""
    return 1.0 / math.sqrt(2.0 / cutoff)


def atomic_numbers(checkpoint: DeepmdCheckpoint) -> list[int]:
    """The atomic number of each deepmd type (``type_map`` symbols); an unknown symbol is refused by name."""
    from ase.data import atomic_numbers as table

    unknown = [symbol for symbol in checkpoint.type_map if symbol not in table or table[symbol] == 0]
    if unknown:
        raise CheckpointError(f"{checkpoint.path}: type_map holds symbols that are not elements: {unknown}")
    return [table[symbol] for symbol in checkpoint.type_map]


def energy_offsets(checkpoint: DeepmdCheckpoint) -> torch.Tensor:
    """Per-element energy offset ``[119]`` (eV, by atomic number; 0 for elements outside ``type_map``):
    ``out_bias[0, t, 0] + bias_atom_e[t, 0]`` of each type ``t`` (deepmd-kit's SeZM atomic model adds
    ``out_bias`` to the energy unscaled; its fitting net adds ``bias_atom_e``)."""
    state = checkpoint.state_dict
    missing = [name for name in ("atomic_model.out_bias", "atomic_model.fitting_net.bias_atom_e") if name not in state]
    if missing:
        raise CheckpointError(f"{checkpoint.path}: missing energy offsets {missing}")
    n_types = len(checkpoint.type_map)
    out_bias = state["atomic_model.out_bias"].to(torch.float64)
    fitting_bias = state["atomic_model.fitting_net.bias_atom_e"].to(torch.float64)
    if out_bias.shape[:2] != (1, n_types) or fitting_bias.shape[0] != n_types:
        raise CheckpointError(f"{checkpoint.path}: energy offsets of shapes {tuple(out_bias.shape)} and "
                              f"{tuple(fitting_bias.shape)} do not fit {n_types} types")
    offsets = torch.zeros(N_ELEMENTS, dtype=torch.float64)
    for index, number in enumerate(atomic_numbers(checkpoint)):
        offsets[number] = out_bias[0, index, 0] + fitting_bias[index, 0]
    return offsets


def _matrix(checkpoint: DeepmdCheckpoint, name: str) -> torch.Tensor:
    """A deepmd ``MLPLayer.matrix`` ``[in, out]`` as a float64 ``torch.nn.Linear`` weight ``[out, in]``."""
    key = f"atomic_model.descriptor.{name}"
    if key not in checkpoint.state_dict:
        raise CheckpointError(f"{checkpoint.path}: no {key} in the checkpoint")
    return checkpoint.state_dict[key].t().to(torch.float64)  # float64 before any constant is folded in


def _by_element(table: torch.Tensor, numbers: list[int], out: torch.Tensor) -> None:
    """Rows of a deepmd per-type table (``ntypes`` rows, plus a padding row) into a table by atomic number; rows of
    elements outside the type map are zero (never read: those elements are refused)."""
    out.zero_()
    for index, number in enumerate(numbers):
        out[number] = table[index]


@torch.no_grad()
def map_embedding(checkpoint: DeepmdCheckpoint, model: torch.nn.Module) -> None:
    """Copy deepmd-kit's type embedding, radial basis and MLP, and environment FiLM into ``model.radial`` and
    ``model.embedding`` of a ``DPA4`` built with ``embedding="deepmd"`` (the radial-basis prefactor is folded into
    the first layers that read the basis; per-type rows go to their atomic numbers)."""
    numbers = atomic_numbers(checkpoint)
    state = checkpoint.state_dict
    radial, embedding = model.radial, model.embedding
    scale = radial_basis_scale(radial.cutoff)
    types = state["atomic_model.descriptor.type_embedding.adam_type_embedding"]
    _by_element(types, numbers, embedding.types.weight)
    _by_element(types, numbers, radial.edge_types.weight)  # deepmd uses the one table for both
    radial.basis.frequencies.copy_(radial_frequencies(checkpoint))
    radial.mlp[0].weight.copy_(_matrix(checkpoint, "radial_embedding.net.0.matrix") * scale)
    last = len(radial.mlp) - 1  # 2, or 3 with edge_norm's RMS norm at 1
    radial.mlp[last].weight.copy_(_matrix(checkpoint, f"radial_embedding.net.{last}.matrix"))
    if last == 3:
        radial.mlp[1].scale.copy_(state["atomic_model.descriptor.radial_embedding.net.1.adam_scale"])
        embedding.film_norm.scale.copy_(torch.cat([state[f"atomic_model.descriptor.film_{kind}_norm.adam_scale"]
                                                   for kind in ("scale", "shift")]))
    embedding.filter_radial[0].weight.copy_(_matrix(checkpoint, "env_seed_embedding.rbf_proj_layer1.matrix") * scale)
    embedding.filter_radial[2].weight.copy_(_matrix(checkpoint, "env_seed_embedding.rbf_proj_layer2.matrix"))
    _by_element(state["atomic_model.descriptor.env_seed_embedding.env_type_embed.adam_type_embedding"], numbers,
                embedding.filter_types.weight)
    embedding.filter_mlp[0].weight.copy_(_matrix(checkpoint, "env_seed_embedding.g_layer1.matrix"))
    embedding.filter_mlp[2].weight.copy_(_matrix(checkpoint, "env_seed_embedding.g_layer2.matrix"))
    embedding.film.weight.copy_(_matrix(checkpoint, "env_seed_embedding.output_proj.matrix"))
    strengths = [state[f"atomic_model.descriptor.film_{kind}_strength_log"].reshape(1) for kind in ("scale", "shift")]
    embedding.log_scale.copy_(torch.stack(strengths))


@torch.no_grad()
def map_readout(checkpoint: DeepmdCheckpoint, model: torch.nn.Module) -> None:
    """Copy deepmd-kit's scalar read-out (``descriptor.output_ffn``) and GLU fitting net into ``model.readout``
    of a ``DPA4`` built with ``readout="deepmd"`` (its energy offsets go to ``energy_bias``: :func:`energy_offsets`)."""
    state, readout = checkpoint.state_dict, model.readout
    fitting = "atomic_model.fitting_net.filter_layers.networks.0."
    layers = {name.split(".")[6] for name in state if name.startswith(fitting + "hidden_layers.")}
    if layers != {"0"}:
        raise CheckpointError(f"{checkpoint.path}: dpa4 reproduces a fitting net with one GLU layer, this one has "
                              f"{len(layers)}")
    if readout.grid is not None:  # so3_readout: an SO(3)-grid FFN on every degree
        map_ffn(checkpoint, readout.grid, prefix="atomic_model.descriptor.output_ffn.")
    else:
        readout.lift.weight.copy_(state["atomic_model.descriptor.output_ffn.so3_linear_1.weight"][0].t())
        readout.project.weight.copy_(state["atomic_model.descriptor.output_ffn.so3_linear_2.weight"][0].t())
    readout.fitting.weight.copy_(state[fitting + "hidden_layers.0.linear.matrix"].t())
    readout.fitting.bias.copy_(state[fitting + "hidden_layers.0.linear.bias"])
    readout.head.weight.copy_(state[fitting + "output_layer.matrix"].t())


@torch.no_grad()
def map_ffn(checkpoint: DeepmdCheckpoint, ffn: torch.nn.Module, block: int = 0,
            prefix: str | None = None) -> None:
    """Copy the FFN of deepmd-kit's block ``block`` (``s2_activation`` on, or ``ffn_so3_grid``) into a
    ``SphereProductFFN`` or an ``SO3GridFFN``; ``prefix`` names another deepmd ``EquivariantFFN`` (the read-out's)."""
    prefix = prefix or f"atomic_model.descriptor.blocks.{block}.ffns.0."
    state = checkpoint.state_dict
    ffn.lift.weight.copy_(state[prefix + "so3_linear_1.weight"])  # [L+1, C, 2H] (2KH): degree-wise x @ W
    ffn.scalar_gate.weight.copy_(state[prefix + "act.scalar_gate.weight"].t())
    ffn.project.weight.copy_(state[prefix + "so3_linear_2.weight"])
    for ours, theirs in (("left", "left_proj"), ("right", "right_proj"), ("out", "out_proj"), ("router", "router")):
        if hasattr(ffn, ours):  # the SO(3) grid's channel maps, stored [in, out]
            getattr(ffn, ours).weight.copy_(state[prefix + f"act.grid_op.{theirs}.weight"].t())


@torch.no_grad()
def map_convolution(checkpoint: DeepmdCheckpoint, conv: torch.nn.Module, block: int = 0) -> None:
    """Copy the SO(2) convolution of deepmd-kit's block ``block`` into a ``DeepmdConvolution`` (weights as stored:
    the module applies deepmd's sign map in the local frame itself)."""
    prefix = f"atomic_model.descriptor.blocks.{block}.so2_conv."
    state = {name[len(prefix):]: value for name, value in checkpoint.state_dict.items() if name.startswith(prefix)}
    conv.pre_mix.weight.copy_(state["pre_focus_mix.weight"])
    conv.post_mix.weight.copy_(state["post_focus_mix.weight"])
    if conv.mixer is not None:  # radial_so2_mode "degree_channel" ("none" has no weights)
        conv.mixer.copy_(state["radial_degree_mixer.weight"])
        conv.channel_basis.copy_(state["radial_degree_mixer.channel_basis"])
    n_blocks = len(conv.blocks)
    for layer in range(len(conv.weight_m0)):
        conv.weight_m0[layer].copy_(state[f"so2_linears.{layer}.weight_m0"])
        for index in range(n_blocks):
            conv.weight_m[layer * n_blocks + index].copy_(state[f"so2_linears.{layer}.weight_m.{index}"])
    for layer, gate in enumerate(conv.gates):
        gate.weight.copy_(state[f"non_linearities.{layer}.gate_linear.weight"].t())
    conv.qk_scale.copy_(state["attn_qk_norm.adam_scale"].reshape(-1))
    conv.query.weight.copy_(state["attn_q_proj.weight"].t())
    conv.key.weight.copy_(state["attn_k_proj.weight"].t())
    conv.logit_radial.copy_(state["adamw_attn_logit_w"].reshape(conv.logit_radial.shape))  # [C, F, H]
    conv.null_raw.copy_(state["adamw_attn_z_bias_raw"].reshape(-1))
    conv.gate_scale.copy_(state["attn_output_gate_norm.adam_scale"].reshape(-1))
    conv.gate_weight.copy_(state["adamw_attn_gate_w"].reshape(conv.gate_weight.shape))
    if conv.focus > 1:  # n_focus: the radial projection to the streams and the competition weights
        conv.radial_proj.weight.copy_(state["radial_hidden_proj.weight"].t())
        conv.compete.copy_(state["adamw_focus_compete_w"])
        if conv.compete_scale is not None:  # edge_norm: the competition scalars' RMS norm, scale [F, C]
            conv.compete_scale.copy_(state["focus_compete_norm.adam_scale"].reshape(-1))
    if conv.message_node is not None:  # message_node_so3: the cross SO(3) grid (its "glu" product)
        grid, theirs = conv.message_node, "message_node_grid_product."
        grid.expand.weight.copy_(state[theirs + "frame_expand.weight"])  # [L+1, C, K C]
        grid.contract.weight.copy_(state[theirs + "frame_contract.weight"])  # [L+1, K C, C]
        grid.scalar_gate.weight.copy_(state[theirs + "scalar_gate.weight"].t())  # [2C, F C] -> [F C, 2C]
        grid.residual_scale.copy_(state[theirs + "residual_scale"].reshape(-1))


@torch.no_grad()
def map_model(checkpoint: DeepmdCheckpoint) -> torch.nn.Module:
    """The ``DPA4`` (float64, eval mode) that computes what deepmd-kit computes for ``checkpoint``; a checkpoint
    with an option dpa4 does not reproduce raises ``CheckpointError`` naming each (``deepmd_config``), one holding
    weights the map would not read names them (``check_weight_names``)."""
    from dpa4_core.model.energy import DPA4

    # every weight is overwritten below; a fixed seed makes the few left (none today) the same on every load, so
    # loading one file twice gives the same model and the same converted file
    config = deepmd_config(checkpoint)  # options first: their refusal names the option, not its weights
    check_weight_names(checkpoint.path, checkpoint.state_dict)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DPA4(config).double()
    map_embedding(checkpoint, model)
    for index, block in enumerate(model.blocks):
        map_convolution(checkpoint, block.conv, index)
        norms = [(block.message_norm, "post_so2_norm"), (block.ffn_norm, "pre_ffn_norms.0")]
        norms += [(norm, f"pre_ffn_norms.{unit + 1}") for unit, norm in enumerate(block.extra_ffn_norms)]
        for ours, theirs in norms:
            prefix = f"atomic_model.descriptor.blocks.{index}.{theirs}."
            ours.scale.copy_(checkpoint.state_dict[prefix + "adam_scale"][:, 0])
            ours.bias.copy_(checkpoint.state_dict[prefix + "bias"][0])
        for unit, ffn in enumerate([block.ffn, *block.extra_ffns]):  # ffn_blocks sub-blocks
            map_ffn(checkpoint, ffn, prefix=f"atomic_model.descriptor.blocks.{index}.ffns.{unit}.")
    map_readout(checkpoint, model)
    model.energy_bias.copy_(energy_offsets(checkpoint))
    model.trained_elements = sorted(atomic_numbers(checkpoint))
    return model.eval()


def deepmd_checkpoint_data(path, payload, head: str | None = None) -> CheckpointData:
    """A deepmd-kit DPA4 ``.pt`` as dpa4's :class:`CheckpointData` (what ``read_checkpoint`` returns for one):
    the mapped model's config and weights, the energy offsets by atomic number, the type map's elements.

    Always float64, float32 files (the released ones) included: the map folds constants into some weights (the
    radial-basis prefactor), and rounding those products back to float32 would change the stored function by
    ~1e-8 relative; in float64 the loaded model is deepmd-kit's function of the stored weights to ~1e-15.
    Callers choose float32 for speed (``DPA4Calculator(dtype=...)``, ``load_for_inference``)."""
    checkpoint = read_deepmd_checkpoint(path, head=head, payload=payload)
    model = map_model(checkpoint)
    return CheckpointData(
        path=checkpoint.path, config=model.config.to_dict(),
        state_dict={name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
        dtype=torch.float64,
        energy_bias=model.energy_bias.detach().clone(), elements=list(model.trained_elements),
        metadata={"converted_from": provenance(checkpoint)})
