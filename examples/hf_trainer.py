"""Continued pretraining of a Hugging Face ``VideoMAEForPreTraining`` with ``transformers.Trainer`` and a
videomask masker, on the clips shipped with videomask (runs on a CPU in seconds).

    python examples/hf_trainer.py --steps 5 --out runs/hf_trainer
    python examples/hf_trainer.py --checkpoint path/to/videomae-base --size 224 --num-frames 16 --masker difference \\
        --stats stats.safetensors --data videos/my_domain

Without ``--checkpoint`` the model is a freshly initialised tiny VideoMAE. ``Trainer`` needs ``accelerate``
(``pip install accelerate``). The one videomask-specific line is the ``data_collator``:
``MaskingCollator(masker)`` turns dataset items into ``pixel_values [B, T, C, H, W]`` and
``bool_masked_pos [B, L]``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/hf_trainer", help="Trainer output_dir")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps")
    parser.add_argument(
        "--data", default=None, help="folder or list file of videos (default: the shipped target clips)"
    )
    parser.add_argument("--checkpoint", default=None, help="a local VideoMAEForPreTraining save_pretrained folder")
    parser.add_argument(
        "--masker", default="tube", help="a registered videomask masker (tube, random, difference, objects)"
    )
    parser.add_argument("--stats", default=None, help="statistics file for --masker difference")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from transformers import Trainer, TrainingArguments, VideoMAEConfig, VideoMAEForPreTraining

    from videomask.data import VideoDataset
    from videomask.masking import MaskingCollator, build_masker
    from videomask.resources import data_dir

    torch.manual_seed(args.seed)
    if args.checkpoint:
        model = VideoMAEForPreTraining.from_pretrained(args.checkpoint)  # a local folder: nothing is downloaded
    else:
        model = VideoMAEForPreTraining(
            VideoMAEConfig(
                image_size=args.size,
                num_frames=args.num_frames,
                patch_size=16,
                tubelet_size=2,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                decoder_hidden_size=32,
                decoder_num_hidden_layers=1,
                decoder_num_attention_heads=2,
                decoder_intermediate_size=64,
            )
        )
    c = model.config
    patch = c.patch_size if isinstance(c.patch_size, int) else c.patch_size[0]
    tubelet = (c.tubelet_size, patch, patch)
    dataset = VideoDataset.from_path(
        args.data or data_dir("assets") / "target",
        num_frames=args.num_frames,
        sampling_rate=2,
        size=args.size,
        tubelet=tubelet,
        seed=args.seed,
    )
    options: dict[str, Any] = {"tubelet": tubelet, "ratio": 0.9}
    if args.stats:
        options = {"stats": args.stats, "ratio": 0.9}
    collator = MaskingCollator(build_masker(args.masker, **options), seed=args.seed)

    training = TrainingArguments(
        output_dir=args.out,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-3,
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=args.seed,
    )
    trainer = Trainer(model=model, args=training, train_dataset=dataset, data_collator=collator)
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    summary = {
        "steps": trainer.state.global_step,
        "losses": losses,
        "masker": repr(collator.masker),
        "finite": all(math.isfinite(v) for v in losses),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"{trainer.state.global_step} Trainer steps with {args.masker} masking: loss "
        + " -> ".join(f"{v:.4f}" for v in (losses[0], losses[-1]))
        + f" (summary in {Path(args.out) / 'summary.json'})"
    )
    return summary


if __name__ == "__main__":
    main()
