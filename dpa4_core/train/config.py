"""Training and fine-tuning configuration: pydantic models read from YAML, unknown keys rejected.

Example (``examples/train_monbtaw.yaml``)::

    data:
      train: [data/maml_MoNbTaW]
      split: {valid: 0.1, test: 0.1, seed: 0, by_group: false}
    model: {preset: tiny}
    steps: 2000
    batch_size: 4
    output_dir: runs/monbtaw
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dpa4_core.config import ConfigError  # one error type for the model's and the trainer's configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Strict):
    """One data source: a file or folder and how to read it."""

    path: str
    format: str | None = Field(None, description="'pymatgen-json', 'deepmd', 'ase' or an ASE format; guessed if None")
    stress_unit: str | None = Field(None, description="kbar_vasp | kbar | gpa | ev/a^3; default per format")
    group: str | None = None
    weight: float = Field(1.0, ge=0.0)


Source = str | DataSource


class SplitConfig(_Strict):
    """Fractions held out of ``train`` when no explicit ``valid``/``test`` data are given."""

    valid: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    by_group: bool = False

    @model_validator(mode="after")
    def _fractions(self):
        if self.valid + self.test >= 1.0:
            raise ValueError(f"valid + test fractions must be < 1, got {self.valid} + {self.test}")
        return self


class DataConfig(_Strict):
    train: list[Source] = Field(min_length=1)
    valid: list[Source] | None = None
    test: list[Source] | None = None
    split: SplitConfig = SplitConfig()
    max_frames: int | None = Field(None, gt=0, description="use at most this many training frames (seeded)")

    @field_validator("train", "valid", "test", mode="before")
    @classmethod
    def _listify(cls, value):
        return [value] if isinstance(value, str | dict) else value


class ModelSection(_Strict):
    """``preset`` of ``DPA4Config`` plus field overrides; ``dtype`` of training."""

    preset: str = "tiny"
    overrides: dict[str, Any] = Field(default_factory=dict)
    dtype: Literal["float32", "float64"] = "float32"


class LossConfig(_Strict):
    energy: float = Field(20.0, ge=0.0)
    forces: float = Field(20.0, ge=0.0)
    stress: float = Field(5.0, ge=0.0)
    kind: Literal["mae", "mse", "huber"] = "mae"
    huber_delta: float = Field(0.01, gt=0.0)


class OptimConfig(_Strict):
    optimizer: Literal["adamw", "muon"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_fraction: float = Field(0.05, ge=0.0, le=1.0)
    decay_fraction: float = Field(0.65, ge=0.0, le=1.0)
    final_lr_ratio: float = Field(0.01, ge=0.0, le=1.0)
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(10.0, gt=0.0)


class BiasConfig(_Strict):
    """Energy reference before training: least squares on composition, isolated atoms from a file (molecular
    sets), or per-element isolated-atom energies ``e0`` (eV; a mapping, or "dimer": half the energy of the
    homonuclear PBE dimer at its largest separation in ``dimer_file``, default the vendored Matbench Discovery
    curves). With ``e0`` the model's bias is E0 and the bulk's cohesive energy goes to the fixed shift of the
    switched network term (least squares of ``E - sum n E0`` on composition): an isolated atom has energy E0."""

    method: Literal["lstsq", "isolated_atoms", "e0", "none"] = "lstsq"
    isolated_atoms: str | None = Field(None, description="file with one single-atom frame per element")
    e0: dict[str, float] | Literal["dimer"] | None = None
    dimer_file: str | None = Field(None, description="diatomics-dft.json.gz for e0: dimer (default: vendored)")

    @model_validator(mode="after")
    def _needs_file(self):
        if self.method == "isolated_atoms" and not self.isolated_atoms:
            raise ValueError("bias.method 'isolated_atoms' needs bias.isolated_atoms (a file of single atoms)")
        if self.method == "e0" and self.e0 is None:
            raise ValueError("bias.method 'e0' needs bias.e0: {element: eV, ...} or 'dimer'")
        if self.method != "e0" and self.e0 is not None:
            raise ValueError(f"bias.e0 is given but bias.method is {self.method!r}; set method: e0")
        return self


class TrainConfig(_Strict):
    """Everything ``dpa4 train`` needs. Paths are relative to the working directory (or to the YAML file's folder
    for ``data`` entries that do not exist relative to the working directory)."""

    data: DataConfig
    model: ModelSection = ModelSection()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    bias: BiasConfig = BiasConfig()
    steps: int = Field(1000, gt=0, description="optimizer steps in total")
    time_limit_s: float | None = Field(
        None, gt=0.0, description="stop after this much training time (s), or after `steps`, whichever comes "
        "first; the learning-rate schedule then follows the larger of the two fractions done, so it still "
        "decays to its end within the time")
    time_clock: Literal["wall", "cpu"] = Field(
        "wall", description="clock of time_limit_s: 'wall', or 'cpu' (CPU time of this process, all threads)")
    batch_size: int = Field(4, gt=0, description="frames per step (global, over all ranks)")
    valid_every: int = Field(100, gt=0)
    checkpoint_every: int = Field(100, gt=0)
    valid_batch_size: int = Field(8, gt=0)
    output_dir: str = "dpa4_run"
    seed: int = 0
    resume: bool = True
    compile: bool = False
    bf16: bool = False
    plots: bool = True
    progress: bool = True
    max_valid_frames: int | None = Field(None, gt=0, description="validate on at most this many frames during training")


class FinetuneConfig(TrainConfig):
    """Fine-tuning: a base checkpoint, its own (smaller) learning rate, optional frozen early blocks."""

    base_checkpoint: str | None = None
    freeze_blocks: int = Field(0, ge=0, description="freeze the embedding and this many first interaction blocks")
    optim: OptimConfig = OptimConfig(lr=2e-4)
    steps: int = Field(300, gt=0)


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid configuration {source}:\n" + "\n".join(lines)


def load_config(config, cls: type[TrainConfig] = TrainConfig) -> TrainConfig:
    """A validated ``cls`` from a model instance, a dict, or a YAML path.

    Raises:
        ConfigError: unknown keys or bad values (every problem listed, with its key path).
        FileNotFoundError: the YAML path does not exist.
    """
    if isinstance(config, cls):
        return config
    source = "(dict)"
    if isinstance(config, BaseModel):
        config = config.model_dump()
    elif isinstance(config, str | os.PathLike):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file {path} does not exist")
        source = str(path)
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        config = _resolve_paths(config, path.parent)
    if not isinstance(config, dict):
        raise ConfigError(f"configuration {source} must be a mapping, got {type(config).__name__}")
    try:
        return cls.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def _resolve_paths(config: dict, base: Path) -> dict:
    """Data and checkpoint paths that do not exist from the working directory but do from the YAML's folder are
    resolved against the YAML's folder."""

    def fix(p: str) -> str:
        return p if Path(p).exists() or not (base / p).exists() else str(base / p)

    if isinstance(config.get("base_checkpoint"), str):
        config["base_checkpoint"] = fix(config["base_checkpoint"])
    data = config.get("data")
    if isinstance(data, dict):
        for key in ("train", "valid", "test"):
            value = data.get(key)
            items = [value] if isinstance(value, str | dict) else value
            if items is None:
                continue
            data[key] = [fix(v) if isinstance(v, str) else
                         ({**v, "path": fix(v["path"])} if isinstance(v, dict) and "path" in v else v) for v in items]
    return config
