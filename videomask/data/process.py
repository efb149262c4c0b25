"""Per-process set-up for decoding many videos: :func:`prepare_process`.

A :class:`~videomask.data.VideoDataset` calls it when it is made and when a worker process unpickles it.
"""

from __future__ import annotations

import ctypes
import gc
import os

from videomask.video import enable_ffmpeg_log_capture

# glibc raises its mmap threshold (from 128 KiB up to 32 MiB) each time a large mmapped block is freed, so
# after the first few decoded videos, frames and clip tensors of a few MiB are carved from the heap instead
# of mmapped, and the heap keeps the freed space (fragmented by the mix of frame sizes): the peak RSS of a
# long decode loop kept rising. A fixed threshold stops that raise; buffers above it (batch tensors, large
# frames) go back to the system when freed. 4 MiB rather than a lower value: below it every clip-sized
# buffer is mmapped and zeroed afresh, which costs much system time (trade-off in docs/data.md).
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 4 * 1024 * 1024
_malloc_tuned = False
_fork_hook_registered = False


def keep_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``threshold`` bytes (no dynamic raise); once per process.

    Does nothing off glibc, or when ``MALLOC_MMAP_THRESHOLD_`` is set (the user's choice wins).
    Returns whether the threshold was set now. Called where videos are decoded (a dataset item, the score cache).
    """
    global _malloc_tuned
    if _malloc_tuned or os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None:
        return False
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt  # glibc (and musl, which ignores it)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def collect_before_fork() -> None:
    """Run the cyclic GC before every ``fork`` of this process (registered once per process).

    PyAV objects that end up in reference cycles (container <-> stream while the container is open) are
    freed only by the cyclic GC. Readers closed (or dropped) normally leave none, but one left in a cycle
    by the caller would be freed by the GC; if that happens in a forked DataLoader worker, FFmpeg's codec
    context tries to join frame threads that exist only in the parent and the worker hangs (or crashes).
    Collecting before every fork frees them in the parent, where their threads live.
    """
    global _fork_hook_registered
    if _fork_hook_registered:
        return
    _fork_hook_registered = True
    os.register_at_fork(before=gc.collect)


def prepare_process() -> None:
    """Set this process up for reading videos; idempotent.

    Collects garbage before every fork (:func:`collect_before_fork`) and routes FFmpeg's log through Python
    logging (:func:`videomask.video.enable_ffmpeg_log_capture`). The mmap threshold is pinned only in a
    process that decodes (:func:`keep_mmap_threshold`, called at a dataset's first item and by the score
    cache): pinned in the training process, whose batches come from worker processes, it turns the model
    step's large temporary tensors into fresh mmaps and page faults on every step.
    """
    collect_before_fork()
    enable_ffmpeg_log_capture()
