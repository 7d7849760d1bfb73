"""Every weight name a deepmd-kit DPA4 checkpoint may hold that dpa4's weight map knows where to put.

The option check (:mod:`dpa4_core.io.deepmd_options`) reads the config; this reads the weights: a file whose state
dict holds a tensor outside this list (an option deepmd-kit added after 3.2.0, a component the config does not
announce) is refused naming the tensors, so no weight is ever dropped silently. Names are deepmd-kit 3.2.0's,
with every list index written ``N``; the list is the union over the fixtures deepmd-kit wrote
(tests/fixtures/deepmd: every option dpa4 maps, the released family's combinations, a multi-task file).
"""

from __future__ import annotations

import re

from dpa4_core.io.checkpoint_data import CheckpointError

_INDEX = re.compile(r"\.\d+(?=\.|$)")

KNOWN_WEIGHTS = frozenset({
    "atomic_model.dens_force_rmsd",
    "atomic_model.descriptor.blocks.N.ffns.N.act.grid_op.left_proj.weight",
    "atomic_model.descriptor.blocks.N.ffns.N.act.grid_op.out_proj.weight",
    "atomic_model.descriptor.blocks.N.ffns.N.act.grid_op.right_proj.weight",
    "atomic_model.descriptor.blocks.N.ffns.N.act.grid_op.router.weight",
    "atomic_model.descriptor.blocks.N.ffns.N.act.scalar_gate.weight",
    "atomic_model.descriptor.blocks.N.ffns.N.so3_linear_1.expand_index",
    "atomic_model.descriptor.blocks.N.ffns.N.so3_linear_1.weight",
    "atomic_model.descriptor.blocks.N.ffns.N.so3_linear_2.expand_index",
    "atomic_model.descriptor.blocks.N.ffns.N.so3_linear_2.weight",
    "atomic_model.descriptor.blocks.N.post_so2_norm.adam_scale",
    "atomic_model.descriptor.blocks.N.post_so2_norm.balance_weight",
    "atomic_model.descriptor.blocks.N.post_so2_norm.bias",
    "atomic_model.descriptor.blocks.N.post_so2_norm.expand_index",
    "atomic_model.descriptor.blocks.N.pre_ffn_norms.N.adam_scale",
    "atomic_model.descriptor.blocks.N.pre_ffn_norms.N.balance_weight",
    "atomic_model.descriptor.blocks.N.pre_ffn_norms.N.bias",
    "atomic_model.descriptor.blocks.N.pre_ffn_norms.N.expand_index",
    "atomic_model.descriptor.blocks.N.so2_conv.adamw_attn_gate_w",
    "atomic_model.descriptor.blocks.N.so2_conv.adamw_attn_logit_w",
    "atomic_model.descriptor.blocks.N.so2_conv.adamw_attn_z_bias_raw",
    "atomic_model.descriptor.blocks.N.so2_conv.adamw_focus_compete_w",
    "atomic_model.descriptor.blocks.N.so2_conv.attn_k_proj.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.attn_output_gate_norm.adam_scale",
    "atomic_model.descriptor.blocks.N.so2_conv.attn_q_proj.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.attn_qk_norm.adam_scale",
    "atomic_model.descriptor.blocks.N.so2_conv.focus_compete_norm.adam_scale",
    "atomic_model.descriptor.blocks.N.so2_conv.message_node_grid_product.frame_contract.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.message_node_grid_product.frame_expand.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.message_node_grid_product.residual_scale",
    "atomic_model.descriptor.blocks.N.so2_conv.message_node_grid_product.scalar_gate.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.non_linearities.N.expand_index",
    "atomic_model.descriptor.blocks.N.so2_conv.non_linearities.N.gate_linear.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.post_focus_mix.expand_index",
    "atomic_model.descriptor.blocks.N.so2_conv.post_focus_mix.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.pre_focus_mix.expand_index",
    "atomic_model.descriptor.blocks.N.so2_conv.pre_focus_mix.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.radial_degree_mixer.channel_basis",
    "atomic_model.descriptor.blocks.N.so2_conv.radial_degree_mixer.kernel_compact_index",
    "atomic_model.descriptor.blocks.N.so2_conv.radial_degree_mixer.kernel_dense_index",
    "atomic_model.descriptor.blocks.N.so2_conv.radial_degree_mixer.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.radial_hidden_proj.weight",
    "atomic_model.descriptor.blocks.N.so2_conv.so2_linears.N.m0_idx",
    "atomic_model.descriptor.blocks.N.so2_conv.so2_linears.N.neg_indices",
    "atomic_model.descriptor.blocks.N.so2_conv.so2_linears.N.pos_indices",
    "atomic_model.descriptor.blocks.N.so2_conv.so2_linears.N.weight_m.N",
    "atomic_model.descriptor.blocks.N.so2_conv.so2_linears.N.weight_m0",
    "atomic_model.descriptor.env_seed_embedding.env_type_embed.adam_type_embedding",
    "atomic_model.descriptor.env_seed_embedding.g_layer1.matrix",
    "atomic_model.descriptor.env_seed_embedding.g_layer2.matrix",
    "atomic_model.descriptor.env_seed_embedding.output_proj.matrix",
    "atomic_model.descriptor.env_seed_embedding.rbf_proj_layer1.matrix",
    "atomic_model.descriptor.env_seed_embedding.rbf_proj_layer2.matrix",
    "atomic_model.descriptor.film_scale_norm.adam_scale",
    "atomic_model.descriptor.film_scale_strength_log",
    "atomic_model.descriptor.film_shift_norm.adam_scale",
    "atomic_model.descriptor.film_shift_strength_log",
    "atomic_model.descriptor.gie.non_scalar_row_index",
    "atomic_model.descriptor.gie.radial_slot_index_for_row",
    "atomic_model.descriptor.gie.zonal_m0_col_index_for_row",
    "atomic_model.descriptor.mean",
    "atomic_model.descriptor.output_ffn.act.expand_index",
    "atomic_model.descriptor.output_ffn.act.grid_op.left_proj.weight",
    "atomic_model.descriptor.output_ffn.act.grid_op.out_proj.weight",
    "atomic_model.descriptor.output_ffn.act.grid_op.right_proj.weight",
    "atomic_model.descriptor.output_ffn.act.scalar_gate.weight",
    "atomic_model.descriptor.output_ffn.so3_linear_1.expand_index",
    "atomic_model.descriptor.output_ffn.so3_linear_1.weight",
    "atomic_model.descriptor.output_ffn.so3_linear_2.expand_index",
    "atomic_model.descriptor.output_ffn.so3_linear_2.weight",
    "atomic_model.descriptor.radial_basis.adam_freqs",
    "atomic_model.descriptor.radial_embedding.net.N.adam_scale",
    "atomic_model.descriptor.radial_embedding.net.N.matrix",
    "atomic_model.descriptor.stddev",
    "atomic_model.descriptor.type_embedding.adam_type_embedding",
    "atomic_model.descriptor.version_tensor",
    "atomic_model.descriptor.wigner_calc.l1_perm",
    "atomic_model.descriptor.wigner_calc.l1_sign_outer",
    "atomic_model.fitting_net.bias_atom_e",
    "atomic_model.fitting_net.filter_layers.networks.N.hidden_layers.N.linear.bias",
    "atomic_model.fitting_net.filter_layers.networks.N.hidden_layers.N.linear.matrix",
    "atomic_model.fitting_net.filter_layers.networks.N.output_layer.matrix",
    "atomic_model.out_bias",
    "atomic_model.out_std",
    "inter_potential.atomic_numbers",
    "min_nbor_dist",
})


def weight_pattern(name: str) -> str:
    """``name`` with its list indices written ``N`` (``blocks.1.ffns.0.x`` -> ``blocks.N.ffns.N.x``)."""
    return _INDEX.sub(".N", name)


def check_weight_names(path, names) -> None:
    """Refuse a file that holds weights dpa4's map would not read (all of them named, up to 20)."""
    unknown = sorted(name for name in names if weight_pattern(name) not in KNOWN_WEIGHTS)
    if unknown:
        shown = ", ".join(unknown[:20]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 20 else "")
        raise CheckpointError(f"{path} holds weights dpa4 does not know where to put (a deepmd-kit option newer than "
                              f"3.2.0, or a component its config does not announce): {shown}; refusing rather than "
                              "dropping them")
