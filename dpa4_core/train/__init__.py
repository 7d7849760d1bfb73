"""Training and fine-tuning DPA4 on DFT data (issue 3): ``train``, ``finetune``, ``evaluate``, ``load_dataset``.

Heavy modules are imported lazily so ``import dpa4_core.train`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["train", "finetune", "evaluate", "TrainConfig", "FinetuneConfig", "TrainResult", "load_dataset",
           "FrameDataset", "ConfigError"]

_WHERE = {
    "train": "dpa4_core.train.trainer",
    "TrainResult": "dpa4_core.train.trainer",
    "finetune": "dpa4_core.train.finetune",
    "evaluate": "dpa4_core.train.evaluate",
    "TrainConfig": "dpa4_core.train.config",
    "FinetuneConfig": "dpa4_core.train.config",
    "ConfigError": "dpa4_core.train.config",
    "load_dataset": "dpa4_core.train.dataset",
    "FrameDataset": "dpa4_core.train.dataset",
}

if TYPE_CHECKING:
    from dpa4_core.train.config import ConfigError, FinetuneConfig, TrainConfig
    from dpa4_core.train.dataset import FrameDataset, load_dataset
    from dpa4_core.train.evaluate import evaluate
    from dpa4_core.train.finetune import finetune
    from dpa4_core.train.trainer import TrainResult, train


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'dpa4_core.train' has no attribute {name!r}")
