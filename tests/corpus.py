"""A conformance corpus: small index clips (frame ``k`` encodes ``k``, see :mod:`clips`) in many codecs and
containers, made with PyAV's encoders; the Theora files, which PyAV cannot encode, are kept in ``tests/fixtures``
(made with libtheora, see ``tests/fixtures/make_theora.py``). Used by ``tests/video/test_conformance.py`` and
``benchmarks/decode.py``.

    files = make_corpus(folder)            # {name: path}; entries whose encoder is missing are left out
    missing = missing_encoders()           # {name: encoder} of the entries that could not be made here
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
from clips import make_index_clip

DATA = Path(__file__).resolve().parent / "fixtures"  # files made with encoders PyAV lacks

FRAMES = 36  # frames per corpus clip (three GOPs of 12)
HEIGHT, WIDTH = 48, 64

# name -> make_index_clip options (size and frame count default to the above)
CORPUS: dict[str, dict] = {
    "mpeg1_ps.mpg": dict(codec="mpeg1video", gop=12, bframes=2),
    "mpeg2_ps.mpg": dict(codec="mpeg2video", gop=12, bframes=2),
    "mpeg1_ts.ts": dict(codec="mpeg1video", gop=12, bframes=2),
    "mpeg2_ts.ts": dict(codec="mpeg2video", gop=12, bframes=2),
    "h264_ts.ts": dict(codec="libx264", gop=12, bframes=2),
    "theora.ogv": dict(fixture=True),  # 64x48 (tests/fixtures/make_theora.py)
    "theora_offset.ogv": dict(fixture=True, height=44, width=60),  # a 60x44 picture at (2, 2) of a 64x48 frame
    "vp8.webm": dict(codec="libvpx", gop=12),
    "vp9.webm": dict(codec="libvpx-vp9", gop=12),
    "mjpeg.mov": dict(codec="mjpeg", pix_fmt="yuvj420p"),
    "mjpeg.avi": dict(codec="mjpeg", pix_fmt="yuvj422p"),
    "mpeg4_bframes.avi": dict(codec="mpeg4", gop=12, bframes=2),
    "mpeg4_packed.avi": dict(codec="mpeg4", gop=12, bframes=1, packed=True),  # DivX packed B-frames
    "h264_bframes.mp4": dict(codec="libx264", gop=12, bframes=3),
    "h264_opengop.mp4": dict(codec="libx264", gop=12, bframes=3, options={"x264-params": "open-gop=1"}),
    "hevc.mkv": dict(
        codec="libx265", gop=12, options={"x265-params": "log-level=none:keyint=12:min-keyint=12:bframes=2"}
    ),
    "vfr.mkv": dict(codec="libx264", gop=12, pts=[k * 40 + (k % 3) * 11 for k in range(FRAMES)]),
    "rot90.mp4": dict(codec="libx264", gop=12, rotation=90),
    "rot180.mp4": dict(codec="libx264", gop=12, rotation=180),
    "rot270.mov": dict(codec="libx264", gop=12, rotation=270),
    "odd_yuv444p.mkv": dict(codec="libx264", pix_fmt="yuv444p", height=33, width=47, gop=12),
    "odd_ffv1.mkv": dict(codec="ffv1", pix_fmt="yuv420p", height=35, width=51),
    "gray_ffv1.mkv": dict(codec="ffv1", pix_fmt="gray"),
    "yuv444p.mp4": dict(codec="libx264", pix_fmt="yuv444p", gop=12),
    "h264_10bit.mkv": dict(codec="libx264", pix_fmt="yuv420p10le", gop=12),
}


def _encoder(options: dict) -> str:
    return "libtheora" if options.get("fixture") else options.get("codec", "libx264")


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - PyAV raises different errors for unknown codecs across versions
        return False
    return True


def missing_encoders() -> dict[str, str]:
    """``{corpus name: encoder}`` for the entries this PyAV build cannot encode."""
    return {
        name: _encoder(o)
        for name, o in CORPUS.items()
        if not ((DATA / name).is_file() if o.get("fixture") else _has_encoder(_encoder(o)))
    }


def make_corpus(folder: str | os.PathLike, names: list[str] | None = None) -> dict[str, Path]:
    """Write the corpus (or the entries ``names``) into ``folder``; returns ``{name: path}`` of those made."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = missing_encoders()
    out: dict[str, Path] = {}
    for name in names or list(CORPUS):
        if name in missing:
            continue
        options = dict(CORPUS[name])
        if options.pop("fixture", False):
            out[name] = folder / name
            shutil.copyfile(DATA / name, out[name])
            continue
        height, width = options.pop("height", HEIGHT), options.pop("width", WIDTH)
        if options.pop("packed", False):
            plain = make_index_clip(folder / f"_unpacked_{name}", FRAMES, height, width, **options)
            out[name] = pack_bframes(plain, folder / name)
            plain.unlink()
            continue
        out[name] = make_index_clip(folder / name, FRAMES, height, width, **options)
    return out


def _not_coded_vop(b_vop: bytes) -> bytes:
    """An N-VOP (a P-VOP header with ``vop_coded`` 0, 6 bytes) with the time of the B-VOP ``b_vop``."""
    bits = "".join(f"{byte:08b}" for byte in b_vop[4:8])
    assert b_vop[:4] == b"\x00\x00\x01\xb6" and bits[:2] == "10", "not a B-VOP"
    end = bits.index("0", 2) + 1 + 1 + 5  # modulo_time_base (1...10), marker, vop_time_increment (25 fps)
    header = "01" + bits[2:end] + "1" + "0"  # P, the B-VOP's time, marker, vop_coded = 0
    header += "0" + "1" * (7 - len(header) % 8)  # stuffing to the byte
    return b_vop[:4] + int(header, 2).to_bytes(len(header) // 8, "big")


def pack_bframes(source: Path, path: Path) -> Path:
    """Rewrite an MPEG-4 Part 2 AVI with single B-frames (``bframes=1``) in the DivX "packed bitstream"
    form of old DivX/Xvid files: each P-VOP travels with the B-VOP after it in one AVI chunk, the B-VOP's
    chunk holds a not-coded VOP, and the user data says ``DivX503b1393p``. FFmpeg unpacks it and gives the
    frames in display order, but the pts it gives them are swapped in pairs (frame 1 gets frame 2's)."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        extradata, rate = stream.codec_context.extradata, stream.average_rate
        width, height = stream.codec_context.width, stream.codec_context.height
        packets = [(bytes(p), p.is_keyframe) for p in container.demux(stream) if p.size]

    def divx(data: bytes) -> bytes:  # FFmpeg's encoder tag (13 characters) -> a packed DivX 5 tag
        at = data.find(b"\x00\x00\x01\xb2Lavc")
        return data if at < 0 else data[: at + 4] + b"DivX503b1393p" + data[at + 17 :]

    def coding(vop: bytes) -> int:  # 0 I, 1 P, 2 B (-1: the packet does not start with a VOP)
        return vop[4] >> 6 if vop[:4] == b"\x00\x00\x01\xb6" else -1

    chunks: list[tuple[bytes, bool]] = []
    k = 0
    while k < len(packets):
        data, key = packets[k]
        if k + 1 < len(packets) and coding(data) == 1 and coding(packets[k + 1][0]) == 2:
            chunks += [(data + packets[k + 1][0], False), (_not_coded_vop(packets[k + 1][0]), False)]
            k += 2
        else:
            chunks.append((divx(data), key))
            k += 1
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.extradata = divx(extradata)
        stream.time_base = 1 / Fraction(rate)
        for index, (data, key) in enumerate(chunks):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, index, index, stream.time_base
            packet.is_keyframe = key
            out.mux(packet)
    return path
