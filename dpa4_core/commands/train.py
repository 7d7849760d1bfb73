"""``dpa4 train CONFIG`` and ``dpa4 finetune CONFIG [--from CKPT]``: run the trainer, print paths and metrics as
JSON on stdout (rank 0 only under torchrun). Progress (a bar, and one line per validation) goes to stderr;
``-q`` turns both off."""

from __future__ import annotations

import os

from dpa4_core.commands.common import add_command, print_json


def _print_result(result) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    print_json({
        "checkpoint": str(result.checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
        "log_path": str(result.log_path),
        "plots": [str(p) for p in result.plots],
        "metrics": result.metrics,
    })


def _config(args, cls):
    """The YAML path, or with ``-q`` the loaded config with its progress output turned off."""
    if not args.quiet:
        return args.config
    from dpa4_core.train.config import load_config

    return load_config(args.config, cls).model_copy(update={"progress": False})


def _cmd_train(args) -> int:
    from dpa4_core.train import TrainConfig, train

    _print_result(train(_config(args, TrainConfig)))
    return 0


def _cmd_finetune(args) -> int:
    from dpa4_core.train import FinetuneConfig, finetune

    _print_result(finetune(_config(args, FinetuneConfig), base_checkpoint=args.base))
    return 0


def register(sub) -> None:
    """Add ``train`` and ``finetune``."""
    p = add_command(sub, "train", "train a model from a YAML config", [
        "dpa4 train examples/train_monbtaw.yaml",
        "dpa4 -q train my.yaml > result.json      # no progress output",
        "torchrun --nproc_per_node 4 -m dpa4_core.cli train my.yaml",
    ], description="Train a DPA4 model from a YAML config. Prints checkpoint paths and final metrics as JSON; "
                   "a progress bar and one line per validation (step, epoch, loss, lr, validation energy and "
                   "force MAE) go to stderr.")
    p.add_argument("config", help="YAML file (see examples/train_monbtaw.yaml)")
    p.set_defaults(func=_cmd_train)

    p = add_command(sub, "finetune", "fine-tune a checkpoint from a YAML config", [
        "dpa4 finetune examples/finetune_mlearn_mo.yaml",
        "dpa4 finetune my.yaml --from runs/base/best.pt",
    ])
    p.add_argument("config", help="YAML file (see examples/finetune_mlearn_mo.yaml)")
    p.add_argument("--from", dest="base", default=None, help="base checkpoint (overrides base_checkpoint)")
    p.set_defaults(func=_cmd_finetune)
