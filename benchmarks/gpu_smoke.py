"""GPU smoke test: the CUDA paths of the training loop, checked and timed on one GPU.

On a CUDA machine it checks, each as one ``PASS``/``FAIL`` line:

* ``train()`` steps in bf16 and in fp16 (GradScaler) on generated clips: finite losses and gradient norms;
  what ``precision=auto`` picks on this GPU;
* masks built on the GPU by every registered masker equal the CPU masks drawn from the same CPU
  generator (the difference masker: agreement share, its scores are float work); the decoder mask too;
* a run checkpointed on the GPU and resumed on the CPU continues (weights read back equal);
* host syncs in one steady training step (``torch.cuda.set_sync_debug_mode``), with and without the
  mask-count checks;

then prints clips/s for ViT-B 16x224 training steps (masker + forward + backward + AdamW, autocast
as ``precision=auto``) with tube and with difference masking, medians over repeats, and their ratio.

    python benchmarks/gpu_smoke.py                                # on a CUDA machine
    python benchmarks/gpu_smoke.py --out benchmarks/results/gpu_smoke.md
    python benchmarks/gpu_smoke.py --device cpu --tiny            # dry run of the same code on the CPU

Without CUDA (and without ``--device cpu``) it prints one line saying so and exits with status 2.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

TINY = {
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    p.add_argument("--tiny", action="store_true", help="tiny model and 4x32x32 clips everywhere (dry runs)")
    p.add_argument("--batch", type=int, default=8, help="clips per step in the throughput part")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median) in the throughput part")
    p.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    p.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- helpers


class Report:
    """Collects PASS/FAIL lines and timings; prints as it goes."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed = 0

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.failed += not ok
        self.say(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return ok

    def run(self, name: str, fn: Callable[[], str | None]) -> None:
        """Run one check; an exception is a FAIL with its one-line message."""
        try:
            detail = fn()
            self.check(name, True, detail or "")
        except Exception as err:  # noqa: BLE001 - a smoke test reports and goes on
            self.check(name, False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_clips(root: Path, count: int, frames: int, height: int, width: int) -> Path:
    """``count`` small H.264 clips (PyAV) with moving gradients of different tints."""
    import av

    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        tint = np.random.default_rng(i).integers(0, 120, size=3)
        with av.open(str(root / f"v{i}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for k in range(frames):
                base = (xx * 3 + yy * 2 + 5 * k + 40 * i) % 128  # [H, W]
                frame = np.clip(base[..., None] + tint, 0, 255).astype(np.uint8)  # [H, W, 3]
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return root


def run_config(work: Path, videos: Path, args: argparse.Namespace, **sections: dict) -> Any:
    """A small run config (tiny model, 4x32x32 clips unless overridden) for ``train()``."""
    from videomask.config import load_config

    raw: dict[str, Any] = {
        "run": {"out_dir": str(work / "run"), "seed": 0, "device": str(args.device)},
        "data": {
            "path": str(videos),
            "num_frames": 4,
            "sampling_rate": 2,
            "size": 32,
            "batch_size": 2,
            "num_workers": 0,
        },
        "model": {"name": "tiny", "overrides": dict(TINY)},
        "mask": {"name": "tube", "ratio": 0.75},
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "train": {
            "steps": 4,
            "log_every": 1,
            "save_every": 2,
            "clip_grad": 1.0,
            "progress": False,
            "tensorboard": False,
        },
    }
    for name, values in sections.items():
        raw[name] = {**raw[name], **values}
    work.mkdir(parents=True, exist_ok=True)
    path = work / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, [])


# ----------------------------------------------------------------------------- checks


def check_precision_steps(
    rep: Report, args: argparse.Namespace, device: torch.device, work: Path, videos: Path
) -> None:
    from videomask.train import native_bf16, resolve_precision, train

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        cap = torch.cuda.get_device_capability(device)
        auto = resolve_precision("auto", device)
        rep.say(
            f"INFO device {name}, compute capability {cap[0]}.{cap[1]}, native bf16 {native_bf16(device)}, "
            f"precision=auto -> {str(auto).split('.')[-1]}"
        )
    precisions = ["bf16", "fp16"] if device.type == "cuda" else ["bf16", "fp32"]
    for precision in precisions:

        def one(precision: str = precision) -> str:
            cfg = run_config(
                work / f"steps-{precision}", videos, args, train={"precision": precision, "steps": 4, "save_every": 0}
            )
            result = train(cfg)
            losses = [r["loss"] for r in result.history]
            norms = [r["grad_norm"] for r in result.history]
            assert result.ok and result.skipped_steps == 0, f"run stopped or skipped steps: {result.stopped}"
            assert all(v is not None and math.isfinite(v) for v in losses), f"losses {losses}"
            finite = [v for v in norms if v is not None and math.isfinite(v)]
            # fp16: a GradScaler back-off (inf gradient at too high a scale) is normal in the first steps
            need = 1 if precision == "fp16" else len(norms)
            assert len(finite) >= need, f"gradient norms {norms}"
            return (
                f"losses {' '.join(f'{v:.4f}' for v in losses)}, grad norms "
                f"{' '.join('-' if v is None else f'{v:.3g}' for v in norms)}"
            )

        rep.run(f"train() {precision} steps on {device}", one)
    if device.type != "cuda":
        rep.say("SKIP fp16 steps: fp16 needs CUDA")


def _masker_batch(B: int, T: int, S: int) -> dict:
    from videomask.patches import ClipGeometry

    g = torch.Generator().manual_seed(0)
    return {
        "video": torch.randn(B, 3, T, S, S, generator=g),  # [B, C, T, H, W]
        "video_id": [f"v{i}" for i in range(B)],
        "frame_indices": torch.arange(T).expand(B, T) * 4,
        "geometry": ClipGeometry.identity(S, S).to_tensor().expand(B, 9),
    }


def build_every_masker(T: int, S: int, tubelet: tuple[int, int, int]) -> dict[str, Any]:
    """name -> masker for each registered masker (the difference masker with pixel-embedding statistics)."""
    from videomask.detect import BoxCache
    from videomask.difference import PixelEmbedder, fit_statistics
    from videomask.masking import available_maskers, build_masker

    maskers: dict[str, Any] = {}
    for name in available_maskers():
        if name == "difference":
            source = [torch.randn(4, 3, T, S, S, generator=torch.Generator().manual_seed(i)) for i in range(4)]
            target = [
                torch.randn(4, 3, T, S, S, generator=torch.Generator().manual_seed(10 + i)) * 1.5 for i in range(4)
            ]
            stats = fit_statistics(
                source,
                target,
                PixelEmbedder(dim=64, tubelet=tubelet),
                num_words=16,
                num_anchors=4,
                init_tokens=512,
                progress=False,
            )
            maskers[name] = build_masker(name, stats=stats, tubelet=tubelet)
        elif name == "objects":
            records = []
            for i in range(16):
                for f in range(T * 4):
                    records.append(
                        {"video": f"v{i}", "frame": f, "box": [0, 0, S // 2, S // 2], "label": "person", "score": 0.9}
                    )
                records.append({"video": f"v{i}", "done": True, "num_frames": T * 4, "stride": 1})
            maskers[name] = build_masker(name, boxes=BoxCache.from_records(records), tubelet=tubelet)
        else:
            maskers[name] = build_masker(name, tubelet=tubelet)
    return maskers


def check_masks(rep: Report, args: argparse.Namespace, device: torch.device) -> None:
    from videomask.model import build_model

    T, S = (4, 32) if args.tiny else (16, 224)
    tubelet = (2, 16, 16)
    batch = _masker_batch(4, T, S)
    try:
        maskers = build_every_masker(T, S, tubelet)
    except Exception as err:  # noqa: BLE001
        rep.check("build every masker", False, f"{type(err).__name__}: {err}")
        return
    for name, masker in maskers.items():

        def one(name: str = name, masker: Any = masker) -> str:
            cpu = masker.generate(batch, generator=torch.Generator().manual_seed(7))
            masker.to(device)
            dev = masker.generate(
                {**batch, "video": batch["video"].to(device)}, generator=torch.Generator().manual_seed(7)
            )
            masker.to("cpu")
            assert dev.mask.device.type == device.type, f"mask on {dev.mask.device}"
            counts = dev.mask.sum(1).cpu()
            assert bool((counts == counts[0]).all()), f"row counts {counts.tolist()}"
            same = float((dev.mask.cpu() == cpu.mask).float().mean())
            if name == "difference":  # float scores (embedder, cosine): near-ties may flip
                assert same >= 0.95, f"GPU and CPU masks agree on {same:.1%} of tokens"
                return f"agreement {same:.2%} of tokens, {int(counts[0])} masked per row"
            assert torch.equal(dev.mask.cpu(), cpu.mask), f"GPU mask differs from the CPU mask ({same:.1%} agree)"
            return f"identical to the CPU mask, {int(counts[0])} masked per row"

        rep.run(f"masker {name} on {device}", one)

    def decoder() -> str:
        model = build_model("tiny", img_size=S, num_frames=T, decoder_mask_ratio=0.5, **(TINY if args.tiny else {}))
        grid = model.config.grid((T, S, S))
        mask = maskers["tube"].generate(batch, generator=torch.Generator().manual_seed(1)).mask
        cpu = model.make_decoder_mask(mask, grid, generator=torch.Generator().manual_seed(2))
        dev = model.make_decoder_mask(mask.to(device), grid, generator=torch.Generator().manual_seed(2))
        assert torch.equal(cpu, dev.cpu())
        return "decoder mask from a CPU generator identical on both devices"

    rep.run(f"decoder mask on {device}", decoder)


def check_resume_on_cpu(rep: Report, args: argparse.Namespace, device: torch.device, work: Path, videos: Path) -> None:
    from safetensors.torch import load_file

    from videomask.io import MODEL_FILE, load_model_weights, read_weights_metadata
    from videomask.model import VideoMAE, VideoMAEConfig
    from videomask.train import train

    precision = "bf16" if device.type == "cuda" else "fp32"

    def one() -> str:
        folder = work / "resume"
        first = train(run_config(folder, videos, args, train={"steps": 4, "save_every": 2, "precision": precision}))
        assert first.ok and first.last_checkpoint is not None
        saved = load_file(str(first.last_checkpoint / MODEL_FILE))
        cfg = run_config(
            folder,
            videos,
            args,
            run={"out_dir": str(folder / "run"), "seed": 0, "device": "cpu"},
            train={"steps": 6, "save_every": 2, "precision": "fp32", "resume": True},
        )
        again = train(cfg)
        assert again.ok and again.steps == 6, f"resumed run: {again.stopped}"
        # the GPU-written checkpoint reads back into a CPU model exactly
        import json

        meta = read_weights_metadata(first.last_checkpoint / MODEL_FILE)
        model = VideoMAE(VideoMAEConfig(**json.loads(meta["model_config"])))
        load_model_weights(model, first.last_checkpoint / MODEL_FILE)
        assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
        return f"{precision} run on {device} saved step {first.steps}; resumed on cpu (fp32) to step {again.steps}"

    rep.run(f"save on {device}, resume on cpu", one)


# ----------------------------------------------------------------------------- the timed step


def make_train_step(
    model: torch.nn.Module,
    masker: Any,
    device: torch.device,
    amp: torch.dtype | None,
    batch: dict,
    trusted: bool = True,
) -> Callable[[int], None]:
    """One training step as :func:`videomask.train.train` does it (masker with a CPU generator, autocast,
    fp32 loss, GradScaler for fp16, clipping, fused AdamW on CUDA); ``trusted``: pass the masker's count."""
    from videomask.train import fused_adamw_supported, grad_norm_, step_seed

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        model.param_groups(0.05), lr=1.5e-4, betas=(0.9, 0.95), fused=fused_adamw_supported(params) or None
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    video = batch["video"].to(device)

    def step(i: int) -> None:
        gen = torch.Generator().manual_seed(step_seed(0, i, 0, 0))
        with torch.no_grad():
            mres = masker.generate({**batch, "video": video}, generator=gen)
        kw = {"num_masked": masker.num_masked(model.grid_of(video))} if trusted else {}
        with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(video, mres.mask, None, **kw)
        scaler.scale(out.loss.float()).backward()
        if scaler.is_enabled():
            scaler.unscale_(opt)
        grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def count_syncs(rep: Report, device: torch.device, step: Callable[[int], None], label: str) -> None:
    if device.type != "cuda":
        return
    step(0)
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    where = sorted({str(w.message).splitlines()[0][:60] for w in caught})
    rep.say(f"INFO host syncs in one step ({label}): {len(caught)}" + (f" ({'; '.join(where)})" if where else ""))


def throughput(rep: Report, args: argparse.Namespace, device: torch.device) -> None:
    from videomask.model import build_model
    from videomask.train import resolve_precision

    T, S = (4, 32) if args.tiny else (16, 224)
    B = 2 if args.tiny else args.batch
    amp = resolve_precision("auto", device)
    torch.manual_seed(0)
    model = (
        (build_model("tiny", img_size=S, num_frames=T, **TINY) if args.tiny else build_model("base")).to(device).train()
    )
    maskers = build_every_masker(T, S, (2, 16, 16))
    batch = _masker_batch(B, T, S)
    results: dict[str, float] = {}
    for name in ("tube", "difference"):
        masker = maskers[name].to(device)
        step = make_train_step(model, masker, device, amp, batch)
        count_syncs(rep, device, step, f"{name}, mask counts from the masker")
        if name == "tube":
            count_syncs(
                rep,
                device,
                make_train_step(model, masker, device, amp, batch, trusted=False),
                f"{name}, model checks the mask counts",
            )
        for i in range(2):  # warm-up (kernels, allocator, autotuning)
            step(i)
        sync(device)
        rates = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(args.steps):
                step(100 + r * args.steps + i)
            sync(device)
            rates.append(B * args.steps / (time.perf_counter() - t0))
        results[name] = statistics.median(rates)
        label = "tiny 4x32x32" if args.tiny else "ViT-B 16x224"
        rep.say(
            f"TIME {label}, batch {B}, {str(amp).split('.')[-1] if amp else 'fp32'}, {name} masking: "
            f"{results[name]:.2f} clips/s (median of {args.repeats} x {args.steps} steps; "
            f"all {' '.join(f'{v:.2f}' for v in rates)})"
        )
    rep.say(f"TIME difference / tube clips/s ratio: {results['difference'] / results['tube']:.3f}")
    if device.type == "cuda":
        rep.say(f"INFO peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_smoke: CUDA is not available on this machine; run it on a GPU machine "
            "(or use --device cpu --tiny for a dry run of the same code)",
            file=sys.stderr,
        )
        return 2
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda:0")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    args.device = str(device)
    rep = Report()
    rep.say(
        f"INFO videomask gpu_smoke: torch {torch.__version__}, device {device}, "
        f"{'tiny dry run' if args.tiny else 'full'}; command: python benchmarks/gpu_smoke.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        videos = write_clips(work / "videos", 4, 12, 40, 56)
        check_precision_steps(rep, args, device, work, videos)
        check_masks(rep, args, device)
        check_resume_on_cpu(rep, args, device, work, videos)
        try:
            throughput(rep, args, device)
        except Exception as err:  # noqa: BLE001
            rep.check("throughput", False, f"{type(err).__name__}: {err}")
    rep.say(f"INFO {rep.failed} check(s) failed" if rep.failed else "INFO every check passed")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# GPU smoke test\n\n```\n" + "\n".join(rep.lines) + "\n```\n")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
