"""Training-step time with ``train.compile`` (each block through ``torch.compile``) vs eager, one process.

One step = zero_grad + forward (loss) + backward + AdamW step at a named size, identical weights, input and
tube mask. The compile time (the first compiled steps) is reported apart; the variants then run interleaved
(one step of each per repeat) so CPU load from other processes hits them alike; medians are reported,
wall time and this process's CPU time (with one thread the CPU time is the steadier measure on a shared machine).

    python benchmarks/compile_step.py --size tiny --img-size 112 --frames 16 --threads 1
    python benchmarks/compile_step.py --size small --out benchmarks/results/compile.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from videomask.masking import build_masker
from videomask.model import build_model
from videomask.train.fsdp import compile_blocks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="tiny", help="named model size (tiny, small, base, ...)")
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3, help="compiled steps run before timing (they compile)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--out", default=None, help="append the markdown rows to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {"eager": build_model(args.size, num_frames=args.frames, img_size=args.img_size)}
    models["compiled"] = build_model(args.size, num_frames=args.frames, img_size=args.img_size)
    models["compiled"].load_state_dict(models["eager"].state_dict())
    compile_blocks(models["compiled"], backend=args.backend)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    video = torch.randn(args.batch, 3, args.frames, args.img_size, args.img_size)  # [B, C, T, H, W]
    masker = build_masker("tube", tubelet=tuple(models["eager"].tubelet), ratio=0.9)
    mask = masker.generate({"video": video}, generator=torch.Generator().manual_seed(0)).mask  # [B, L]

    def step(name: str) -> tuple[float, float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        opts[name].zero_grad(set_to_none=True)
        loss = models[name](video, mask, None, generator=torch.Generator().manual_seed(1)).loss
        loss.backward()
        opts[name].step()
        return time.perf_counter() - wall, time.process_time() - cpu, float(loss.detach())

    first = [step("eager")[2]]
    t0 = time.perf_counter()
    first.append(step("compiled")[2])  # the same weights: the same first loss
    compile_s = time.perf_counter() - t0  # the first compiled step: tracing and code generation
    for _ in range(args.warmup):
        step("compiled")
        step("eager")
    times: dict[str, list[tuple[float, float]]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        for name in times:
            wall, cpu, _ = step(name)
            times[name].append((wall, cpu))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    setting = (
        f"{args.size}, {args.frames}x{args.img_size}x{args.img_size}, batch {args.batch}, 90% tube mask, "
        f"{args.threads} thread(s), backend {args.backend}"
    )
    row = (
        f"| {setting} | {med['eager'][0] * 1e3:.0f} / {med['eager'][1] * 1e3:.0f} | "
        f"{med['compiled'][0] * 1e3:.0f} / {med['compiled'][1] * 1e3:.0f} | "
        f"{med['eager'][1] / med['compiled'][1]:.2f} | {compile_s:.0f} | {abs(first[0] - first[1]):.1e} |"
    )
    print(row)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
