"""Write the Theora/Ogg files of the conformance corpus (tests/corpus.py) into this folder.

PyAV's wheels have no Theora encoder, so these two files are made once with libtheora's own
``encoder_example`` (Debian package ``libtheora-bin``, BSD-3-Clause) and kept here: 36 index-clip frames
(frame k encodes k, tests/clips.py), keyframes at most 12 frames apart, quality 10.

- ``theora.ogv``: 64x48, the whole coded frame is the picture.
- ``theora_offset.ogv``: a 60x44 picture at offset (2, 2) of a 64x48 coded frame (encoder_example centres
  a picture whose size is not a multiple of 16). FFmpeg keeps plane pointers aligned unless asked not to,
  so a plain decode gave 62-wide frames here, two columns of padding on the left.

To make them again (nothing is installed; run from the repository root)::

    mkdir -p /tmp/theora && cd /tmp/theora
    apt-get download libtheora-bin libtheora0 libogg0 libvorbis0a libvorbisenc2
    for f in *.deb; do dpkg-deb -x "$f" root; done
    cd - && python tests/data/make_theora.py /tmp/theora/root
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from clips import decode_index, encode_index_frame  # noqa: E402

FRAMES = 36
FILES = {"theora.ogv": (48, 64), "theora_offset.ogv": (44, 60)}  # name -> picture (height, width)


def write_y4m(path: Path, num_frames: int, height: int, width: int) -> None:
    """The index clip as uncompressed YUV4MPEG2 (4:2:0, 25 fps)."""
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode())
        for k in range(num_frames):
            rgb = encode_index_frame(k, height, width)  # [H, W, 3]
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            out.write(b"FRAME\n")
            for plane in frame.planes:  # Y [H, W], U and V [H/2, W/2], without the line padding
                rows = np.frombuffer(bytes(plane), np.uint8).reshape(-1, plane.line_size)
                out.write(rows[:, : plane.width].tobytes())


def main(root: str) -> None:
    encoder = Path(root) / "usr/bin/theora_encoder_example"
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(root) / "usr/lib/x86_64-linux-gnu")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (height, width) in FILES.items():
            raw = Path(tmp) / "in.y4m"
            write_y4m(raw, FRAMES, height, width)
            out = HERE / name
            subprocess.run([str(encoder), "-v", "10", "-k", "12", "-o", str(out), str(raw)], check=True, env=env)
            with av.open(str(out)) as container:
                stream = container.streams.video[0]
                stream.codec_context.flags |= av.codec.context.Flags.unaligned
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert [decode_index(f) for f in frames] == list(range(FRAMES)), name
            assert frames[0].shape == (height, width, 3), (name, frames[0].shape)
            print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/theora/root")
