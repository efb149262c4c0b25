"""End-to-end pretraining throughput: ``videomask pretrain`` against the VideoMAE reference pipeline.

Both pipelines train the same model size (ViT-S 384 x 12, decoder 192 x 4) on the same clips (the 9 shipped
videos, assets/source and assets/target, one list file in the reference's ``path label`` format that both
read), 16 frames at stride 4, 112 px, 4 clips a step, DataLoader workers, tube masking 0.9, fp32 on the CPU.
Throughput is clips per second between the end of step ``first - 1`` and the end of step ``last`` (default
steps 6-45), so start-up, the first batches and warm-up are left out and everything else (waiting for data,
epoch ends, worker restarts) is in.

- **videomask**: ``videomask pretrain --config configs/pretrain_tiny.yaml`` with overrides (printed in the
  report), run through the CLI's own ``main`` in a fresh process; the only addition is a wrapper around
  ``videomask.train.loop.train_step`` that notes the time each step ends. ``data.num_sample`` 1 (4 videos a
  step) and 2 (2 videos x 2 clips, VideoMAE's repeated sampling).
- **reference**: the VideoMAE checkout named by ``--reference`` (github.com/MCG-NJU/VideoMAE), imported from
  there at run time (nothing of it is copied here): ``run_mae_pretraining.main(args)`` itself, with ``args``
  from its own parser given the ViT-S flags of its scripts/kinetics/..._small_.../pretrain.sh plus
  ``--input_size 112 --batch_size 4 --num_workers W --device cpu``; its dataset
  (``datasets.build_pretraining_dataset``: decord, numpy ``TubeMaskingGenerator`` in the workers, its
  transforms), its model (``pretrain_videomae_small_patch16_224``), its optimizer (``optim_factory``) and its
  step (``engine_for_pretraining.train_one_epoch``). What does not run with the installed libraries or on
  the CPU is patched in this process only (never in the checkout) and listed in the report; the step end
  is noted where the engine calls ``torch.cuda.synchronize`` (a no-op here). Run "as written" (a
  DataLoader without persistent workers: with 9 clips an epoch is 2 steps, so the workers restart every
  2 steps) and with ``persistent_workers=True``.

Also measured: each loader alone (the pipeline's DataLoader iterated, no model), each step alone on one
fixed batch (the model's forward + loss + backward + AdamW in a plain loop, and the library's own step:
videomask's ``train_step`` with a stream that returns the fixed batch, the reference's ``train_one_epoch``
over an epoch of 2 fixed batches), the CPU time of the main process and of the workers per step, page
faults and context switches, thread settings, and a profile of both pipelines (cProfile, then
torch.profiler, over a few steps). Every measurement runs in its own process; the pipelines run in
alternated order, one round per repeat, and medians are reported.

    python benchmarks/pipeline.py --reference /path/to/VideoMAE --quick          # a dry run (minutes)
    python benchmarks/pipeline.py --reference /path/to/VideoMAE --repeats 3 --out benchmarks/results/pipeline.md
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import math
import os
import platform
import pstats
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "pretrain_tiny.yaml"
CLIP_DIRS = (ROOT / "assets" / "source", ROOT / "assets" / "target")
CLIPS_PER_STEP = 4
FRAMES, RATE, SIZE, MASK_RATIO = 16, 4, 112, 0.9
REF_MODEL = "pretrain_videomae_small_patch16_224"
# the flags of the reference's ViT-S pretraining script (scripts/kinetics/videomae_vit_small_patch16_224_
# tubemasking_ratio_0.9_epoch_1600/pretrain.sh) without the output folders (no checkpoint, no TensorBoard)
REF_SCRIPT_FLAGS = [
    "--mask_type", "tube", "--mask_ratio", str(MASK_RATIO), "--model", REF_MODEL, "--decoder_depth", "4",
    "--num_frames", str(FRAMES), "--sampling_rate", str(RATE), "--opt", "adamw", "--opt_betas", "0.9", "0.95",
    "--warmup_epochs", "40", "--epochs", "1601",
]  # fmt: skip
# the reference's own modules this benchmark imports (and what they import from the checkout)
REF_MODULES = ("run_mae_pretraining", "datasets", "modeling_pretrain", "engine_for_pretraining", "optim_factory")
PIPELINES = ("videomask S=1", "videomask S=2", "reference persistent", "reference as written")
LOADERS = ("videomask loader", "reference loader persistent", "reference loader as written")
STEPS = ("reference model step", "videomask model step", "reference train_one_epoch", "videomask train_step")
DIAGNOSTIC = "videomask S=1, malloc thresholds 32/64 MiB"
STEP_PROCESSES = ("reference steps", "videomask steps")
STEPS_DIAGNOSTIC = "videomask steps, malloc thresholds 32/64 MiB"
# glibc's mmap and trim thresholds at the largest values its dynamic adjustment reaches on 64-bit (32 MiB and
# twice that), which a process that never sets them (the reference's) approaches after its first large frees;
# setting MALLOC_MMAP_THRESHOLD_ also makes videomask's prepare_process leave the threshold alone
MALLOC_DYNAMIC_MAX = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}


# ------------------------------------------------------------------------------------------------------
# measuring inside a child process
# ------------------------------------------------------------------------------------------------------


class StopRun(Exception):
    """Raised at the end of the last measured step: the run has given what is measured."""


def usage() -> dict[str, Any]:
    """CPU use so far: this process (all its threads) and its child processes (live and reaped)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    kids, threads = reaped.ru_utime + reaped.ru_stime, []
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                t = child.cpu_times()
                kids += t.user + t.system
                threads.append(child.num_threads())
            except psutil.Error:
                pass
    except ImportError:  # psutil is optional: then only reaped workers are counted
        pass
    return {
        "t": time.perf_counter(),
        "user": me.ru_utime,
        "sys": me.ru_stime,
        "minflt": me.ru_minflt,
        "majflt": me.ru_majflt,
        "nvcsw": me.ru_nvcsw,
        "nivcsw": me.ru_nivcsw,
        "kids_cpu": kids,
        "os_threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None,
        "worker_os_threads": threads,
        "loadavg": os.getloadavg()[0],
    }


class Recorder:
    """Notes the end of every step; snapshots CPU use at the window's edges; runs the profilers; stops the run."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.first, self.last = spec["first"], spec["last"]
        self.profile = spec.get("profile")  # {"start": step, "steps": n, "parts": "videomask"|"reference"} or None
        self.stamps: list[float] = []
        self.snaps: dict[str, dict[str, Any]] = {}
        self.result: dict[str, Any] = {}
        self._cprof: cProfile.Profile | None = None
        self._tprof: Any = None
        self.stop_after = self.last if not self.profile else self.profile["start"] + 2 * self.profile["steps"] - 1

    def step_done(self) -> None:
        self.stamps.append(time.perf_counter())
        k = len(self.stamps)  # steps done
        if k == self.first - 1:
            self.snaps["start"] = usage()
        if k == self.last:
            self.snaps["end"] = usage()
        if self.profile:
            self._profile_edge(k)
        if k >= self.stop_after:
            raise StopRun

    def _profile_edge(self, k: int) -> None:
        start, n = self.profile["start"], self.profile["steps"]
        if k == start - 1:
            self._cprof = cProfile.Profile()
            self._cprof.enable()
        elif k == start - 1 + n and self._cprof is not None:
            self._cprof.disable()
            self.result["cprofile"] = profile_summary(self._cprof, n, PARTS[self.profile["parts"]])
            import torch

            self._tprof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self._tprof.__enter__()
        elif k == start - 1 + 2 * n and self._tprof is not None:
            self._tprof.__exit__(None, None, None)
            table = self._tprof.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=48
            )
            self.result["torch_profile"] = table
            self.result["torch_profile_steps"] = n

    def summary(self, clips_per_step: int) -> dict[str, Any]:
        out = dict(self.result)
        out["stamps"] = self.stamps
        if "start" in self.snaps and "end" in self.snaps:
            out.update(window(self.snaps["start"], self.snaps["end"], self.last - self.first + 1, clips_per_step))
        return out


def window(a: dict[str, Any], b: dict[str, Any], steps: int, clips_per_step: int) -> dict[str, Any]:
    """Throughput and per-step CPU use between two :func:`usage` snapshots."""
    wall = b["t"] - a["t"]
    clips = steps * clips_per_step
    return {
        "steps": steps,
        "wall_s": wall,
        "clips_per_s": clips / wall,
        "main_user_per_step": (b["user"] - a["user"]) / steps,
        "main_sys_per_step": (b["sys"] - a["sys"]) / steps,
        "workers_cpu_per_clip": (b["kids_cpu"] - a["kids_cpu"]) / clips,
        "minflt_per_step": (b["minflt"] - a["minflt"]) / steps,
        "nivcsw_per_step": (b["nivcsw"] - a["nivcsw"]) / steps,
        "nvcsw_per_step": (b["nvcsw"] - a["nvcsw"]) / steps,
        "main_os_threads": b["os_threads"],
        "worker_os_threads": b["worker_os_threads"],
        "loadavg": [a["loadavg"], b["loadavg"]],
    }


# which profile entries make up a step: (label, regular expression on the file path, function name)
VM_PARTS = [
    ("batch wait (BatchStream.next)", r"train/parts\.py$", "next"),
    ("mask (Masker.generate)", r"masking/base\.py$", "generate"),
    ("forward (forward_model)", r"train/step\.py$", "forward_model"),
    ("backward (Tensor.backward)", r"torch/_tensor\.py$", "backward"),
    ("loss_split", r"train/step\.py$", "loss_split"),
    ("update (apply_update)", r"train/step\.py$", "apply_update"),
    ("  grad norm + clip (clip_grad_norm_)", r"nn/utils/clip_grad\.py$", "clip_grad_norm_"),
    ("  optimizer step (AdamW.step)", r"optim/adamw?\.py$", "step"),
    ("  zero_grad", r"optim/optimizer\.py$", "zero_grad"),
]
REF_PARTS = [
    ("batch wait (DataLoader __next__)", r"data/dataloader\.py$", "__next__"),
    ("forward (PretrainVisionTransformer.forward)", r"modeling_pretrain\.py$", "forward"),
    ("backward (Tensor.backward)", r"torch/_tensor\.py$", "backward"),
    ("update (NativeScaler __call__, incl. backward)", r"/utils\.py$", "__call__"),
    ("  grad norm (get_grad_norm_)", r"/utils\.py$", "get_grad_norm_"),
    ("  optimizer step (AdamW.step)", r"optim/adamw?\.py$", "step"),
    ("  zero_grad", r"optim/optimizer\.py$", "zero_grad"),
    (
        "Tensor.item() (loss, grad norm, AdamW's per-parameter step counts)",
        r"^~$",
        "<method 'item' of 'torch._C.TensorBase' objects>",
    ),
]
PARTS = {"videomask": VM_PARTS, "reference": REF_PARTS}


def profile_summary(prof: cProfile.Profile, steps: int, wanted: list[tuple[str, str, str]]) -> dict[str, Any]:
    """cProfile's top entries (per step) and the cumulative time of the functions that make up a step."""
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {"file": file, "line": line, "func": func, "ncalls": ncalls, "tottime": tottime, "cumtime": cumtime}
        )
    total = max((r["cumtime"] for r in rows), default=0.0)
    parts = {}
    for label, pattern, func in wanted:
        hits = [r for r in rows if r["func"] == func and re.search(pattern, r["file"].replace("\\", "/"))]
        if hits:
            best = max(hits, key=lambda r: r["cumtime"])
            parts[label] = {"cum_s_per_step": best["cumtime"] / steps, "calls_per_step": best["ncalls"] / steps}
    short = lambda r: f"{Path(r['file']).name}:{r['line']}({r['func']})" if r["file"] != "~" else r["func"]  # noqa: E731
    top_cum = sorted(rows, key=lambda r: -r["cumtime"])[:25]
    top_tot = sorted(rows, key=lambda r: -r["tottime"])[:15]
    return {
        "steps": steps,
        "total_s_per_step": total / steps,
        "parts": parts,
        "top_cumulative": [(short(r), r["ncalls"] / steps, r["cumtime"] / steps) for r in top_cum],
        "top_self": [(short(r), r["ncalls"] / steps, r["tottime"] / steps) for r in top_tot],
    }


def videomask_file() -> str:
    import videomask

    return str(Path(videomask.__file__).resolve().parent)


def set_threads(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    return {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
    }


def hook_worker_threads(cls: type, folder: str) -> None:
    """Note, once per process, the thread settings of the process that loads the items (a DataLoader worker)."""
    import torch

    original = cls.__getitem__
    seen: set[int] = set()

    def getitem(self: Any, index: int) -> Any:
        item = original(self, index)
        pid = os.getpid()
        if pid not in seen:
            seen.add(pid)
            worker = torch.utils.data.get_worker_info()
            record = {
                "pid": pid,
                "worker": None if worker is None else worker.id,
                "torch_threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "os_threads_after_item": len(os.listdir("/proc/self/task")),
            }
            Path(folder, f"worker-{pid}.json").write_text(json.dumps(record))
        return item

    cls.__getitem__ = getitem


def worker_records(folder: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("worker-*.json"))]


def sample_threads(stop: Any, peak: dict[int, int]) -> None:
    """Until ``stop`` is set: the most OS threads each child process had (sampled every 20 ms)."""
    try:
        import psutil
    except ImportError:
        return
    me = psutil.Process()
    while not stop.wait(0.02):
        for child in me.children(recursive=True):
            try:
                peak[child.pid] = max(peak.get(child.pid, 0), child.num_threads())
            except psutil.Error:
                pass


# ------------------------------------------------------------------------------------------------------
# the reference, from its checkout
# ------------------------------------------------------------------------------------------------------

# values for names the reference imports that the installed libraries no longer have (others become None)
KNOWN_SHIMS = {("torch._six", "inf"): math.inf}


def load_reference(checkout: str, patches: list[str]) -> dict[str, types.ModuleType]:
    """Import the reference's modules from ``checkout``; a module or name its imports need that the installed
    libraries lack is put in place (None, or the value of :data:`KNOWN_SHIMS`) and listed in ``patches``."""
    import importlib

    here = str(Path(__file__).resolve().parent)  # benchmarks/ has a transforms.py of its own
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, checkout)
    local = {p.stem for p in Path(checkout).glob("*.py")}
    for _ in range(50):
        try:
            return {name: importlib.import_module(name) for name in REF_MODULES}
        except ImportError as err:
            for name in [m for m in sys.modules if m.split(".")[0] in local]:
                del sys.modules[name]  # half-imported reference modules: imported again with the shim
            cannot = re.match(r"cannot import name '(\w+)' from '([\w.]+)'", str(err))
            if cannot and cannot.group(2) in sys.modules:
                name, module = cannot.groups()
                value = KNOWN_SHIMS.get((module, name))
                setattr(sys.modules[module], name, value)
                use = "used by its get_grad_norm_" if value is not None else "unused on this path"
                patches.append(f"`{module}.{name}` is gone from the installed library: set to `{value!r}` ({use})")
            elif isinstance(err, ModuleNotFoundError) and err.name and err.name.split(".")[0] not in local:
                stub = types.ModuleType(err.name)
                stub.__file__ = "<stub: videomask benchmarks/pipeline.py>"
                sys.modules[err.name] = stub
                parent, _, child = err.name.rpartition(".")
                if parent in sys.modules:
                    setattr(sys.modules[parent], child, stub)
                patches.append(f"module `{err.name}` is not installed: an empty stand-in module")
            else:
                raise
    raise RuntimeError("the reference's imports did not settle")


def patch_reference(ref: dict[str, types.ModuleType], spec: dict[str, Any], patches: list[str], rec: Any) -> None:
    """Run-time patches so the reference's own code runs here, each listed in ``patches`` when it is applied."""
    import torch

    rmp, modeling, utils = ref["run_mae_pretraining"], ref["modeling_pretrain"], sys.modules["utils"]
    size = spec["size"]

    # the registered ViT-S builds at 224 px; the same builder at the run's clip size
    original_vit = modeling.PretrainVisionTransformer

    def at_input_size(*args: Any, **kwargs: Any) -> Any:
        kwargs["img_size"] = size
        return original_vit(*args, **kwargs)

    modeling.PretrainVisionTransformer = at_input_size
    patches.append(
        f"`modeling_pretrain.PretrainVisionTransformer` called with `img_size={size}` (the registered "
        f"`{REF_MODEL}` hard-codes 224 and takes no `img_size`)"
    )

    # timm >= 0.9's create_model passes pretrained_cfg / cache_dir, which the reference's constructor refuses
    original_create = rmp.create_model

    def create_model(name: str, **kwargs: Any) -> Any:
        try:
            return original_create(name, **kwargs)
        except TypeError as err:
            from timm.models import model_entrypoint

            patches.append(
                f"`timm.create_model` ({err}): the registered entry point `{name}` called directly with the "
                "keyword arguments that are not None, as timm 0.4's create_model did"
            )
            return model_entrypoint(name)(**{k: v for k, v in kwargs.items() if v is not None})

    rmp.create_model = create_model

    # a GradScaler on a machine without CUDA is disabled and its state_dict is empty; the engine reads "scale"
    scaler_cls = utils.NativeScalerWithGradNormCount
    original_state = scaler_cls.state_dict

    def state_dict(self: Any) -> dict[str, Any]:
        state = original_state(self)
        if "scale" not in state:
            if not any("state_dict" in p for p in patches):
                patches.append(
                    "`utils.NativeScalerWithGradNormCount.state_dict`: the disabled GradScaler's empty state "
                    'gets `{"scale": 1.0}` (the engine logs it every step)'
                )
            state = {**state, "scale": 1.0}
        return state

    scaler_cls.state_dict = state_dict

    if not torch.cuda.is_available():
        patches.append(
            "`torch.cuda.synchronize` (called by the engine after each step): no CUDA, so no-op + step timer"
        )
        torch.cuda.synchronize = lambda *a, **k: rec()
    else:  # pragma: no cover - the benchmark runs the reference on the CPU, but keep the timer on a GPU machine
        sync = torch.cuda.synchronize
        torch.cuda.synchronize = lambda *a, **k: (sync(*a, **k), rec())

    if spec.get("persistent"):
        loader_cls = torch.utils.data.DataLoader

        class PersistentLoader(loader_cls):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("persistent_workers", kwargs.get("num_workers", 0) > 0)
                super().__init__(*args, **kwargs)

        torch.utils.data.DataLoader = PersistentLoader
        patches.append("`torch.utils.data.DataLoader`: `persistent_workers=True` (the variant, not a fix)")


def reference_args(ref: dict[str, types.ModuleType], spec: dict[str, Any]) -> argparse.Namespace:
    """``args`` from the reference's own parser (run_mae_pretraining.get_args) and the ViT-S script's flags."""
    argv = ["run_mae_pretraining.py", "--data_path", spec["list"], *REF_SCRIPT_FLAGS]
    argv += ["--input_size", str(spec["size"]), "--batch_size", str(CLIPS_PER_STEP)]
    argv += ["--num_workers", str(spec["workers"]), "--device", "cpu"]
    saved = sys.argv
    sys.argv = argv
    try:
        args = ref["run_mae_pretraining"].get_args()
    finally:
        sys.argv = saved
    args.argv = argv[1:]
    return args


def clean_env_for_reference() -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):  # its init_distributed_mode reads these
        os.environ.pop(key, None)


# ------------------------------------------------------------------------------------------------------
# videomask
# ------------------------------------------------------------------------------------------------------


def videomask_overrides(spec: dict[str, Any], num_sample: int, workers: int) -> list[str]:
    """``videomask pretrain --config configs/pretrain_tiny.yaml`` overrides for the measured run."""
    return [
        f"run.out_dir={spec['out_dir']}",
        "run.device=cpu",
        "model.name=small",
        f"data.path={spec['list']}",
        f"data.num_frames={FRAMES}",
        f"data.sampling_rate={RATE}",
        f"data.size={spec['size']}",
        f"data.num_sample={num_sample}",
        f"data.batch_size={CLIPS_PER_STEP // num_sample}",
        f"data.num_workers={workers}",
        "mask.name=tube",
        f"mask.ratio={MASK_RATIO}",
        "train.precision=fp32",
        f"train.steps={spec['last'] + 100}",  # never reached: the run stops after the last measured step
        "train.save_every=0",  # no checkpoint inside the window (the reference writes none either)
        "train.tensorboard=false",  # off in both (the reference's tensorboardX is not installed here)
        "train.progress=false",
        *spec.get("overrides", []),  # a --variant's config overrides
    ]


class FixedStream:
    """A batch stream that gives the same batch every time (the step alone, without the loader)."""

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch, self.epoch, self.consumed = batch, 0, 0

    def next(self) -> dict[str, Any]:
        self.consumed += 1
        return self.batch

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------------
# the children: one measurement each
# ------------------------------------------------------------------------------------------------------


def child_videomask_pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    threads = set_threads(spec)
    import videomask.train.loop as loop
    from videomask import cli

    rec = Recorder(spec)
    original = loop.train_step

    def timed_step(*args: Any, **kwargs: Any) -> Any:
        stats = original(*args, **kwargs)
        rec.step_done()
        return stats

    loop.train_step = timed_step
    command = [
        "pretrain",
        "--config",
        str(TINY_CONFIG),
        *videomask_overrides(spec, spec["num_sample"], spec["workers"]),
    ]
    try:
        rc = cli.main(command)
        raise RuntimeError(f"videomask pretrain ended (exit status {rc}) before the last measured step")
    except StopRun:
        pass
    return {
        "threads": threads,
        "command": "videomask " + " ".join(command),
        "videomask_file": videomask_file(),
        **rec.summary(CLIPS_PER_STEP),
    }


def child_reference_pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    threads = set_threads(spec)
    clean_env_for_reference()
    patches: list[str] = []
    ref = load_reference(spec["reference"], patches)
    rec = Recorder(spec)
    patch_reference(ref, spec, patches, rec.step_done)
    args = reference_args(ref, spec)
    try:
        ref["run_mae_pretraining"].main(args)
        raise RuntimeError("the reference's main() ended before the last measured step")
    except StopRun:
        pass
    return {"threads": threads, "patches": patches, "argv": args.argv, **rec.summary(CLIPS_PER_STEP)}


def timed_batches(next_batch: Callable[[], Any], spec: dict[str, Any], folder: str) -> dict[str, Any]:
    """Iterate a loader for the window's steps; CPU use, worker thread settings and peak OS threads."""
    import threading

    stop, peak = threading.Event(), {}
    sampler = threading.Thread(target=sample_threads, args=(stop, peak), daemon=True)
    sampler.start()
    rec = Recorder({"first": spec["first"], "last": spec["last"]})
    try:
        while True:
            next_batch()
            rec.step_done()
    except StopRun:
        pass
    finally:
        stop.set()
        sampler.join()
    out = rec.summary(CLIPS_PER_STEP)
    out["workers"] = worker_records(folder)
    out["worker_os_threads_peak"] = sorted(peak.values())
    return out


def child_videomask_loader(spec: dict[str, Any]) -> dict[str, Any]:
    threads = set_threads(spec)
    from videomask.config import load_config
    from videomask.data import VideoDataset
    from videomask.data.process import prepare_process
    from videomask.train.distributed import setup_distributed
    from videomask.train.parts import build_parts

    prepare_process()  # what the CLI does before a command
    hook_worker_threads(VideoDataset, spec["out_dir"])
    cfg = load_config(TINY_CONFIG, videomask_overrides(spec, 1, spec["workers"]))
    info, device = setup_distributed(cfg.run.device)
    parts = build_parts(cfg, info, device)
    try:
        out = timed_batches(parts.stream.next, spec, spec["out_dir"])
    finally:
        parts.stream.close()
    return {"threads": threads, **out}


def child_reference_loader(spec: dict[str, Any]) -> dict[str, Any]:
    """The reference's DataLoader built as its main() builds it (the lines are written here: main() would
    also build and train the model)."""
    threads = set_threads(spec)
    clean_env_for_reference()
    patches: list[str] = []
    ref = load_reference(spec["reference"], patches)
    import torch

    args = reference_args(ref, spec)
    hook_worker_threads(sys.modules["kinetics"].VideoMAE, spec["out_dir"])
    torch.manual_seed(args.seed)
    import numpy as np

    np.random.seed(args.seed)
    patch = 16  # model.encoder.patch_embed.patch_size of the ViT-S
    args.window_size = (args.num_frames // 2, args.input_size // patch, args.input_size // patch)
    args.patch_size = (patch, patch)
    dataset = ref["datasets"].build_pretraining_dataset(args)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True)
    loader = torch.utils.data.DataLoader(
        dataset,
        sampler=sampler,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=args.pin_mem,
        drop_last=True,
        worker_init_fn=sys.modules["utils"].seed_worker,
        persistent_workers=bool(spec.get("persistent")),
    )
    state: dict[str, Any] = {"it": iter(loader)}

    def next_batch() -> Any:
        while True:
            try:
                return next(state["it"])
            except StopIteration:  # the next epoch, as main()'s epoch loop starts it
                state["it"] = iter(loader)

    out = timed_batches(next_batch, spec, spec["out_dir"])
    return {"threads": threads, "patches": patches, **out}


def time_interleaved(variants: dict[str, tuple[Callable[[], None], int]], spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``{name: (fn, steps per call)}`` round by round (order rotated); wall, CPU, sys time and minor
    page faults per step of the timed rounds."""
    import resource

    names = list(variants)
    out: dict[str, dict[str, list[float]]] = {k: {n: [] for n in names} for k in ("wall", "cpu", "sys", "minflt")}
    for r in range(spec["warmup_rounds"] + spec["rounds"]):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, steps = variants[name]
            u0 = resource.getrusage(resource.RUSAGE_SELF)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            t1, c1, u1 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
            if r >= spec["warmup_rounds"]:
                out["wall"][name].append((t1 - t0) / steps)
                out["cpu"][name].append((c1 - c0) / steps)
                out["sys"][name].append((u1.ru_stime - u0.ru_stime) / steps)
                out["minflt"][name].append((u1.ru_minflt - u0.ru_minflt) / steps)
    return out


def child_reference_steps(spec: dict[str, Any]) -> dict[str, Any]:
    """The reference's steps alone on one fixed batch: its model in a plain loop, and its train_one_epoch."""
    threads = set_threads(spec)
    clean_env_for_reference()
    patches: list[str] = []
    ref = load_reference(spec["reference"], patches)
    import numpy as np
    import torch
    import torch.nn.functional as F

    ref_spec = {**spec, "workers": 0, "persistent": False}
    patch_reference(ref, ref_spec, patches, lambda: None)
    args = reference_args(ref, ref_spec)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rmp, utils = ref["run_mae_pretraining"], sys.modules["utils"]
    model = rmp.get_model(args).to("cpu")
    patch = model.encoder.patch_embed.patch_size
    args.window_size = (args.num_frames // 2, args.input_size // patch[0], args.input_size // patch[1])
    args.patch_size = patch
    dataset = ref["datasets"].build_pretraining_dataset(args)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, drop_last=True)))
    args.lr = args.lr * args.batch_size / 256  # as main() scales them
    args.min_lr = args.min_lr * args.batch_size / 256
    args.warmup_lr = args.warmup_lr * args.batch_size / 256
    opt = ref["optim_factory"].create_optimizer(args, model)
    scaler = utils.NativeScalerWithGradNormCount()
    lrs = utils.cosine_scheduler(args.lr, args.min_lr, args.epochs, 2, warmup_epochs=args.warmup_epochs)
    wds = utils.cosine_scheduler(args.weight_decay, args.weight_decay, args.epochs, 2)
    videos, masks = batch
    bool_mask = masks.flatten(1).to(torch.bool)
    target = torch.randn(videos.shape[0], int(bool_mask[0].sum()), model.decoder.num_classes)

    def model_step() -> None:
        opt.zero_grad()
        F.mse_loss(model(videos, bool_mask), target).backward()
        opt.step()

    epoch = {"n": 0}

    def engine_steps() -> None:  # one epoch of 2 steps, as the pipeline's epochs are
        e = epoch["n"] = epoch["n"] + 1
        ref["engine_for_pretraining"].train_one_epoch(
            model, [batch, batch], opt, torch.device("cpu"), e, scaler, args.clip_grad,
            start_steps=(2 * e) % (len(lrs) - 2), lr_schedule_values=lrs, wd_schedule_values=wds,
            patch_size=patch[0], normlize_target=args.normlize_target,
        )  # fmt: skip

    timed = time_interleaved({STEPS[0]: (model_step, 1), STEPS[2]: (engine_steps, 2)}, spec)
    return {
        "threads": threads,
        "patches": patches,
        **timed,
        "params": sum(p.numel() for p in model.parameters()),
        "masked": int(bool_mask[0].sum()),
        "tokens": int(bool_mask.shape[1]),
        "optimizer": f"{type(opt).__name__}(foreach={opt.defaults.get('foreach')}, fused={opt.defaults.get('fused')})",
    }


def child_videomask_steps(spec: dict[str, Any]) -> dict[str, Any]:
    """videomask's steps alone on one fixed batch: its model in a plain loop, and its train_step. The process
    is set up as the CLI sets up a ``videomask pretrain`` process (prepare_process), and its batch is decoded
    in DataLoader workers, as in training, so this process's allocator settings are the training process's."""
    threads = set_threads(spec)
    from videomask.data.process import prepare_process

    prepare_process()
    import torch

    from videomask.config import load_config
    from videomask.train.distributed import setup_distributed
    from videomask.train.parts import build_parts
    from videomask.train.step import train_step

    cfg = load_config(TINY_CONFIG, videomask_overrides(spec, 1, max(1, spec["workers"])))
    info, device = setup_distributed(cfg.run.device)
    parts = build_parts(cfg, info, device)
    batch = parts.stream.next()
    parts.stream.close()
    parts.stream = FixedStream(batch)  # type: ignore[assignment]
    model, opt = parts.model, parts.optimizer
    video = batch["video"]
    mask = parts.masker.generate(batch, generator=torch.Generator().manual_seed(0)).mask

    def model_step() -> None:
        opt.zero_grad(set_to_none=True)
        model(video, mask).loss.backward()
        opt.step()

    step = {"n": 0}

    def library_steps() -> None:  # two steps, as the reference's epoch of two
        for _ in range(2):
            step["n"] += 1
            train_step(parts, model, step["n"], cfg, info, check=False)

    timed = time_interleaved({STEPS[1]: (model_step, 1), STEPS[3]: (library_steps, 2)}, spec)
    return {
        "threads": threads,
        "videomask_file": videomask_file(),
        **timed,
        "params": sum(p.numel() for p in model.parameters()),
        "masked": int(mask[0].sum()),
        "tokens": int(mask.shape[1]),
        "optimizer": f"{type(opt).__name__}(foreach={opt.defaults.get('foreach')}, fused={opt.defaults.get('fused')})",
        "clip_grad": cfg.train.clip_grad,
    }


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "videomask-pipeline": child_videomask_pipeline,
    "reference-pipeline": child_reference_pipeline,
    "videomask-loader": child_videomask_loader,
    "reference-loader": child_reference_loader,
    "reference-steps": child_reference_steps,
    "videomask-steps": child_videomask_steps,
}


def child_main(kind: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    os.chdir(spec["out_dir"])  # the reference looks for checkpoints to resume in its (empty) output folder
    result = CHILDREN[kind](spec)
    result["pid"] = os.getpid()
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------------------
# the orchestrator
# ------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, type=Path, help="a checkout of github.com/MCG-NJU/VideoMAE")
    p.add_argument("--steps", default="6-45", help="measured steps FIRST-LAST, 1-based (default 6-45)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; each runs every pipeline once (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each main process (default: torch's)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--size", type=int, default=SIZE, help="clip height = width (default 112)")
    p.add_argument("--step-rounds", type=int, default=8, help="timed rounds of the steps alone per repeat")
    p.add_argument("--profile-steps", type=int, default=5, help="steps under cProfile, then under torch.profiler")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument(
        "--diagnose",
        action="store_true",
        help=f"also run '{DIAGNOSTIC}' and '{STEPS_DIAGNOSTIC}': glibc's mmap / trim thresholds fixed at their "
        "dynamic maximum (environment variables), to see the allocator's share of the step",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'LABEL|ENV=V;ENV=V|key=value key=value'",
        help="also run 'videomask S=1' with these environment variables and/or config overrides in every round "
        "(repeatable), e.g. 'OMP passive|OMP_WAIT_POLICY=PASSIVE' or '1 main thread|OMP_NUM_THREADS=1'",
    )
    p.add_argument("--quick", action="store_true", help="a dry run: steps 2-4, 1 repeat, 2 step rounds, 2 profiled")
    p.add_argument("--out", type=Path, default=None, help="write the markdown report here (and .json beside it)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary folder (logs of every process)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.step_rounds, args.profile_steps = "2-4", 1, 2, 2
    m = re.fullmatch(r"(\d+)-(\d+)", args.steps)
    if not m or not 2 <= int(m.group(1)) <= int(m.group(2)):
        p.error("--steps FIRST-LAST with 2 <= FIRST <= LAST (the window starts at the end of step FIRST-1)")
    args.first, args.last = int(m.group(1)), int(m.group(2))
    missing = [name for name in REF_MODULES if not (args.reference / f"{name}.py").is_file()]
    if missing:
        p.error(f"--reference {args.reference}: no {', '.join(m + '.py' for m in missing)} (a VideoMAE checkout?)")
    args.reference = args.reference.resolve()
    args.variants = [parse_variant(p, text) for text in args.variant]
    return args


def parse_variant(p: argparse.ArgumentParser, text: str) -> tuple[str, dict[str, str], list[str]]:
    """``LABEL|ENV=V;ENV=V|key=value ...`` -> (label, environment, config overrides)."""
    label, env, overrides = ([*text.split("|"), "", ""])[:3]
    pairs = [kv for kv in env.split(";") if kv.strip()]
    if not label.strip() or any("=" not in kv for kv in pairs) or any("=" not in o for o in overrides.split()):
        p.error(f"--variant {text!r}: expected 'LABEL|ENV=V;ENV=V|key=value key=value'")
    return label.strip(), dict(kv.strip().split("=", 1) for kv in pairs), overrides.split()


class Runner:
    """Runs the children, one process each, and keeps their results."""

    def __init__(self, args: argparse.Namespace, work: Path, clip_list: Path) -> None:
        self.args, self.work, self.list = args, work, clip_list
        self.count = 0

    def run(self, kind: str, label: str, extra: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
        self.count += 1
        folder = self.work / f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}"
        folder.mkdir()
        spec = {
            "reference": str(self.args.reference),
            "list": str(self.list),
            "size": self.args.size,
            "workers": self.args.workers,
            "threads": self.args.threads,
            "first": self.args.first,
            "last": self.args.last,
            "out_dir": str(folder),
            "result": str(folder / "result.json"),
            **extra,
        }
        (folder / "spec.json").write_text(json.dumps(spec))
        log = folder / "log.txt"
        t0 = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {label} ...", end=" ", flush=True)
        with open(log, "w") as fh:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(folder / "spec.json")],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=folder,
            )
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-40:]
            raise SystemExit(f"\n{label} failed (exit status {proc.returncode}); {log}:\n" + "\n".join(tail))
        result = json.loads((folder / "result.json").read_text())
        result.update(label=label, kind=kind, process_s=took, log=str(log))
        rate = result.get("clips_per_s")
        print(f"{took:.0f} s" + (f", {rate:.2f} clips/s" if rate else ""), flush=True)
        return result


def write_clip_list(folder: Path) -> tuple[Path, list[Path]]:
    """The reference's list format (its datasets.py and DATASET.md): one ``path label`` line per video."""
    clips = sorted(p for d in CLIP_DIRS for p in d.glob("*.mp4"))
    path = folder / "train.csv"
    path.write_text("".join(f"{p} 0\n" for p in clips))
    return path, clips


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "timm", "numpy", "av", "decord", "PIL", "psutil"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "?"))
        except ImportError:
            out[name] = "not installed"
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def videomask_tree() -> str:
    """The commit of this checkout and whether videomask/ differs from it (read-only git calls)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "videomask"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown (not a git work tree)"
    changed = [line[3:] for line in dirty.stdout.splitlines()]
    return head.stdout.strip() + (f" with uncommitted changes in {', '.join(changed)}" if changed else "")


def reference_commit(checkout: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else "unknown (not a git work tree)"
    except OSError:
        return "unknown"


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["label"], []).append(r)
    table = {}
    for label, runs in by.items():
        if "clips_per_s" not in runs[0]:
            continue
        keys = [k for k in runs[0] if k.endswith(("_per_step", "_per_clip"))]
        table[label] = {
            "runs": [r["clips_per_s"] for r in runs],
            "clips_per_s": med([r["clips_per_s"] for r in runs]),
            **{k: med([r[k] for r in runs]) for k in keys},
            "loadavg": [x for r in runs for x in r["loadavg"]],
        }
    ratios = {}
    pairs = [
        ("videomask S=1 / reference persistent", "videomask S=1", "reference persistent"),
        ("videomask S=2 / reference persistent", "videomask S=2", "reference persistent"),
        ("videomask S=1 / reference as written", "videomask S=1", "reference as written"),
        ("videomask S=2 / videomask S=1", "videomask S=2", "videomask S=1"),
        (f"{DIAGNOSTIC} / videomask S=1", DIAGNOSTIC, "videomask S=1"),
    ]
    for label, _, _ in args.variants:
        pairs.append((f"{variant_label(label)} / videomask S=1", variant_label(label), "videomask S=1"))
        pairs.append((f"{variant_label(label)} / reference persistent", variant_label(label), "reference persistent"))
    for name, a, b in pairs:
        if a in table and b in table:
            rounds = [x / y for x, y in zip(table[a]["runs"], table[b]["runs"])]  # same round: side by side
            ratios[name] = {"of_medians": table[a]["clips_per_s"] / table[b]["clips_per_s"], "per_round": rounds}
    steps: dict[str, dict[str, Any]] = {}  # "process / step" -> medians over the rounds
    for label in [*STEP_PROCESSES, STEPS_DIAGNOSTIC]:
        step_runs = [r for r in results if r["label"] == label]
        for name in step_runs[0]["wall"] if step_runs else []:
            walls = [med(r["wall"][name]) for r in step_runs]
            steps[f"{label} / {name}"] = {
                "process": label,
                "step": name,
                "wall_s": med(walls),
                "cpu_s": med([med(r["cpu"][name]) for r in step_runs]),
                "sys_s": med([med(r["sys"][name]) for r in step_runs]),
                "minflt": med([med(r["minflt"][name]) for r in step_runs]),
                "runs_wall_s": walls,
            }
    return {"pipelines": table, "ratios": ratios, "steps": steps}


def variant_label(label: str) -> str:
    return f"videomask S=1, {label}"


def malloc_env(threads: dict[str, Any]) -> str:
    env = [f"{k}={threads[k]}" for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if threads.get(k)]
    return f"; {' '.join(env)}" if env else ""


def spread(rows: list[dict[str, Any]], key: str) -> str:
    values = sorted({row[key] for row in rows})
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def ceiling_section(table: dict[str, Any], labels: list[str], steps: dict[str, Any], cores: int | None) -> list[str]:
    """What the CPU time each pipeline spends per clip allows on this machine's cores.

    A pipeline that keeps every core busy delivers ``cores / (CPU s per clip)`` clips/s, its *ceiling*; on a
    machine whose cores are all busy the ratio of two pipelines' ceilings is the ratio of their throughputs,
    whatever threads, scheduling or overlap each uses. The best videomask could do with the work it does
    today: its model step alone (steps table, no loader, no per-step extras) plus its workers' decoding.
    """
    ref = table.get("reference persistent")
    if not cores or not ref:
        return []
    clips = CLIPS_PER_STEP

    def per_clip(t: dict[str, Any]) -> float:
        return (t["main_user_per_step"] + t["main_sys_per_step"]) / clips + t["workers_cpu_per_clip"]

    ref_cpu = per_clip(ref)
    lines = [
        "",
        f"## Ceilings: what the CPU time per clip allows on {cores} cores",
        "",
        f"CPU s per clip = main process CPU per step / {clips} + workers' CPU per clip; ceiling = {cores} cores / "
        "CPU s per clip (every core busy, nothing idle). With every core busy the ratio of the ceilings is the "
        "ratio of the throughputs, so it bounds what thread or scheduling settings can change.",
        "",
        "| pipeline | CPU s/clip | ceiling clips/s | measured / ceiling | ceiling / reference persistent measured |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        t = table.get(label)
        if not t:
            continue
        cpu = per_clip(t)
        lines.append(
            f"| {label} | {cpu:.4f} | {cores / cpu:.2f} | {t['clips_per_s'] * cpu / cores:.2f} "
            f"| {cores / cpu / ref['clips_per_s']:.3f} |"
        )
    model = steps.get(f"{STEP_PROCESSES[1]} / {STEPS[1]}")
    vm = table.get("videomask S=1")
    if model and vm:
        best = model["cpu_s"] / clips + vm["workers_cpu_per_clip"]
        lines += [
            "",
            f"videomask's model step alone takes {1000 * model['cpu_s']:.0f} CPU ms per {clips} clips; with its "
            f"workers' {1000 * vm['workers_cpu_per_clip']:.1f} ms per clip that is {best:.4f} CPU s per clip, a "
            f"ceiling of {cores / best:.2f} clips/s = **{cores / best / ref['clips_per_s']:.3f}x** the reference "
            f"persistent's measured throughput ({ref_cpu:.4f} CPU s per clip): no setting around the step gets "
            "past it without making the model step itself cheaper.",
        ]
    return lines


def report(
    meta: dict[str, Any], results: list[dict[str, Any]], summary: dict[str, Any], args: argparse.Namespace
) -> str:
    first, last = args.first, args.last
    table, ratios, steps = summary["pipelines"], summary["ratios"], summary["steps"]
    by_label = {}
    for r in results:
        by_label.setdefault(r["label"], r)
    lines = [
        "# End-to-end pretraining throughput: videomask vs the VideoMAE reference pipeline",
        "",
        f"`{meta['command']}`",
        "",
        f"- date: {meta['date']}; took {meta['took_min']:.1f} min",
        f"- machine: {meta['nproc']} CPUs (nproc), {meta['cpu']}; load average {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- videomask: imported from {meta.get('videomask_imported', '?')}; commit {meta.get('videomask_tree', '?')}",
        f"- reference: {meta['reference']} (commit {meta['reference_commit']})",
        f"- clips: {meta['clips']} videos ({', '.join(meta['clip_names'])}), list file `train.csv` in the reference's "
        "`path label` format, read by both",
        f"- run: ViT-S (384 x 12, decoder 192 x 4), {FRAMES} frames at stride {RATE}, {args.size} px, "
        f"{CLIPS_PER_STEP} clips a step, {args.workers} DataLoader workers, tube masking {MASK_RATIO}, fp32, CPU; "
        f"clips/s over steps {first}-{last} (from the end of step {first - 1} to the end of step {last}); "
        f"{args.repeats} round(s), pipelines in alternated order",
        f"- torch threads in each main process: {meta['main_threads']}",
        "",
        "## Pipelines",
        "",
        "| pipeline | clips/s (median) | runs | vs reference persistent | vs reference as written "
        "| main CPU s/step (user + sys) | of it sys | workers CPU s/clip | main minor faults/step "
        "| involuntary ctx switches/step | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref_p = table.get("reference persistent", {}).get("clips_per_s")
    ref_w = table.get("reference as written", {}).get("clips_per_s")
    variants = [variant_label(label) for label, _, _ in args.variants]
    for label in [*PIPELINES, DIAGNOSTIC, *variants]:
        t = table.get(label)
        if not t:
            continue
        runs = ", ".join(f"{x:.2f}" for x in t["runs"])
        load = f"{min(t['loadavg']):.1f}-{max(t['loadavg']):.1f}"
        lines.append(
            f"| {label} | **{t['clips_per_s']:.2f}** | {runs} "
            f"| {fmt(t['clips_per_s'] / ref_p if ref_p else None, '.3f')} "
            f"| {fmt(t['clips_per_s'] / ref_w if ref_w else None, '.3f')} "
            f"| {t['main_user_per_step'] + t['main_sys_per_step']:.3f} | {t['main_sys_per_step']:.3f} "
            f"| {t['workers_cpu_per_clip']:.3f} | {t['minflt_per_step']:.0f} | {t['nivcsw_per_step']:.0f} | {load} |"
        )
    if DIAGNOSTIC in table:
        lines += [
            "",
            f"`{DIAGNOSTIC}`: `videomask S=1` with `MALLOC_MMAP_THRESHOLD_=32MiB MALLOC_TRIM_THRESHOLD_=64MiB` in its "
            "environment: glibc's thresholds fixed at the largest values its dynamic adjustment reaches, in the main "
            "process and the workers (videomask then never pins the mmap threshold). A diagnostic of the allocator's "
            "share of the step, not a setting videomask uses.",
        ]
    for label, env, overrides in args.variants:
        what = " ".join([*(f"{k}={v}" for k, v in env.items()), *overrides])
        lines += ["", f"`{variant_label(label)}`: `videomask S=1` with `{what}` (a --variant of this run)."]
    lines += ["", "Ratios (videomask / reference; per round: the two runs of one round, side by side):", ""]
    for name, r in ratios.items():
        rounds = ", ".join(f"{x:.3f}" for x in r["per_round"])
        lines.append(f"- {name}: **{r['of_medians']:.3f}** (ratio of medians; per round {rounds})")

    lines += ceiling_section(table, [*PIPELINES, DIAGNOSTIC, *variants], summary["steps"], meta["nproc"])
    lines += [
        "",
        "## Loaders alone (the pipeline's DataLoader iterated, no model)",
        "",
        "| loader | clips/s (median) | runs | x the pipeline's consumption | workers CPU s/clip "
        "| worker torch threads | worker OS threads (peak) |",
        "|---|---|---|---|---|---|---|",
    ]
    consumption = {
        "videomask loader": table.get("videomask S=1", {}).get("clips_per_s"),
        "reference loader persistent": ref_p,
        "reference loader as written": ref_w,
    }
    for label in LOADERS:
        t, r = table.get(label), by_label.get(label)
        if not t:
            continue
        torch_threads = sorted({w["torch_threads"] for w in r.get("workers", [])})
        peak = r.get("worker_os_threads_peak") or []
        eat = consumption.get(label)
        lines.append(
            f"| {label} | {t['clips_per_s']:.2f} | {', '.join(f'{x:.2f}' for x in t['runs'])} "
            f"| {fmt(t['clips_per_s'] / eat if eat else None, '.1f')} | {t['workers_cpu_per_clip']:.3f} "
            f"| {', '.join(map(str, torch_threads)) or '-'} | {max(peak) if peak else '-'} |"
        )

    if steps:
        rs = by_label.get(STEP_PROCESSES[0], {})
        vs = by_label.get(STEP_PROCESSES[1], {})
        lines += [
            "",
            "## Steps alone (one fixed batch of 4 clips, no loader)",
            "",
            f"One process per library and round, the two in alternated order; in each, its model step and its "
            f"library step interleaved ({args.step_rounds} timed rounds after the warm-up). Parameters: reference "
            f"{fmt(rs.get('params', 0) / 1e6)} M, videomask {fmt(vs.get('params', 0) / 1e6)} M; masked tokens "
            f"{rs.get('masked', '-')} / {vs.get('masked', '-')} of {vs.get('tokens', '-')}; optimizers: reference "
            f"{rs.get('optimizer', '-')}, videomask {vs.get('optimizer', '-')} (train.clip_grad "
            f"{vs.get('clip_grad', '-')}). *Model step*: zero_grad + forward + loss + backward + optimizer step in a "
            "plain loop, with the optimizer each library builds (the reference's `create_optimizer`; videomask's "
            "`build_parts`). *Library step*: the reference's `train_one_epoch` over an epoch of 2 fixed batches (its "
            "target computation, GradScaler call, grad norm, `loss.item()`, metric logger); videomask's `train_step` "
            "with a stream that returns the fixed batch (mask, model, loss, backward, grad-norm clip, update). The "
            "videomask process is set up as the CLI sets one up (`prepare_process`) and takes its batch from "
            "DataLoader workers, so its allocator settings are those of a `videomask pretrain` process.",
            "",
            "| process | step | ms/step wall (median) | clips/s | CPU ms/step | of it sys | minor faults/step "
            "| vs reference (same kind, wall) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        ref_of = {STEPS[1]: STEPS[0], STEPS[3]: STEPS[2]}
        for row in steps.values():
            base = steps.get(f"{STEP_PROCESSES[0]} / {ref_of.get(row['step'], '')}")
            ratio = row["wall_s"] / base["wall_s"] if base else None
            lines.append(
                f"| {row['process']} | {row['step']} | {1000 * row['wall_s']:.0f} "
                f"| {CLIPS_PER_STEP / row['wall_s']:.2f} | {1000 * row['cpu_s']:.0f} | {1000 * row['sys_s']:.0f} "
                f"| {row['minflt']:.0f} | {fmt(ratio, '.3f')} |"
            )

    profiles = [r for r in results if r.get("cprofile")]
    if profiles:
        lines += ["", "## Where the step time goes (profiles of the pipelines)", ""]
        for r in profiles:
            cp = r["cprofile"]
            lines += [
                f"### {r['label']}: cProfile over {cp['steps']} steps (main process; then torch.profiler over "
                f"{r.get('torch_profile_steps', '?')} more)",
                "",
                f"Total profiled: {cp['total_s_per_step']:.3f} s/step (cProfile's own overhead included).",
                "",
                "| part of the step | cumulative s/step | share | calls/step |",
                "|---|---|---|---|",
            ]
            for label, part in cp["parts"].items():
                share = part["cum_s_per_step"] / cp["total_s_per_step"] if cp["total_s_per_step"] else 0
                lines.append(
                    f"| {label} | {part['cum_s_per_step']:.3f} | {100 * share:.1f}% | {part['calls_per_step']:g} |"
                )
            lines += ["", "Top entries by cumulative time (per step):", "", "```"]
            lines += [f"{cum:8.4f} s  {calls:8.1f} calls  {name}" for name, calls, cum in cp["top_cumulative"]]
            lines += ["```", "", "Top entries by own time (per step):", "", "```"]
            lines += [f"{tot:8.4f} s  {calls:8.1f} calls  {name}" for name, calls, tot in cp["top_self"]]
            lines += ["```"]
            if r.get("torch_profile"):
                lines += [
                    "",
                    f"torch.profiler, {r['torch_profile_steps']} steps, top operators by self CPU:",
                    "",
                    "```",
                ]
                lines += [r["torch_profile"].rstrip(), "```"]
            lines.append("")

    lines += ["", "## Threads", ""]
    for label in [*PIPELINES, DIAGNOSTIC, *variants, *LOADERS, *STEP_PROCESSES, STEPS_DIAGNOSTIC]:
        r = by_label.get(label)
        if not r:
            continue
        th = r["threads"]
        extra = ""
        if r.get("main_os_threads"):
            extra += f"; OS threads: main {r['main_os_threads']}, workers {r.get('worker_os_threads')}"
        if r.get("workers"):
            w = r["workers"]
            extra += f"; in the {len(w)} worker processes: torch.get_num_threads() = {spread(w, 'torch_threads')} "
            extra += f"(interop {spread(w, 'interop_threads')})"
        if r.get("worker_os_threads_peak"):
            peak = r["worker_os_threads_peak"]
            extra += (
                f", OS threads at most {min(peak)}-{max(peak)}"
                if min(peak) != max(peak)
                else f", OS threads at most {peak[0]}"
            )
        lines.append(
            f"- {label}: main process torch.get_num_threads() = {th['torch_threads']} (interop "
            f"{th['interop_threads']}), OMP_NUM_THREADS={th['OMP_NUM_THREADS']}{extra}{malloc_env(th)}"
        )

    vm = by_label.get("videomask S=1", {})
    ref = by_label.get("reference persistent", {})
    lines += [
        "",
        "## How each pipeline was run",
        "",
        "videomask (through `videomask.cli.main`, as the `videomask` command; a wrapper around "
        "`videomask.train.loop.train_step` notes each step's end):",
        "",
        f"    {vm.get('command', '-')}",
        "",
        "(`num_sample=2`: `data.num_sample=2 data.batch_size=2`.) Reference: "
        "`run_mae_pretraining.main(args)` from the checkout, `args` from its own `get_args()` with",
        "",
        f"    {' '.join(ref.get('argv', []))}",
        "",
        "The reference's training step is its own `engine_for_pretraining.train_one_epoch`, called by its `main()` "
        "(not rewritten here); its model is the registered `pretrain_videomae_small_patch16_224` builder, its "
        "dataset `datasets.build_pretraining_dataset(args)`, its optimizer `optim_factory.create_optimizer`. "
        "Loaders alone: videomask's `build_parts(cfg).stream`; the reference's dataset, sampler and DataLoader "
        "built as its `main()` builds them (those few lines are written in the benchmark). Patched at run time "
        "in the reference's processes (the checkout is not edited):",
        "",
    ]
    patches = sorted({p for r in results for p in r.get("patches", [])})
    lines += [f"- {p}" for p in patches] or ["- nothing"]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # one measurement, in a process of its own (see Runner.run)
        return child_main(argv[1], argv[2])
    args = parse_args(argv)
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    load_start = os.getloadavg()[0]
    tree = videomask_tree()  # before the run: the code that was measured
    work = Path(tempfile.mkdtemp(prefix="videomask-pipeline-"))
    clip_list, clips = write_clip_list(work)
    runner = Runner(args, work, clip_list)
    print(f"work folder {work}; {len(clips)} clips; steps {args.first}-{args.last}; {args.repeats} round(s)")
    pipelines: list[tuple[str, str, dict[str, Any], dict[str, str] | None]] = [
        (PIPELINES[0], "videomask-pipeline", {"num_sample": 1}, None),
        (PIPELINES[1], "videomask-pipeline", {"num_sample": 2}, None),
        (PIPELINES[2], "reference-pipeline", {"persistent": True}, None),
        (PIPELINES[3], "reference-pipeline", {"persistent": False}, None),
    ]
    if args.diagnose:
        pipelines.append((DIAGNOSTIC, "videomask-pipeline", {"num_sample": 1}, MALLOC_DYNAMIC_MAX))
    for label, env, overrides in args.variants:
        pipelines.append((variant_label(label), "videomask-pipeline", {"num_sample": 1, "overrides": overrides}, env))
    loaders = [
        (LOADERS[0], "videomask-loader", {}, None),
        (LOADERS[1], "reference-loader", {"persistent": True}, None),
        (LOADERS[2], "reference-loader", {"persistent": False}, None),
    ]
    rounds = {"rounds": args.step_rounds, "warmup_rounds": 1 if args.quick else 2}
    steps = [
        (STEP_PROCESSES[0], "reference-steps", rounds, None),
        (STEP_PROCESSES[1], "videomask-steps", rounds, None),
    ]
    if args.diagnose:
        steps.append((STEPS_DIAGNOSTIC, "videomask-steps", rounds, MALLOC_DYNAMIC_MAX))
    results: list[dict[str, Any]] = []
    try:
        for r in range(args.repeats):
            for group in (pipelines, loaders, steps):
                k = r % len(group)
                for label, kind, extra, env in group[k:] + group[:k]:
                    results.append(runner.run(kind, label, extra, env))
        if not args.no_profile:
            n = args.profile_steps
            for label, kind, extra, part in (
                ("profile: videomask S=1", "videomask-pipeline", {"num_sample": 1}, "videomask"),
                ("profile: reference persistent", "reference-pipeline", {"persistent": True}, "reference"),
            ):
                prof = {"profile": {"start": args.first, "steps": n, "parts": part}, "last": args.first + 2 * n - 1}
                results.append(runner.run(kind, label, {**extra, **prof}))
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    import torch

    command = "python benchmarks/pipeline.py " + shlex.join(argv)
    meta = {
        "command": command.strip(),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "took_min": (time.perf_counter() - t0) / 60,
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load_start": f"{load_start:.2f}",
        "load_end": f"{os.getloadavg()[0]:.2f}",
        "versions": versions(),
        "reference": str(args.reference),
        "reference_commit": reference_commit(args.reference),
        "videomask_tree": tree,
        "videomask_imported": ", ".join(sorted({r["videomask_file"] for r in results if r.get("videomask_file")})),
        "clips": len(clips),
        "clip_names": [p.name for p in clips],
        "main_threads": args.threads or f"torch's default ({torch.get_num_threads()})",
    }
    summary = summarise(results, args)
    text = report(meta, results, summary, args)
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        dump = {"meta": meta, "summary": summary, "results": results}
        args.out.with_suffix(".json").write_text(json.dumps(dump, indent=1, default=str) + "\n")
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
