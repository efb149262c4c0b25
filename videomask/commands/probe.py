"""``videomask probe``: linear-probe and kNN accuracy on frozen, pooled encoder features."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videomask.errors import VideomaskError

HELP = "linear probe and kNN accuracy on frozen encoder features"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="videomask run checkpoint (model.safetensors or its folder), Hugging Face folder, "
        "VideoMAE .pth, or a model size name (tiny/small/base: random init, the baseline)",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="--task labels: a labelled list (CSV/TSV with path,label[,split] header, or 'path label' lines); "
        "--task arrow/speed: a folder of videos",
    )
    parser.add_argument(
        "--task",
        default="labels",
        choices=["labels", "arrow", "speed"],
        help="labels = the list's labels; arrow = forward vs reversed clip; speed = stride 1/2/4 (default: labels)",
    )
    parser.add_argument(
        "--split-column",
        default=None,
        help="header column with train/test per row; without it: a seeded 70/30 split within each class",
    )
    parser.add_argument(
        "--model", default="tiny", help="model size for a checkpoint without a stored config (default: tiny)"
    )
    parser.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the model's)")
    parser.add_argument("--sampling-rate", type=int, default=4, help="frame stride of --task labels clips (default: 4)")
    parser.add_argument("--stride", type=int, default=2, help="frame stride of arrow-of-time clips (default: 2)")
    parser.add_argument("--size", type=int, default=None, help="clip height = width (default: the model's)")
    parser.add_argument("--k", type=int, default=5, help="neighbours for kNN (default: 5)")
    parser.add_argument(
        "--train-share",
        type=float,
        default=0.7,
        help="share of rows (labels) or of each video's frames (arrow/speed) used for training (default: 0.7)",
    )
    parser.add_argument(
        "--gap", type=int, default=8, help="arrow/speed: frames between train and test windows (default: 8)"
    )
    parser.add_argument(
        "--max-windows", type=int, default=None, help="arrow/speed: at most this many windows per video and split"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="clips per batch of feature extraction (default: 16)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split rule and of random init (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device for feature extraction (default: cpu)")
    parser.add_argument(
        "--backend", default="pyav", help="decoding backend: pyav, decord, opencv or auto (default: pyav)"
    )
    parser.add_argument("--json", default=None, help="also write the result as JSON to this file")


def run(args: argparse.Namespace) -> int:
    # torch and the decoders load only when the command runs, so `videomask --help` stays fast
    from videomask import eval as ev
    from videomask.data import list_videos
    from videomask.video import open_video

    if args.k < 1 or args.batch_size < 1 or not 0.0 < args.train_share < 1.0:
        raise VideomaskError("need --k >= 1, --batch-size >= 1 and --train-share in (0, 1)")
    model = ev.load_encoder(args.checkpoint, name=args.model, seed=args.seed).to(args.device)
    cfg = model.config
    num_frames = args.num_frames or cfg.num_frames
    size = args.size or cfg.img_size
    if args.task == "labels":
        rows, names = ev.read_labelled_list(args.data, args.split_column)
        samples = ev.list_samples(
            rows,
            num_frames=num_frames,
            sampling_rate=args.sampling_rate,
            train_share=args.train_share,
            seed=args.seed,
            backend=args.backend,
        )
        rule = (
            f"split column {args.split_column!r}"
            if args.split_column
            else f"seeded {args.train_share:.0%}/{1 - args.train_share:.0%} split within each class"
        )
    else:
        root = Path(args.data)
        videos = []
        for item in list_videos(root):
            with open_video(item.path, backend=args.backend) as reader:
                videos.append((item.path, item.video_id, int(reader.meta.num_frames)))
        samples = ev.build_task_samples(
            videos,
            args.task,
            num_frames=num_frames,
            stride=args.stride,
            train_share=args.train_share,
            gap=args.gap,
            max_windows=args.max_windows,
        )
        names = ["forward", "reversed"] if args.task == "arrow" else [f"stride {s}" for s in ev.SPEED_STRIDES]
        rule = (
            f"windows split by time: first {args.train_share:.0%} of each video's frames train, "
            f"test from {args.gap} frames later"
        )
    clips = ev.decode_samples(samples, size, backend=args.backend, progress=True)
    if int(clips.is_train.sum()) == 0 or int((~clips.is_train).sum()) == 0:
        raise VideomaskError("the split left no train or no test clip; add data or change --train-share")
    feats = ev.extract_features(model, clips.clips, batch_size=args.batch_size, device=args.device)  # [N, D]
    result = ev.probe_clipset(feats, clips, k=args.k, num_classes=len(names))
    test_labels = clips.labels[~clips.is_train]
    majority = float(test_labels.bincount(minlength=len(names)).max()) / max(1, test_labels.numel())
    print(
        f"probe {args.checkpoint}: task={args.task}, {len(names)} classes, {result['num_train']} train / "
        f"{result['num_test']} test clips ({rule})"
    )
    print(
        f"linear probe accuracy: {100 * result['linear']:.1f}% (weight decay {result['weight_decay']:g}, train "
        f"accuracy {100 * result['linear_train']:.1f}%)"
    )
    print(f"kNN accuracy (k={args.k}, cosine): {100 * result['knn']:.1f}%")
    print(f"majority-class accuracy on test: {100 * majority:.1f}%")
    if args.json:
        out = {
            "checkpoint": args.checkpoint,
            "task": args.task,
            "classes": names,
            "rule": rule,
            "majority": majority,
            **result,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0
