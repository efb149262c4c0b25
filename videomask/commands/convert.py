"""``videomask convert RUN/checkpoints/step_N OUT [--hf]``.

Turns a sharded checkpoint (``train.parallel: fsdp``: ``sharded/`` written by torch.distributed.checkpoint)
into the usual checkpoint folder: ``OUT/model.safetensors`` (the whole model, loadable with
``model.checkpoint=OUT``) and ``OUT/state.safetensors`` (the full optimizer, data position and RNG states, so
``OUT`` also resumes a ``train.parallel: ddp`` run when copied into its ``checkpoints/``). ``--hf`` also writes
``OUT/hf`` (Hugging Face ``save_pretrained``). Runs in one process; no GPU needed.
"""

from __future__ import annotations

import argparse
import sys

HELP = "convert a sharded (FSDP) checkpoint into a single-file checkpoint (and a Hugging Face folder)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a sharded checkpoint folder, e.g. runs/x/checkpoints/step_00001000")
    parser.add_argument("out", help="the new checkpoint folder (must not exist)")
    parser.add_argument("--hf", action="store_true", help="also write OUT/hf, a Hugging Face save_pretrained folder")


def run(args: argparse.Namespace) -> int:
    # torch and torch.distributed load when the command runs, so `videomask --help` stays fast
    from videomask.train.fsdp import convert_checkpoint

    path = convert_checkpoint(args.checkpoint, args.out, hf=args.hf)
    print(f"wrote {path}" + (f" and {path / 'hf'}" if args.hf else ""), file=sys.stderr)
    return 0
