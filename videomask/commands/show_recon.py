"""``videomask show-recon``: what a model reconstructs of a masked clip (animated GIF and a PNG grid).

    videomask show-recon VIDEO --checkpoint PATH [--masker tube] [masker options as show-masks]
                         [--num-frames N --sampling-rate 4 --size S] [--seed 0] [--device cpu]
                         -o recon.gif [--png recon.png]

Four panels: original | masked input | reconstruction | per-patch error heat map. ``--checkpoint``
takes a videomask checkpoint (a ``.safetensors`` file or a folder with ``model.safetensors``, e.g. a
run's ``final/``), a Hugging Face ``save_pretrained`` folder or an original VideoMAE ``.pth``. The clip
defaults to the model's frames and size. With ``norm_pix_loss`` (VideoMAE's default) the prediction is
un-normalised with each original patch's mean and std, and the picture says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from videomask.commands import add_clip_arguments
from videomask.errors import VideomaskError

HELP = "draw what a model reconstructs of a masked clip (GIF and PNG grid)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.commands.show_masks import add_masker_arguments

    parser.add_argument("video", help="a video file")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="videomask checkpoint (.safetensors or a folder with model.safetensors), "
        "Hugging Face folder or VideoMAE .pth",
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="model size for a videomask checkpoint that stores no config (tiny, small, base)",
    )
    parser.add_argument(
        "--masker", default="tube", help="a registered masker: random, tube, difference, objects (default: tube)"
    )
    parser.add_argument("-o", "--output", required=True, help="GIF to write")
    parser.add_argument("--png", default=None, help="PNG grid to write (default: the GIF's name with .png)")
    add_masker_arguments(parser)
    add_clip_arguments(parser, num_frames=None, sampling_rate=4, size=None, with_tubelet=False, with_backend=False)
    parser.add_argument("--scale", type=int, default=2, help="picture upscaling factor (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mask (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default: cpu)")


def run(args: argparse.Namespace) -> int:

    # heavy imports load when the command runs, so `videomask --help` stays fast
    import torch

    # heavy imports load when the command runs, so `videomask --help` stays fast
    from videomask.commands.show_masks import prepare
    from videomask.io import load_model
    from videomask.viz import show_recon

    if not Path(args.video).is_file():  # before the (slow) model load
        raise VideomaskError(f"no such video file: {args.video}")
    if args.scale < 1:
        raise VideomaskError("--scale must be >= 1")
    device = (
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VideomaskError(f"--device {args.device} but CUDA is not available")
    model, source = load_model(args.checkpoint, name=args.model_name, what="--checkpoint")
    model.to(device).eval()
    c = model.config
    args.num_frames = args.num_frames or c.num_frames
    args.size = args.size or c.img_size
    clip, masker, detections = prepare(args, tubelet=tuple(model.tubelet), mean=tuple(c.mean), std=tuple(c.std))
    with torch.no_grad():
        picture = show_recon(
            clip, model, masker, args.output, detections=detections, png=args.png, seed=args.seed, scale=args.scale
        )
    split = (
        f" (anchor patches {picture.loss_anchor:.4f}, other masked {picture.loss_other:.4f})"
        if picture.loss_anchor is not None and picture.loss_other is not None
        else ""
    )
    note = (
        "; prediction un-normalised with each original patch's mean and std (norm_pix_loss)" if c.norm_pix_loss else ""
    )
    print(
        f"{picture.gif} and {picture.png}: {source} model, {masker.name} masked {picture.masked_share:.1%} of tokens, "
        f"loss {picture.loss:.4f}{split}{note}"
    )
    return 0
