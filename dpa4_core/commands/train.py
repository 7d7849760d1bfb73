"""``dpa4 train CONFIG`` and ``dpa4 finetune CONFIG [--from CKPT] [--seeds K...]``: run the trainer, print paths and
metrics as JSON on stdout (rank 0 only under torchrun). Progress (a bar, and one line per validation) goes to stderr;
``-q`` turns both off. With ``--seeds`` (a committee for ``dpa4 screen --committee``) stdout is a JSON list, one
entry per member, and the ``dpa4 screen`` line that uses them goes to stderr."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from dpa4_core.commands.common import add_command, print_json


def _result_dict(result) -> dict:
    return {
        "checkpoint": str(result.checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
        "log_path": str(result.log_path),
        "plots": [str(p) for p in result.plots],
        "metrics": result.metrics,
    }


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports


def _print_result(result) -> None:
    if _is_main():
        print_json(_result_dict(result))


def screen_command(checkpoints: list[str]) -> str:
    """The ``dpa4 screen`` line relaxing with the first member and scoring with all of them."""
    paths = [shlex.quote(str(Path(c).resolve())) for c in checkpoints]
    return f"dpa4 screen CANDIDATES... --store STORE --model {paths[0]} --committee {' '.join(paths)}"


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

    if args.seeds:
        return _finetune_committee(args, FinetuneConfig)
    _print_result(finetune(_config(args, FinetuneConfig), base_checkpoint=args.base))
    return 0


def _finetune_committee(args, cls) -> int:
    from dpa4_core.train.finetune import finetune_committee

    members = finetune_committee(_config(args, cls), args.seeds, base_checkpoint=args.base)
    if _is_main():
        print_json([{"seed": seed, **_result_dict(result)} for seed, result in members])
        print(f"screen with this committee:\n  {screen_command([str(r.checkpoint) for _, r in members])}",
              file=sys.stderr)
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
        "dpa4 finetune my.yaml --from DPA4-Mini-OMat24-v20260805.pt   # a deepmd-kit foundation model",
        "dpa4 finetune my.yaml --seeds 0 1 2    # a committee: <output_dir>/seed0, seed1, seed2",
    ])
    p.add_argument("config", help="YAML file (see examples/finetune_mlearn_mo.yaml)")
    p.add_argument("--from", dest="base", default=None,
                   help="base checkpoint (overrides base_checkpoint): a dpa4 checkpoint, a shipped model's name, or "
                        "a deepmd-kit DPA4 .pt (the authors' foundation models)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="K",
                   help="fine-tune one committee member per seed (data order) into <output_dir>/seed<K>, one after "
                        "another; prints a JSON list and the `dpa4 screen ... --committee` line using them")
    p.set_defaults(func=_cmd_finetune)
