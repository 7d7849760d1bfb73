"""DPA4Config: every architecture hyper-parameter of the model, with named presets (spec section 6).

The config is a frozen dataclass: it is validated once in ``__post_init__`` and never edited afterwards; it is
stored in every checkpoint through :meth:`DPA4Config.to_dict` / :meth:`DPA4Config.from_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

MAX_LMAX = 6  # the Wigner-D module supports l <= 6


class ConfigError(ValueError):
    """An invalid configuration value: a DPA4Config field, or a training/fine-tuning config file or dict
    (``dpa4_core.train.config``). The message names the field or key and the allowed range."""


FFNS = ("bilinear", "gated", "s2", "so3_glu", "so3_mlp", "so3_branch")


@dataclass(frozen=True)
class DPA4Config:
    """Architecture of a DPA4 model.

    Attributes:
        channels: node feature channels C per (l, m).
        n_blocks: number of interaction blocks B.
        lmax: maximum degree L of the node features (``(L+1)^2`` packed (l, m) entries), at most 6.
        mmax: maximum order M kept inside the SO(2) convolution (``|m| <= M``).
        so2_layers: residual SO(2) layers S per block.
        rank: rank R of the radial-driven degree coupling ("foci").
        hidden: EMFA width H (channels of the per-edge messages).
        ffn: "bilinear" (Wigner bilinear FFN on an SO(3) quadrature grid), "gated", "s2" (deepmd-kit DPA4's
            sphere-grid product FFN, ``dpa4_core/nn/ffn_s2.py``), or "so3_glu" / "so3_mlp" / "so3_branch" (deepmd-kit
            DPA4's SO(3)-grid FFN, ``ffn_so3_grid``, with its grid product, grid MLP or ``grid_branches`` routed
            products; ``dpa4_core/nn/ffn_so3.py``).
        ffn_hidden: FFN width H_FFN (channels of each function on the SO(3) grid; the grid work scales with it).
        ffn_scalar_hidden: width of the SwiGLU path on the l = 0 scalars of the bilinear FFN (cheap: per atom).
        kmax: right index range ``|k| <= kmax`` of the functions on SO(3) in the bilinear FFN.
        radial_hidden: width of the radial MLP hidden layer.
        n_radial: number of sinc radial basis functions.
        cutoff: cutoff radius r_c in A.
        r_in, r_out: zone-bridging window in A (the network sees distances >= r_in only).
        attn_heads, attn_dim: attention heads and key/query width per head.
        env_dim, env_axis: width G of the environment-matrix filter and the number K of its columns in the
            Gram matrix ``G_i = A_i^T A_i[:, :K]`` (initial FiLM embedding).
        readout_hidden: width of the residual scalar MLP of the energy readout.
        embedding: "dpa4" (this specification) or "deepmd" (deepmd-kit DPA4's initial embedding, for its
            checkpoints: radial MLP without biases; the edge-type term ``T[Z_src] + T[Z_dst]`` not enveloped and added
            to the blocks' radial features only, not to the l >= 1 embedding; environment filter
            ``g = MLP(cat[MLP(phi), T_env[Z_src], T_env[Z_dst]])`` without biases; FiLM with one scale and one shift
            strength and no norm). Checked against deepmd-kit's own values (tests/core/test_deepmd_embedding.py).
        readout: "dpa4" (norm, residual SiLU MLP, linear head) or "deepmd" (deepmd-kit DPA4's residual GLU on the
            scalars, width ``ffn_hidden``, then its GLU fitting net of width ``readout_hidden``; see
            ``dpa4_core/model/glu_readout.py``).
        readout_grid: "none" (the "deepmd" read-out's residual GLU on the scalars) or "glu" / "mlp" (deepmd-kit's
            ``so3_readout``: the residual is an SO(3)-grid FFN on every degree, its l = 0 row kept).
        grid_branches: routed products of ``ffn = "so3_branch"`` (deepmd-kit's ``grid_branch`` of the FFN).
        message_node_so3: the "deepmd" block adds deepmd-kit's SO(3)-grid product of the aggregated message and the
            node features to the message (``message_node_so3``; ``dpa4_core/nn/ffn_so3.py``).
        ffn_blocks: residual FFN sub-blocks per "deepmd" block (deepmd-kit's ``ffn_blocks``), each with its own norm.
        edge_norm: deepmd-kit's ``edge_norm`` (needs ``embedding = block = "deepmd"``): uncentred RMS norms on the
            radial MLP's hidden layer and the FiLM logits, eps 1e-5 (not 1) in the norm after the convolution, and
            with ``n_focus > 1`` an RMS norm of the focus competition's scalars.
        zbl_style: "dpa4" (the tapered ZBL above) or "deepmd" (deepmd-kit's ``bridging_method "zbl"``: untapered
            over every neighbour, its constants, float64; with ``embedding = "deepmd"`` the bridging source gate
            also reads the bridged length, as deepmd-kit's does).
        radial_so2_mode: the "deepmd" block's radial coupling (deepmd-kit's ``radial_so2_mode``): "degree_channel"
            (the radial-driven degree mixer, rank ``rank``) or "none" (each degree's rows scaled elementwise by that
            degree's radial features, DPA4-Nano's).
        n_focus: focus streams of the "deepmd" block's convolution (deepmd-kit's ``n_focus``, with its focus
            competition; ``dpa4_core/nn/block_deepmd.py``).
        neighbor_cap: deepmd-kit's ``sum(sel)`` (0: none): the model warns when an atom has more neighbours, where
            deepmd-kit (which keeps the nearest ``sum(sel)``) and dpa4 (which keeps all) differ.
        block: "dpa4" (spec section 3) or "deepmd" (deepmd-kit DPA4's block, ``dpa4_core/nn/block_deepmd.py``;
            needs ``embedding = "deepmd"``, uses ``so2_layers``, ``attn_heads``, ``rank`` and ``ffn``).
        bridging: zone bridging (``r_in``, ``r_out``: clamped distances and the source gate); off for deepmd-kit
            checkpoints trained without it (``bridging_method "None"``).
        degree_switch: multiply the learned energy by ``tanh(d_i)`` so an isolated atom has its bias energy only
            (deepmd-kit's DPA4 has no such factor).
        env_type_dim, env_radial_dim, env_hidden: widths of the "deepmd" environment filter (its type embedding,
            its radial projection and its hidden layer); unused by "dpa4".
        scalar_density: add the radial density ``n_i sum_j eta_j rho_ij,0`` to the initial l = 0 features,
            the l = 0 term of the l >= 1 embedding (Y_00 = 1). An addition to the specification (which builds
            l = 0 from the FiLM-modulated type embedding only): it gives the first block how many neighbours
            sit how close as a sum, which metals' energies need and which the FiLM path (starting at 1% strength)
            and the attention average deliver slowly (benchmarks/README.md, "the scalar density"). No extra parameters.
            Checkpoints written before this field existed load with it off.
        zbl: add the tapered ZBL pair repulsion.
        zbl_taper_end: where ZBL's taper ends, as a fraction of the pair's covalent-radius sum (never before
            ``r_out``). 1.0 gives metals a stiff repulsion near their bonds, which speeds up learning their
            equation of state; molecules with double bonds (C=O at 0.88 of the sum) want 0.5, so that ZBL stays
            off their bonds (see ``dpa4_core/model/zbl.py``).
        n_elements: size of the element tables (atomic numbers 0..118; 0 unused).
    """

    channels: int = 64
    n_blocks: int = 3
    lmax: int = 3
    mmax: int = 1
    so2_layers: int = 4
    rank: int = 1
    hidden: int = 64
    ffn: str = "bilinear"
    ffn_hidden: int = 192
    ffn_scalar_hidden: int = 256
    kmax: int = 1
    radial_hidden: int = 64
    n_radial: int = 16
    cutoff: float = 6.0
    r_in: float = 0.5
    r_out: float = 0.8
    attn_heads: int = 1
    attn_dim: int = 32
    env_dim: int = 16
    env_axis: int = 4
    readout_hidden: int = 64
    embedding: str = "dpa4"
    readout: str = "dpa4"
    readout_grid: str = "none"
    grid_branches: int = 1
    message_node_so3: bool = False
    ffn_blocks: int = 1
    edge_norm: bool = False
    neighbor_cap: int = 0
    n_focus: int = 1
    radial_so2_mode: str = "degree_channel"
    zbl_style: str = "dpa4"
    block: str = "dpa4"
    bridging: bool = True
    degree_switch: bool = True
    env_type_dim: int = 8
    env_radial_dim: int = 32
    env_hidden: int = 64
    scalar_density: bool = True
    zbl: bool = True
    zbl_taper_end: float = 1.0
    n_elements: int = 119

    def __post_init__(self) -> None:
        positive = ["channels", "n_blocks", "so2_layers", "rank", "hidden", "ffn_hidden", "ffn_scalar_hidden", "radial_hidden",
                    "n_radial", "attn_heads", "attn_dim", "env_dim", "env_axis", "readout_hidden", "env_type_dim", "env_radial_dim",
                    "env_hidden", "grid_branches", "ffn_blocks", "n_focus"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"DPA4Config.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.lmax, int) or not 0 <= self.lmax <= MAX_LMAX:
            raise ConfigError(f"DPA4Config.lmax must be an integer in 0..{MAX_LMAX}, got {self.lmax!r}")
        if not isinstance(self.mmax, int) or not 0 <= self.mmax <= self.lmax:
            raise ConfigError(f"DPA4Config.mmax must be an integer in 0..lmax={self.lmax}, got {self.mmax!r}")
        if not isinstance(self.kmax, int) or not 0 <= self.kmax <= max(self.lmax, 0):
            raise ConfigError(f"DPA4Config.kmax must be an integer in 0..lmax={self.lmax}, got {self.kmax!r}")
        for name in ("embedding", "readout", "block"):
            if getattr(self, name) not in ("dpa4", "deepmd"):
                raise ConfigError(f"DPA4Config.{name} must be 'dpa4' or 'deepmd', got {getattr(self, name)!r}")
        if self.ffn not in FFNS:
            raise ConfigError(f"DPA4Config.ffn must be one of {FFNS}, got {self.ffn!r}")
        if self.readout_grid not in ("none", "glu", "mlp"):
            raise ConfigError(f"DPA4Config.readout_grid must be 'none', 'glu' or 'mlp', got {self.readout_grid!r}")
        if self.readout_grid != "none" and self.readout != "deepmd":
            raise ConfigError("DPA4Config.readout_grid needs readout='deepmd'")
        if self.hidden % self.attn_heads:
            raise ConfigError(
                f"DPA4Config.hidden={self.hidden} must be divisible by attn_heads={self.attn_heads}"
            )
        if self.env_axis > self.env_dim:
            raise ConfigError(f"DPA4Config.env_axis={self.env_axis} must be <= env_dim={self.env_dim}")
        for name in ("cutoff", "r_in", "r_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"DPA4Config.{name} must be a positive number (A), got {value!r}")
        if not self.r_in < self.r_out < self.cutoff:
            raise ConfigError(
                f"DPA4Config needs 0 < r_in < r_out < cutoff, got r_in={self.r_in}, r_out={self.r_out}, "
                f"cutoff={self.cutoff}"
            )
        if self.block == "deepmd" and self.embedding != "deepmd":
            raise ConfigError("DPA4Config.block='deepmd' needs embedding='deepmd' (its radial features)")
        if self.ffn_blocks != 1 and self.block != "deepmd":
            raise ConfigError("DPA4Config.ffn_blocks > 1 needs block='deepmd'")
        if isinstance(self.neighbor_cap, bool) or not isinstance(self.neighbor_cap, int) or self.neighbor_cap < 0:
            raise ConfigError(f"DPA4Config.neighbor_cap must be an integer >= 0, got {self.neighbor_cap!r}")
        if self.zbl_style not in ("dpa4", "deepmd"):
            raise ConfigError(f"DPA4Config.zbl_style must be 'dpa4' or 'deepmd', got {self.zbl_style!r}")
        if self.n_focus != 1 and self.block != "deepmd":
            raise ConfigError("DPA4Config.n_focus > 1 needs block='deepmd'")
        if self.radial_so2_mode not in ("degree_channel", "none"):
            raise ConfigError(f"DPA4Config.radial_so2_mode must be 'degree_channel' or 'none', got {self.radial_so2_mode!r}")
        if self.radial_so2_mode != "degree_channel" and self.block != "deepmd":
            raise ConfigError("DPA4Config.radial_so2_mode='none' needs block='deepmd'")
        if self.edge_norm and self.block != "deepmd":
            raise ConfigError("DPA4Config.edge_norm needs block='deepmd'")
        if self.message_node_so3 and self.block != "deepmd":
            raise ConfigError("DPA4Config.message_node_so3 needs block='deepmd'")
        for name in ("zbl", "scalar_density", "degree_switch", "bridging", "message_node_so3", "edge_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"DPA4Config.{name} must be a bool, got {getattr(self, name)!r}")
        taper = self.zbl_taper_end
        if isinstance(taper, bool) or not isinstance(taper, (int, float)) or not 0.0 < taper <= 2.0:
            raise ConfigError(f"DPA4Config.zbl_taper_end must be a number in (0, 2], got {taper!r}")
        if self.n_elements != 119:
            raise ConfigError(f"DPA4Config.n_elements must be 119 (atomic numbers 0..118), got {self.n_elements!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DPA4Config:
        """A named configuration ("tiny", "neo", "air", "plus", "pro"), optionally with fields overridden."""
        key = name.lower()
        if key not in PRESETS:
            raise ConfigError(f"unknown DPA4 preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(cls(**PRESETS[key]), **overrides) if overrides else cls(**PRESETS[key])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPA4Config:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` naming them. A field added after
        ``data`` was written takes the value that reproduces the model it describes (``FIELDS_ADDED_LATER``)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown DPA4Config field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**{**FIELDS_ADDED_LATER, **data})


# Fields whose default changed the model when they were added: their value in a stored config that lacks them.
FIELDS_ADDED_LATER: dict[str, Any] = {"scalar_density": False}

# Sizes: C = 64, M = 1 for the paper's models (spec section 6). The widths are ours, tuned so the parameter
# counts land within 1% of the paper's (tests/core/test_config.py asserts 10%) while neo/air stay fast on CPU:
# per-edge work scales with H^2 (SO(2) layers) and per-atom grid work with H_FFN, so the small models keep
# H = 32, H_FFN = 128 and carry their remaining capacity in the per-atom scalar SwiGLU path, which costs
# almost nothing per step (benchmark: air, Si 64 atoms, 1 CPU thread, energy + forces + stress).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(channels=16, n_blocks=2, lmax=2, mmax=1, so2_layers=2, rank=1, hidden=16, ffn="bilinear",
                 ffn_hidden=32, ffn_scalar_hidden=32, radial_hidden=16, n_radial=8, attn_dim=8, env_dim=8,
                 env_axis=4, readout_hidden=16),
    "neo": dict(channels=64, n_blocks=2, lmax=3, mmax=1, so2_layers=3, rank=1, hidden=32, ffn_hidden=128,
                ffn_scalar_hidden=2016),
    "air": dict(channels=64, n_blocks=3, lmax=3, mmax=1, so2_layers=4, rank=1, hidden=32, ffn_hidden=128,
                ffn_scalar_hidden=2496),
    "plus": dict(channels=64, n_blocks=4, lmax=4, mmax=1, so2_layers=4, rank=1, hidden=56, ffn_hidden=192,
                 ffn_scalar_hidden=224),
    "pro": dict(channels=64, n_blocks=6, lmax=5, mmax=1, so2_layers=4, rank=2, hidden=80, ffn_hidden=256,
                ffn_scalar_hidden=1408),
}

# Parameter counts of the paper's models (spec section 6).
PAPER_PARAMETERS = {"neo": 1.60e6, "air": 2.76e6, "plus": 5.40e6, "pro": 20.9e6}
