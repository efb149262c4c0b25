"""Test-clip generators: videos whose frame ``k`` encodes the number ``k``, and broken files.

Import from any test (``from tests.clips import make_index_clip, decode_index`` or, with ``tests/`` on the
path, ``from clips import ...``)::

    path = make_index_clip(tmp_path / "a.mp4", num_frames=40, height=64, width=96)
    frames = open_video(path).read([3, 7])          # uint8 [2, 64, 96, 3]
    assert [decode_index(f) for f in frames] == [3, 7]

The index is written as a 16-bit binary code in square cells (dark = 0, bright = 1, MSB first, row-major)
across the top of the frame; the rest of the frame holds a moving pattern so encoders make real P/B
frames. Cells are 16 px when the frame is large enough, 8 or 4 px otherwise, and the code is read from the
centre of each cell, so it survives lossy codecs, chroma subsampling and odd sizes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

NUM_BITS = 16
LOW, HIGH = 24, 232  # cell gray levels for bit 0 / bit 1 (far from the 128 threshold)


def _layout(height: int, width: int) -> tuple[int, int, int]:
    """(cell, cols, rows) of the code grid for a frame of this size."""
    for cell in (16, 8, 4):
        cols = min(width // cell, NUM_BITS)
        if cols == 0:
            continue
        rows = -(-NUM_BITS // cols)
        if rows * cell <= height:
            return cell, cols, rows
    raise ValueError(f"frame {height}x{width} is too small for a {NUM_BITS}-bit index code")


def encode_index_frame(index: int, height: int, width: int) -> np.ndarray:
    """The RGB frame (uint8 [H, W, 3]) that carries ``index``."""
    if not 0 <= index < 2**NUM_BITS:
        raise ValueError(f"index {index} does not fit in {NUM_BITS} bits")
    cell, cols, rows = _layout(height, width)
    # moving diagonal stripes in the background (mid-gray range, never mistaken for code cells)
    diagonal = (96 + 32 * np.sin((np.arange(height + width) + 3 * index) / 6.0)).astype(np.uint8)  # [H+W]
    stripes = diagonal[np.add.outer(np.arange(height), np.arange(width))]  # [H, W]
    frame = np.repeat(stripes[..., None], 3, axis=2)  # [H, W, 3]
    frame[..., 0] += (16 + 16 * np.cos((np.arange(width) - 2 * index) / 9.0)).astype(np.uint8)  # red drifts
    bits = [(index >> (NUM_BITS - 1 - b)) & 1 for b in range(NUM_BITS)]
    for b, bit in enumerate(bits):
        r, c = divmod(b, cols)
        frame[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell, :] = HIGH if bit else LOW
    return frame


def decode_index(frame: np.ndarray) -> int:
    """Read back the index from an RGB (uint8 [H, W, 3]) or gray (uint8 [H, W]) frame."""
    frame = np.asarray(frame)
    gray = frame.astype(np.float32).mean(axis=2) if frame.ndim == 3 else frame.astype(np.float32)
    height, width = gray.shape
    cell, cols, _ = _layout(height, width)
    inner = max(1, cell // 4)  # sample the centre of each cell, away from block edges
    value = 0
    for b in range(NUM_BITS):
        r, c = divmod(b, cols)
        patch = gray[r * cell + inner : (r + 1) * cell - inner, c * cell + inner : (c + 1) * cell - inner]
        value = (value << 1) | int(patch.mean() > 128)
    return value


def make_index_clip(
    path: str | os.PathLike,
    num_frames: int,
    height: int = 64,
    width: int = 96,
    codec: str = "libx264",
    *,
    fps: float | Fraction = 25,
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    bframes: int | None = None,
    rotation: int = 0,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a clip of ``num_frames`` frames where frame k encodes k; the container comes from the suffix.

    ``codec``: any PyAV encoder (``libx264``, ``mpeg4``, ``libvpx-vp9``, ``mjpeg``, ``ffv1``, ...).
    ``gop``: keyframe interval (long GOPs make seeking matter); ``bframes``: max consecutive B-frames
    (H.264/MPEG-4; default: the encoder's own, 3 for libx264 when ``gop`` is given).
    ``rotation``: display rotation in degrees *clockwise* (the phone ``rotate`` tag convention; written
    as a display matrix), so a reader that applies it returns ``np.rot90(frame, -rotation // 90)``.
    ``pts`` + ``time_base``: explicit presentation timestamps per frame (variable frame rate).
    Odd sizes need a pixel format without chroma subsampling for H.264 (``pix_fmt="yuv444p"``) or a
    codec that allows them (``ffv1``, ``mjpeg`` with ``yuvj444p``). Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        opts: dict[str, str] = {}
        if codec == "libx264":
            if bframes is None and gop is not None:
                bframes = 3
            # ultrafast has no B-frames; "fast" keeps them (and is slower, so only when asked for)
            opts.update({"crf": "12", "preset": "fast" if bframes else "ultrafast"})
        elif codec in ("libvpx-vp9", "libvpx"):
            opts.update({"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"})
        elif codec in ("mpeg4", "mpeg1video", "mpeg2video", "mjpeg"):
            # constant quantiser 2 (as ``ffmpeg -q:v 2``): global_quality = q * FF_QP2LAMBDA (118)
            stream.codec_context.qscale = True
            stream.codec_context.global_quality = 2 * 118
        if gop is not None:
            stream.codec_context.gop_size = gop
            if codec == "libx264":
                opts.update({"keyint_min": str(gop), "sc_threshold": "0"})
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
            if codec == "libx264":
                opts["bf"] = str(bframes)
        opts.update(options or {})
        stream.codec_context.options = opts
        if pts is not None:
            if len(pts) != num_frames:
                raise ValueError("pts must have one entry per frame")
            stream.codec_context.time_base = time_base or Fraction(1, 1000)
            stream.time_base = stream.codec_context.time_base
        if rotation % 360:
            # PyAV's display rotation is counter-clockwise; the rotate tag convention is clockwise.
            stream.set_display_rotation(-rotation % 360)
        for k in range(num_frames):
            frame = av.VideoFrame.from_ndarray(encode_index_frame(k, height, width), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            if pts is not None:
                frame.pts = int(pts[k])
                frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_corrupt_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Write broken inputs into ``folder``; returns ``{name: path}`` for

    ``zero_byte`` (empty .mp4), ``truncated`` (the first ~30% of a valid mp4 with its index at the end),
    ``random_bytes`` (64 KiB of noise named .mp4), ``text`` (a text file named .mp4), ``unknown_codec``
    (a valid mkv whose codec id names no codec: PyAV opens the stream without a decoder) and ``one_frame``
    (a valid mp4 with a single frame: decodable, but shorter than any clip).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    files["zero_byte"] = folder / "zero_byte.mp4"
    files["zero_byte"].write_bytes(b"")

    whole = make_index_clip(folder / "_whole.mp4", 30, 64, 96)
    data = whole.read_bytes()
    files["truncated"] = folder / "truncated.mp4"
    files["truncated"].write_bytes(data[: len(data) * 3 // 10])
    whole.unlink()

    files["random_bytes"] = folder / "random_bytes.mp4"
    files["random_bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes())

    files["text"] = folder / "text.mp4"
    files["text"].write_text("this is not a video\n" * 20)

    whole = make_index_clip(folder / "_whole.mkv", 10, 64, 96)
    data = whole.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    files["unknown_codec"] = folder / "unknown_codec.mkv"
    files["unknown_codec"].write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    whole.unlink()

    files["one_frame"] = make_index_clip(folder / "one_frame.mp4", 1, 64, 96)
    return files


def make_garbled_file(path: str | os.PathLike, num_frames: int = 60) -> Path:
    """An index clip (container from the suffix) whose middle third is overwritten with noise: it opens,
    but some frames are damaged or missing (not part of :func:`make_corrupt_files`, whose files all fail)."""
    path = make_index_clip(path, num_frames, 64, 96, gop=12)
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 3 : n // 2] = np.random.default_rng(1).integers(0, 256, n // 2 - n // 3, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path
