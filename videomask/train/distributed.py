"""One process's place in a ``torchrun`` job: device, process group, barriers, DDP wrapping, precision."""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from videomask.errors import VideomaskError

DEFAULT_TIMEOUT_S = 1800.0  # run.dist_timeout_s: torch's default for NCCL (30 minutes)


@dataclass
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module started the process group (and ends it)
    timeout_s: float = DEFAULT_TIMEOUT_S  # how long a collective waits for every rank (run.dist_timeout_s)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def say(info: DistInfo, message: str) -> None:
    """Print ``message`` to stderr on rank 0 only."""
    if info.is_main:
        print(message, file=sys.stderr, flush=True)


def pick_device(
    device_name: str,
    local_rank: int,
    world_size: int,
    *,
    cuda_available: bool | None = None,
    visible: int | None = None,
) -> torch.device:
    """The training device of one process (``run.device``, torchrun's ``LOCAL_RANK``, the visible GPUs).

    Single process: ``auto`` = ``cuda:0`` (else ``cpu``); ``cuda`` = ``cuda:0``; ``cuda:N`` as given. Under
    torchrun (``world_size > 1``) every rank needs its own GPU, so any ``cuda``/``cuda:N``/``auto`` picks
    ``cuda:LOCAL_RANK`` when the process sees several GPUs and ``cuda:0`` when it sees exactly one (one GPU
    per process, e.g. ``CUDA_VISIBLE_DEVICES`` set per rank); an explicit ``N`` is not used there.
    ``cuda_available``/``visible`` default to torch's view (parameters for tests).
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if device_name == "auto":
        device_name = "cuda" if cuda_available else "cpu"
    try:
        device = torch.device(device_name)
    except RuntimeError:
        raise VideomaskError(f"run.device={device_name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type != "cuda":
        return device
    if not cuda_available:
        raise VideomaskError(f"run.device={device_name!r} but CUDA is not available (use cpu or auto)")
    if visible is None:
        visible = torch.cuda.device_count()
    if world_size > 1:
        if visible == 1:
            return torch.device("cuda:0")
        if local_rank >= visible:
            raise VideomaskError(
                f"local rank {local_rank} has no GPU of its own: this process sees {visible} "
                "GPUs; start at most that many processes per node (torchrun --nproc_per_node)"
            )
        return torch.device(f"cuda:{local_rank}")
    index = 0 if device.index is None else device.index
    if index >= visible:
        raise VideomaskError(
            f"run.device={device_name!r} but only {visible} GPU(s) are visible (cuda:0..cuda:{visible - 1})"
        )
    return torch.device(f"cuda:{index}")


def setup_distributed(device_name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[DistInfo, torch.device]:
    """Read torchrun's env vars, pick the device (:func:`pick_device`), start the process group (NCCL on
    CUDA, Gloo on CPU) whose collectives wait ``timeout_s`` seconds (``run.dist_timeout_s``) for every rank."""
    if not timeout_s > 0:
        raise VideomaskError(f"run.dist_timeout_s must be > 0 seconds, got {timeout_s}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    info.timeout_s = float(timeout_s)
    device = pick_device(device_name, info.local_rank, world)
    if info.enabled and device.type == "cuda" and device_name not in ("auto", "cuda") and str(device) != device_name:
        say(info, f"note: run.device={device_name} under torchrun; each rank uses its own GPU (rank 0: {device})")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        try:
            dist.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
            )
        except RuntimeError as err:
            raise timeout_error(err, info, "starting the process group") from None
        info.owns_group = True
    return info, device


def is_timeout(err: BaseException) -> bool:
    """Whether ``err`` is a collective or the rendezvous giving up on a rank (Gloo, NCCL and the store say
    "timed out" / "timeout")."""
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("timed out" in text or "timeout" in text)


def timeout_error(err: BaseException, info: DistInfo, what: str) -> BaseException:
    """A one-line :class:`VideomaskError` for a time-out of ``what`` (a collective); ``err`` itself otherwise."""
    if not is_timeout(err):
        return err
    return VideomaskError(
        f"rank {info.rank}: {what} waited more than run.dist_timeout_s={info.timeout_s:g} s for the other "
        f"ranks (one stopped, hangs or is far behind; raise run.dist_timeout_s when ranks do long work alone)"
    )


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op in a single process); past ``run.dist_timeout_s`` a one-line error."""
    if info.enabled:
        try:
            dist.barrier()
        except RuntimeError as err:
            raise timeout_error(err, info, "a barrier") from None


def native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes in bf16 natively (compute capability 8.0+, Ampere and later; ROCm).

    ``torch.cuda.is_bf16_supported()`` also counts emulation by default (V100, T4, Pascal), where bf16 is
    slow; those get fp16 with a GradScaler.
    """
    if torch.version.hip:
        return bool(torch.cuda.is_bf16_supported())
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.precision`` (None = fp32). auto: bf16 on CUDA with native bf16
    (:func:`native_bf16`), fp16 on older GPUs, fp32 elsewhere."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise VideomaskError("train.precision=fp16 needs CUDA; use bf16 or fp32 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def unused_in_pretraining(model: torch.nn.Module) -> list[str]:
    """Names of trainable parameters the pretraining forward never uses (``fc_norm`` with ``use_mean_pooling``).

    DDP must be told about them (``find_unused_parameters``), or the second step fails waiting for their
    gradients.
    """
    prefix = ""
    if not hasattr(model, "fc_norm") and hasattr(model, "model"):  # the objective around the VideoMAE
        model, prefix = model.model, "model."
    fc_norm = getattr(model, "fc_norm", None)
    if not isinstance(fc_norm, torch.nn.Module):
        return []
    return [f"{prefix}fc_norm.{n}" for n, p in fc_norm.named_parameters() if p.requires_grad]


def wrap_ddp(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``model`` (the objective around the VideoMAE) in DistributedDataParallel under torchrun (after the
    restore: DDP broadcasts rank 0's weights)."""
    if not info.enabled:
        return model
    unused = unused_in_pretraining(model)  # e.g. fc_norm: DDP would wait for its gradients forever
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=bool(unused)
    )
