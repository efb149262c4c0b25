"""Training-step time: videomask ``VideoMAE`` vs ``transformers.VideoMAEForPreTraining``, side by side.

One step = zero_grad + forward (loss) + backward + AdamW step, at an identical config, identical
weights (copied through :func:`videomask.io.save_hf_checkpoint`), identical input and identical tube
mask. The variants run interleaved (one step of each per repeat) so CPU load from other processes hits
them alike; medians over the repeats are reported, with the ratio videomask / HF.

FLOPs of one step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions
and attention; elementwise work is not counted) and divided by the median step time. The practical
peak is the FLOP/s of a large fp32 matmul measured in the same run (not a datasheet number).
Both wall time and this process's CPU time are recorded: on a CPU shared with other jobs the CPU time
(with one thread) is the steadier measure of the work done; the wall time is what a user waits.

    python benchmarks/train_step.py                      # ViT-S width, 16x112x112, batch 2, 90% tube mask
    python benchmarks/train_step.py --repeats 5 --depth 4  # quicker
    python benchmarks/train_step.py --out benchmarks/results/train_step.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from videomask.io import save_hf_checkpoint
from videomask.model import VideoMAE, make_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="small", help="named size to start from (default small = ViT-S)")
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--depth", type=int, default=None, help="override encoder depth")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--mask-ratio", type=float, default=0.9)
    p.add_argument("--decoder-mask-ratio", type=float, default=0.5, help="for the decoder-masking variant")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared CPU, OpenMP spin-waits make multi-thread timings erratic)",
    )
    p.add_argument("--fused-adamw", action="store_true", help="use AdamW(fused=True) for every variant")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    p.add_argument("--append", action="store_true", help="append a section to --out instead of overwriting it")
    return p.parse_args(argv)


def tube_mask(batch: int, grid, ratio: float, seed: int = 0) -> torch.Tensor:
    """A VideoMAE tube mask ``[B, L]``: the same random spatial mask at every time slot."""
    g = torch.Generator().manual_seed(seed)
    num_masked = int(round(ratio * grid.num_tubes))
    order = torch.rand(batch, grid.num_tubes, generator=g).argsort(dim=1)
    tubes = torch.zeros(batch, grid.num_tubes, dtype=torch.bool).scatter_(1, order[:, :num_masked], True)
    return tubes.repeat(1, grid.t)  # [B, L] slot-major


def adamw(model: torch.nn.Module, fused: bool) -> torch.optim.Optimizer:
    """The same AdamW for every variant: decay on matrices, none on 1-D parameters (and the mask token)."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and n != "mask_token"]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and n != "mask_token")]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1.5e-4, betas=(0.9, 0.95), fused=fused or None)


def make_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]
) -> Callable[[], float]:
    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(n: int, repeats: int = 5) -> tuple[float, float]:
    """Practical fp32 peak: FLOP/s of an ``n x n @ n x n`` matmul (median of ``repeats``), per wall and CPU time."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        a @ b
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 2 * n**3 / statistics.median(wall), 2 * n**3 / statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = dict(img_size=args.img_size, num_frames=args.frames, decoder_norm_eps=1e-5)
    if args.depth:
        overrides["depth"] = args.depth
    config = make_config(args.size, **overrides)
    ours = VideoMAE(config).train()

    from transformers import VideoMAEForPreTraining

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_hf_checkpoint(ours, tmp)
        hf = VideoMAEForPreTraining.from_pretrained(tmp).train()
    ours_dm = VideoMAE(replace(config, decoder_mask_ratio=args.decoder_mask_ratio)).train()
    ours_dm.load_state_dict(ours.state_dict())

    grid = config.grid()
    video = torch.randn(args.batch, 3, args.frames, args.img_size, args.img_size)  # [B, C, T, H, W]
    pixel_values = video.permute(0, 2, 1, 3, 4).contiguous()  # HF layout [B, T, C, H, W]
    mask = tube_mask(args.batch, grid, args.mask_ratio)
    dec_gen = torch.Generator().manual_seed(1)
    decoder_mask = ours_dm.make_decoder_mask(mask, grid, generator=dec_gen)  # a fixed running-cell decoder mask

    with torch.no_grad():  # same weights, same input, same mask -> same loss before any step
        l_ours, l_hf = ours(video, mask).loss.item(), hf(pixel_values, bool_masked_pos=mask).loss.item()
    variants = {
        "HF VideoMAEForPreTraining": make_step(
            hf, adamw(hf, args.fused_adamw), lambda: hf(pixel_values, bool_masked_pos=mask).loss
        ),
        "videomask": make_step(ours, adamw(ours, args.fused_adamw), lambda: ours(video, mask).loss),
        f"videomask + decoder mask {args.decoder_mask_ratio:g}": make_step(
            ours_dm, adamw(ours_dm, args.fused_adamw), lambda: ours_dm(video, mask, decoder_mask).loss
        ),
    }
    flops = {name: count_flops(step) for name, step in variants.items()}  # also a warm-up step each
    for _ in range(args.warmup):
        for step in variants.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in variants}  # wall clock
    cpu: dict[str, list[float]] = {name: [] for name in variants}  # this process's CPU time
    for _ in range(args.repeats):
        for name, step in variants.items():
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    peak, peak_cpu = matmul_peak(args.matmul_size)

    hf_name = next(iter(variants))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    lines = [
        f"config: {args.size} (embed {config.embed_dim} x depth {config.depth}, decoder {config.decoder_embed_dim} x "
        f"{config.decoder_depth}), clip {args.frames}x{args.img_size}x{args.img_size}, batch {args.batch}, "
        f"tube mask {args.mask_ratio:g} ({int(mask[0].sum())}/{grid.num_tokens} tokens masked), "
        f"AdamW{' fused' if args.fused_adamw else ''}, fp32, {torch.get_num_threads()} thread(s), "
        f"{args.repeats} interleaved repeats after {args.warmup} warm-up",
        f"initial loss: videomask {l_ours:.6f}, HF {l_hf:.6f} (|diff| {abs(l_ours - l_hf):.2e})",
        f"practical peak (not a datasheet number): {args.matmul_size}^3 fp32 matmul = {peak / 1e9:.1f} GFLOP/s wall, "
        f"{peak_cpu / 1e9:.1f} GFLOP/s per CPU second",
        "",
        "| variant | median wall (s) | ratio vs HF (wall) | median CPU (s) | ratio vs HF (CPU) | GFLOP / step "
        "| GFLOP/s (wall) | % of peak (wall) | GFLOP/s per CPU s | % of peak (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in variants:
        rate, rate_cpu = flops[name] / med[name], flops[name] / med_cpu[name]
        lines.append(
            f"| {name} | {med[name]:.4f} | {med[name] / med[hf_name]:.3f}x | {med_cpu[name]:.4f} | "
            f"{med_cpu[name] / med_cpu[hf_name]:.3f}x | {flops[name] / 1e9:.2f} | {rate / 1e9:.1f} | "
            f"{100 * rate / peak:.0f}% "
            f"| {rate_cpu / 1e9:.1f} | {100 * rate_cpu / peak_cpu:.0f}% |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/train_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
        section = f"## `{command.strip()}`\n\n{text}\n"
        if args.append and args.out.exists():
            args.out.write_text(args.out.read_text() + "\n" + section)
        else:
            args.out.write_text(f"# Training step: videomask vs Hugging Face VideoMAE\n\n{section}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
