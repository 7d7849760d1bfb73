"""Which deepmd-kit DPA4 options dpa4 reproduces, and the refusal of every other one (issue 14).

Every option of deepmd-kit 3.2.0's DPA4 model config (``model_params``: model level, ``descriptor``,
``fitting_net``) is in exactly one of these tables:

- ``*_SIZES``: a size that maps onto a :class:`~dpa4_core.config.DPA4Config` field;
- ``*_NO_EFFECT``: no effect on a trained model's predictions (training-time statistics, seeds, storage
  precision, runtime switches), read from deepmd-kit's source;
- ``*_ACCEPTED``: the values dpa4 reproduces; any other value is refused. An empty set means dpa4 implements no
  value of that option yet (the option selects a deepmd-kit component variant dpa4 does not have).

An option in none of the tables (a newer deepmd-kit) is refused as unknown. On top of the options, deepmd-kit's
DPA4 has fixed components that differ from dpa4's own (``MISSING_COMPONENTS``): while any is listed, every
deepmd-kit DPA4 checkpoint is refused. Each is removed when dpa4 gains it as a ``DPA4Config`` option, equal to
deepmd-kit on the fixtures in tests/fixtures/deepmd/ (benchmarks/deepmd/make_fixtures.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dpa4_core.config import DPA4Config
from dpa4_core.io.checkpoint_data import CheckpointError
from dpa4_core.io.deepmd import DeepmdCheckpoint

# deepmd option -> DPA4Config field (same meaning and units).
DESCRIPTOR_SIZES = {"rcut": "cutoff", "channels": "channels", "lmax": "lmax", "mmax": "mmax", "kmax": "kmax",
                    "n_blocks": "n_blocks", "n_radial": "n_radial", "mixing_layers": "so2_layers",
                    "radial_so2_rank": "rank", "n_atten_head": "attn_heads", "ffn_blocks": "ffn_blocks",
                    "n_focus": "n_focus"}
MODEL_SIZES = {"bridging_r_inner": "r_in", "bridging_r_outer": "r_out"}

# `sel` is a neighbour capacity per type: deepmd keeps the nearest sum(sel) neighbours inside rcut, dpa4 keeps all
# of them, so the two agree while no atom has more than sum(sel) neighbours; the loaded model records sum(sel) as
# DPA4Config.neighbor_cap and warns past it (dpa4_core.model.domain.check_neighbor_cap).
DESCRIPTOR_NO_EFFECT = frozenset({"type", "sel", "precision", "trainable", "seed", "use_amp", "random_gamma"})
# Widths that dpa4 reads off the weights (``ffn_neurons``: the FFN widths), and the grid settings, whose entries
# matter only on the grid paths they select (checked by ``_grid_refusals``).
DESCRIPTOR_READ_OFF_WEIGHTS = frozenset({"ffn_neurons"})
DESCRIPTOR_GRID = frozenset({"grid_mlp", "grid_branch"})
FITTING_NO_EFFECT = frozenset({"type", "precision", "trainable", "seed", "rcond", "layer_name"})
MODEL_NO_EFFECT = frozenset({"type", "type_map", "descriptor", "fitting_net", "data_stat_nbatch",
                             "data_stat_protect", "data_bias_nsample", "preset_out_bias", "srtab_add_bias",
                             "use_compile", "enable_tf32", "model_branch_alias", "info"})

# Values dpa4 reproduces ("feature off" where dpa4 has no such feature); an empty set: none yet.
DESCRIPTOR_ACCEPTED: dict[str, tuple[Any, ...]] = {
    "exclude_types": ([],), "add_chg_spin_ebd": (False,), "default_chg_spin": (None,),
    "edge_cartesian": (False,), "node_cartesian": ("none",), "l_schedule": (None,), "m_schedule": (None,),
    "extra_node_l": (0,), "so2_attn_res": ("none",), "full_attn_res": ("none",), "block_attn_res": ("none",),
 "atten_f_mix": (False,), "atten_v_proj": (False,), "atten_o_proj": (False,),
    "node_wise_s2": (False,), "node_wise_so3": (False,), "message_node_s2": (False,), "layer_scale": (False,),
    # reproduced by the parts dpa4 has (embedding, read-out, block FFN; widths read off the weights)
    "message_node_so3": (False, True), "ffn_so3_grid": (False, True),
    "env_exp": ([7, 5],), "basis_type": ("bessel",), "radial_mlp": ([0],),
    "use_env_seed": (True,), "mlp_bias": (False,), "s2_activation": ([False, True],), "so3_readout": ("none", "mlp"),
    "readout_layers": (1,), "lebedev_quadrature": (True,), "activation_function": ("silu",),
    "glu_activation": (True,), "eps": (1e-7,),
    # the block (DPA4Config.block = "deepmd")
    "focus_dim": (0,), "edge_norm": (False, True), "so2_norm": (False,), "radial_so2_mode": ("degree_channel", "none"),
    "sandwich_norm": ([False, True, True, False],),
}
FITTING_ACCEPTED: dict[str, tuple[Any, ...]] = {
    "numb_fparam": (0,), "numb_aparam": (0,), "default_fparam": (None,), "dim_case_embd": (0,),
    "case_film_embd": (False,), "atom_ener": ([],), "use_aparam_as_mask": (False,),
    "neuron": ([0],), "activation_function": ("silu",), "resnet_dt": (False,),
}
MODEL_ACCEPTED: dict[str, tuple[Any, ...]] = {
    "pair_exclude_types": ([],), "atom_exclude_types": ([],), "lora": (None,),
    "bridging_method": ("None", "zbl"),
}
# deepmd-kit's LoRA adapter weights (A_by_l, B_by_l, A_m0, B_m0, A_m.<i>, B_m.<i>), absent once folded.
_LORA_KEY = re.compile(r"(^|\.)[AB]_(by_l|m0|m)(\.|$)")
# The descriptor layout versions whose maths dpa4 reproduces (``descriptor.version_tensor``).
ACCEPTED_VERSIONS: tuple[float, ...] = (1.2,)

# deepmd-kit DPA4 components that no option switches off and that dpa4's model computes differently (first reading
# of deepmd-kit 3.2.0's source; ../shared/design/deepmd-dpa4-format.md has the details). Conventions that change
# only the weight map (spherical-harmonic signs, the radial-basis prefactor, the per-type energy offset) are not
# here: dpa4_core.io.deepmd_weights maps them, checked against deepmd-kit's values.
# deepmd-kit DPA4 components without an option that dpa4 does not compute yet (none left for the options accepted
# above: embedding, blocks, FFN, read-out, fitting net and energy offsets are checked against deepmd-kit's values,
# tests/core/test_deepmd_*.py). A new deepmd-kit version's component goes here until dpa4 has it.
MISSING_COMPONENTS: tuple[str, ...] = ()


@dataclass
class OptionReport:
    """The outcome of checking a deepmd-kit DPA4 checkpoint's options against dpa4.

    Attributes:
        fields: DPA4Config fields read from the sizes (``cutoff``, ``channels``, ...).
        refused: one line per option dpa4 does not reproduce: ``"descriptor.edge_norm=False (...)"``.
        missing_components: deepmd-kit components dpa4 lacks (``MISSING_COMPONENTS``).
    """

    fields: dict[str, Any] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    missing_components: list[str] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return not self.refused and not self.missing_components


def _check_section(section: str, options: dict[str, Any], sizes: dict[str, str], no_effect: frozenset[str],
                   accepted: dict[str, tuple[Any, ...]], report: OptionReport) -> None:
    for name in sorted(options):
        value = options[name]
        where = f"{section}.{name}={value!r}" if section else f"{name}={value!r}"
        if name in sizes:
            report.fields[sizes[name]] = value
        elif name in no_effect:
            continue
        elif name not in accepted:
            report.refused.append(f"{where} (an option unknown to this dpa4)")
        elif value not in accepted[name]:
            allowed = ", ".join(repr(v) for v in accepted[name])
            report.refused.append(f"{where} (dpa4 implements {'only ' + allowed if allowed else 'no value of it'} "
                                  "yet)")


def _grid_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * 3


def _grid_refusals(descriptor: dict[str, Any]) -> list[str]:
    """``grid_mlp`` / ``grid_branch`` (one value or ``[node_wise, message_node, ffn]``): the node-wise and
    message-node entries act only with ``node_wise_s2/so3`` / ``message_node_s2/so3`` (refused above while dpa4
    lacks them); the FFN entry selects the block FFN's grid operation, of which dpa4 reproduces deepmd-kit's
    routed branches on the SO(3) grid (``ffn_so3_grid``) and the plain product on the S2 grid."""
    mlp, branch = _grid_list(descriptor.get("grid_mlp", False)), _grid_list(descriptor.get("grid_branch", 0))
    where = f"descriptor.grid_mlp={descriptor.get('grid_mlp', False)!r}, grid_branch={descriptor.get('grid_branch', 0)!r}"
    if len(mlp) != 3 or len(branch) != 3:
        return [f"{where} (not one value or three)"]
    if descriptor.get("ffn_so3_grid"):
        ok = branch[2] > 0
        implemented = "a positive grid_branch FFN entry"
    else:
        ok = branch[2] == 0 and not mlp[2]
        implemented = "grid_branch 0 and grid_mlp False"
    refused = [] if ok else [f"{where} (on this FFN grid dpa4 implements only {implemented} yet)"]
    if descriptor.get("message_node_so3") and (branch[1] > 0 or mlp[1]):
        refused.append(f"{where} (with message_node_so3 dpa4 implements only the grid product: message-node "
                       "entries grid_branch 0 and grid_mlp False)")
    return refused


def check_options(checkpoint: DeepmdCheckpoint) -> OptionReport:
    """Every option of ``checkpoint`` checked against what dpa4 reproduces (see the module docstring)."""
    report = OptionReport()
    params = checkpoint.model_params
    _check_section("", params, MODEL_SIZES, MODEL_NO_EFFECT, MODEL_ACCEPTED, report)
    _check_section("descriptor", checkpoint.descriptor, DESCRIPTOR_SIZES,
                   DESCRIPTOR_NO_EFFECT | DESCRIPTOR_READ_OFF_WEIGHTS | DESCRIPTOR_GRID, DESCRIPTOR_ACCEPTED, report)
    report.refused += _grid_refusals(checkpoint.descriptor)
    _check_section("fitting_net", checkpoint.fitting_net, {}, FITTING_NO_EFFECT, FITTING_ACCEPTED, report)
    if checkpoint.fitting_net.get("type") not in ("dpa4_ener", "ener", None):
        report.refused.append(f"fitting_net.type={checkpoint.fitting_net.get('type')!r} (dpa4 predicts energy only)")
    if checkpoint.descriptor_version not in ACCEPTED_VERSIONS:
        report.refused.append(f"descriptor.version_tensor={checkpoint.descriptor_version!r} (dpa4 reproduces "
                              f"versions {list(ACCEPTED_VERSIONS)} only)")
    if any(_LORA_KEY.search(name) for name in checkpoint.state_dict):
        report.refused.append("LoRA adapter weights not folded into the base weights (save the fine-tuned "
                              "model with deepmd-kit's merged checkpoint)")
    report.fields.update(_embedding_fields(checkpoint))
    block_ffn = checkpoint.state_dict.get("atomic_model.descriptor.blocks.0.ffns.0.so3_linear_2.weight")
    frames = 2 * int(checkpoint.descriptor.get("kmax", 1)) + 1
    if block_ffn is not None:
        width = block_ffn.shape[1] // (frames if checkpoint.descriptor.get("ffn_so3_grid") else 1)
        if report.fields.get("ffn_hidden") != width:
            report.refused.append(f"block FFN width {width} != read-out width {report.fields.get('ffn_hidden')} "
                                  "(dpa4 uses one ffn_hidden for both)")
    report.missing_components = list(MISSING_COMPONENTS)
    return report


# deepmd weights whose shapes give the widths of the "deepmd" initial embedding: (key, axis) per DPA4Config field.
_WIDTHS = {"radial_hidden": ("radial_embedding.net.0.matrix", 1),
           "env_radial_dim": ("env_seed_embedding.rbf_proj_layer1.matrix", 1),
           "env_type_dim": ("env_seed_embedding.env_type_embed.adam_type_embedding", 1),
           "env_hidden": ("env_seed_embedding.g_layer1.matrix", 1),
           "env_dim": ("env_seed_embedding.g_layer2.matrix", 1),
           "ffn_hidden": ("output_ffn.so3_linear_2.weight", 1)}


def _embedding_fields(checkpoint: DeepmdCheckpoint) -> dict[str, Any]:
    """The ``DPA4Config`` fields of deepmd-kit's initial embedding, widths read off the weights."""
    prefix = "atomic_model.descriptor."
    state = checkpoint.state_dict
    bridging = checkpoint.model_params.get("bridging_method")
    fields = {"embedding": "deepmd", "block": "deepmd", "readout": "deepmd", "degree_switch": False,
              "scalar_density": False, "zbl": bridging == "zbl", "bridging": bridging not in (None, "None")}
    for name, (key, axis) in _WIDTHS.items():
        if prefix + key in state:
            fields[name] = int(state[prefix + key].shape[axis])
    projection = state.get(prefix + "env_seed_embedding.output_proj.matrix")
    if projection is not None and fields.get("env_dim"):
        fields["env_axis"] = int(projection.shape[0]) // fields["env_dim"]
    descriptor = checkpoint.descriptor
    frames = 2 * int(descriptor.get("kmax", 1)) + 1
    if "atomic_model.descriptor.blocks.0.ffns.0.so3_linear_2.weight" in state:
        fields["ffn"] = "s2"
        if descriptor.get("ffn_so3_grid"):
            fields["ffn"] = "so3_branch"
            fields["grid_branches"] = int(_grid_list(descriptor.get("grid_branch", 0))[2]) or 1
    fields["readout_grid"] = str(descriptor.get("so3_readout", "none"))
    fields["message_node_so3"] = bool(descriptor.get("message_node_so3", False))
    fields["edge_norm"] = bool(descriptor.get("edge_norm", False))
    fields["radial_so2_mode"] = str(descriptor.get("radial_so2_mode", "degree_channel"))
    if fields["zbl"]:
        fields["zbl_style"] = "deepmd"
    sel = descriptor.get("sel", 0)
    fields["neighbor_cap"] = int(sum(sel) if isinstance(sel, (list, tuple)) else sel)
    if fields["readout_grid"] != "none" and "ffn_hidden" in fields:  # the SO(3) read-out's channels hold K frames
        fields["ffn_hidden"] //= frames
    glu_layer = state.get("atomic_model.fitting_net.filter_layers.networks.0.hidden_layers.0.linear.matrix")
    if glu_layer is not None:
        fields["readout_hidden"] = int(glu_layer.shape[1]) // 2
    return fields


def deepmd_config(checkpoint: DeepmdCheckpoint) -> DPA4Config:
    """The ``DPA4Config`` that reproduces ``checkpoint``, or ``CheckpointError`` naming every option (with its
    value) and every component that dpa4 does not implement yet. Nothing is approximated."""
    report = check_options(checkpoint)
    if not report.supported:
        lines = report.refused + [f"component: {line}" for line in report.missing_components]
        head = f" (head {checkpoint.head!r})" if checkpoint.head else ""
        raise CheckpointError(
            f"{checkpoint.path}{head} is a deepmd-kit DPA4 checkpoint that this dpa4 cannot reproduce exactly; "
            f"not implemented yet ({len(lines)}): " + "; ".join(lines))
    return DPA4Config(**report.fields)
