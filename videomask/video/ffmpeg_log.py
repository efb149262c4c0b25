"""The FFmpeg log of the FFmpeg copies bundled with decord and OpenCV.

PyAV keeps FFmpeg's log off (its errors still carry FFmpeg's message). decord's own FFmpeg prints every
decoder complaint to stderr; once :func:`enable_ffmpeg_log_capture` has been called, its libavutil's log
callback is replaced with one that counts the messages (and keeps the first), reported in one line per file
on the logger ``videomask.video``, and OpenCV's copy is silenced (its failures still raise).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import glob
import logging
import os
import threading
from collections import OrderedDict

log = logging.getLogger("videomask.video")

_AV_LOG_ERROR = 16
_LIBAV_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class _LibavMessages:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.first = ""
        self.hooked: set[str] = set()
        self.callback = _LIBAV_CALLBACK(self._on_message)
        self.reported: OrderedDict[str, None] = OrderedDict()
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        self.vsnprintf = libc.vsnprintf
        self.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]

    def _on_message(self, avcl: int, level: int, fmt: bytes, args: int) -> None:
        if level > _AV_LOG_ERROR or fmt is None:
            return
        with self.lock:
            self.count += 1
            if self.count > 1:
                return
        try:
            buf = ctypes.create_string_buffer(256)
            self.vsnprintf(buf, 256, fmt, args)
            text = buf.value.decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001 - never raise into C
            text = fmt.decode("utf-8", "replace").strip()
        with self.lock:
            self.first = text

    def hook(self, libavutil: str) -> None:
        """Route the log of the libavutil at this path (already loaded by its library) to this collector."""
        if libavutil in self.hooked:
            return
        self.hooked.add(libavutil)
        try:
            lib = ctypes.CDLL(libavutil)
            lib.av_log_set_callback.argtypes = [_LIBAV_CALLBACK]
            lib.av_log_set_callback(self.callback)
        except (OSError, AttributeError):
            return

        def quiet() -> None:  # no calls into a finalizing interpreter from decoder threads
            try:
                lib.av_log_set_level(-8)  # AV_LOG_QUIET
                lib.av_log_set_callback.argtypes = [ctypes.c_void_p]
                lib.av_log_set_callback(ctypes.cast(lib.av_log_default_callback, ctypes.c_void_p))
            except (OSError, AttributeError):
                pass

        atexit.register(quiet)

    def take(self) -> tuple[int, str]:
        with self.lock:
            count, first, self.count, self.first = self.count, self.first, 0, ""
        return count, first


_libav_messages: _LibavMessages | None = None
_capture_enabled = False


def enable_ffmpeg_log_capture() -> None:
    """From now on, decord and OpenCV readers route their bundled FFmpeg's log: decord's messages are counted
    and reported in one log line per file, OpenCV's are silenced. Idempotent; nothing is hooked before a
    reader of that backend is made."""
    global _capture_enabled
    _capture_enabled = True


def hook_bundled_libav(package_dir: str) -> None:
    """Count (instead of print) the FFmpeg log messages of the libavutil bundled next to a package, once
    :func:`enable_ffmpeg_log_capture` has been called."""
    global _libav_messages
    if not _capture_enabled or not hasattr(ctypes, "CFUNCTYPE") or os.name != "posix":
        return
    # only the package's own copy (``<site-packages>/decord.libs``): a Python callback installed on PyAV's
    # libavutil would deadlock, since PyAV holds the GIL in calls whose frame threads log
    own = os.path.normpath(package_dir) + ".libs"
    libs = sorted(glob.glob(os.path.join(own, "libavutil*.so*")))
    if not libs:
        return
    if _libav_messages is None:
        _libav_messages = _LibavMessages()
    for lib in libs:
        _libav_messages.hook(lib)


_quieted: set[str] = set()
_quieted_packages: set[str] = set()


def quiet_bundled_libav(package_dir: str) -> None:
    """Silence the FFmpeg log of the libavutil bundled with a package (``<package>.libs``).

    Used for OpenCV, whose Python objects free their decoder while holding the GIL (so a Python log
    callback could deadlock with a decoder thread); its decode failures still surface as
    ``VideoDecodeError``. Call after the package's first use of FFmpeg (OpenCV sets the level then).
    Does nothing until :func:`enable_ffmpeg_log_capture` has been called.
    """
    if not _capture_enabled:
        return
    if package_dir in _quieted_packages:  # one glob per package, not one per open
        return
    _quieted_packages.add(package_dir)
    for lib_path in sorted(glob.glob(os.path.join(os.path.normpath(package_dir) + ".libs", "libavutil*.so*"))):
        if lib_path in _quieted:
            continue
        _quieted.add(lib_path)
        try:
            ctypes.CDLL(lib_path).av_log_set_level(-8)  # AV_LOG_QUIET
        except (OSError, AttributeError):
            pass


def report_libav_messages(path: str, backend: str) -> None:
    """One log line for the FFmpeg messages counted since the last call (at most one line per file)."""
    if _libav_messages is None:
        return
    count, first = _libav_messages.take()
    if count == 0:
        return
    reported = _libav_messages.reported
    if path in reported:
        return
    reported[path] = None
    while len(reported) > 4096:
        reported.popitem(last=False)
    log.warning(
        "videomask: %s: %s's FFmpeg reported %d problem(s) while decoding; first: %s",
        path,
        backend,
        count,
        first or "?",
    )
