"""``videomask pretrain --config configs/NAME.yaml [section.key=value ...] [--resume]``.

Runs (or resumes) continued pretraining; see :mod:`videomask.train`. Under
``torchrun --nproc_per_node N -m videomask pretrain ...`` every rank runs this command and the job
trains with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from videomask.commands import config_path
from videomask.config import config_to_dict, load_config

HELP = "continue pretraining a VideoMAE model with a chosen masker"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        required=True,
        help="YAML run config; configs/NAME.yaml not found here reads the one shipped with videomask",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="config overrides, e.g. train.steps=200 mask.name=difference mask.options.stats=s.safetensors",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest complete checkpoint in run.out_dir (same as train.resume=true)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:

    overrides = list(args.overrides) + (["train.resume=true"] if args.resume else [])
    cfg = load_config(config_path(args.config), overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.train import train

    result = train(cfg)
    if not result.ok:
        print(f"videomask pretrain: stopped: {result.stopped}", file=sys.stderr)
        return 1
    return 0
