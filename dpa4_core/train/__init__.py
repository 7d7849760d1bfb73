"""Training and fine-tuning DPA4 on DFT data (issue 3): ``train``, ``finetune``, ``evaluate``, ``load_dataset``.

The functions are imported eagerly: a lazy ``__getattr__`` would be shadowed by the submodules of the same name
(``dpa4_core.train.finetune``, ``dpa4_core.train.evaluate``) once those are imported.
"""

from __future__ import annotations

from dpa4_core.train.config import ConfigError, FinetuneConfig, TrainConfig
from dpa4_core.train.dataset import FrameDataset, load_dataset
from dpa4_core.train.evaluate import evaluate
from dpa4_core.train.finetune import finetune
from dpa4_core.train.trainer import TrainResult, train

__all__ = ["train", "finetune", "evaluate", "TrainConfig", "FinetuneConfig", "TrainResult", "load_dataset",
           "FrameDataset", "ConfigError"]
