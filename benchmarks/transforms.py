"""Clip transform cost: videomask's uint8 path against the same transform on float frames, side by side.

    python benchmarks/transforms.py [--repeats 15] [--threads 1]

``ClipTransform`` crops uint8 frames first (a view) and resizes in uint8 (torch's fast antialiased
path) before normalising; the reference converts the decoded frames to float first and then runs the
same crop / resize / normalise. Both get the same frames and the same random draws. For each frame size
and mode it prints the median milliseconds per 16-frame clip and the ratio (reference / videomask;
> 1: videomask faster), and the largest absolute difference of the outputs (normalised units).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from videomask.data import ClipTransform, crop, frames_to_tensor, multiscale_crop_params, normalize, resize
from videomask.patches import ClipGeometry

SIZES = [(240, 320), (360, 640), (720, 1280)]
NUM_FRAMES, OUT = 16, 112


def float_reference(frames: torch.Tensor, transform: ClipTransform, generator: torch.Generator) -> torch.Tensor:
    """The same transform with the frames converted to float before anything else."""
    video = frames_to_tensor(frames).float()  # [T, 3, H, W] float
    H, W = video.shape[-2:]
    g = ClipGeometry.identity(H, W)
    if transform.train:
        top, left, h, w = multiscale_crop_params(
            H, W, transform.size, transform.scales, transform.max_distort, generator
        )
    else:
        scale = max(transform.size) / min(H, W)
        h, w = min(H, round(transform.size[0] / scale)), min(W, round(transform.size[1] / scale))
        top, left = (H - h) // 2, (W - w) // 2
    video, g = crop(video, g, top, left, h, w)
    video, g = resize(video, g, *transform.size)
    return normalize(video, transform.mean, transform.std).permute(1, 0, 2, 3)  # [C, T, h, w]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {NUM_FRAMES} frames -> {OUT}x{OUT}, "
        f"median of {args.repeats} (ms per clip)"
    )
    print(f"{'frame':>10} {'mode':>6} {'videomask':>10} {'float ref':>10} {'ratio':>6} {'max |diff|':>10}")
    for H, W in SIZES:
        frames = torch.randint(0, 256, (NUM_FRAMES, H, W, 3), dtype=torch.uint8).numpy()
        for mode, transform in (("train", ClipTransform.for_training(OUT)), ("eval", ClipTransform.for_eval(OUT))):
            ours, ref, ratios = [], [], []
            diff = 0.0
            for r in range(args.repeats):
                t0 = time.perf_counter()
                a, _ = transform(frames, torch.Generator().manual_seed(r))
                t1 = time.perf_counter()
                b = float_reference(frames, transform, torch.Generator().manual_seed(r))
                t2 = time.perf_counter()
                ours.append(t1 - t0)
                ref.append(t2 - t1)
                ratios.append((t2 - t1) / (t1 - t0))
                diff = max(diff, float((a - b).abs().max()))
            print(
                f"{H:>4}x{W:<5} {mode:>6} {1e3 * statistics.median(ours):>10.2f} {1e3 * statistics.median(ref):>10.2f} "
                f"{statistics.median(ratios):>6.2f} {diff:>10.4f}"
            )


if __name__ == "__main__":
    main()
