"""Frame-exact video decoding with three backends: PyAV (default), decord (optional) and OpenCV.

    with open_video("clip.mp4") as video:          # backend="pyav" | "decord" | "opencv" | "auto"
        frames = video.read([0, 4, 8, 12])         # uint8 [4, H, W, 3] RGB, upright

How reads stay frame-exact, how decord and OpenCV are checked against PyAV, and the FFmpeg logs:
docs/decoding.md.
"""

from videomask.errors import VideoDecodeError
from videomask.video.backends import AUTO_ORDER, BACKENDS, available_backends, open_bytes, open_video
from videomask.video.decord_reader import DecordReader
from videomask.video.ffmpeg_log import enable_ffmpeg_log_capture
from videomask.video.meta import FrameIndex, VideoMeta, index_from_json, index_to_json, open_probe, probe
from videomask.video.opencv import OPENCV_SEEK_BACK, OpenCVReader
from videomask.video.pyav import PyAVReader
from videomask.video.reader import VideoReader
from videomask.video.storage import set_storage_options
from videomask.video.timeout import call_with_timeout
from videomask.video.verify import (
    CHECK_THREADS,
    MEAN_TOLERANCE,
    OUTLIER_FRACTION,
    OUTLIER_LEVEL,
    CheckedReader,
    forget_verdicts,
    frames_differ,
)

__all__ = [
    "VideoMeta",
    "VideoReader",
    "PyAVReader",
    "DecordReader",
    "OpenCVReader",
    "CheckedReader",
    "open_video",
    "open_bytes",
    "open_probe",
    "FrameIndex",
    "index_to_json",
    "index_from_json",
    "BACKENDS",
    "available_backends",
    "AUTO_ORDER",
    "probe",
    "call_with_timeout",
    "set_storage_options",
    "enable_ffmpeg_log_capture",
    "frames_differ",
    "forget_verdicts",
    "CHECK_THREADS",
    "MEAN_TOLERANCE",
    "OUTLIER_LEVEL",
    "OUTLIER_FRACTION",
    "OPENCV_SEEK_BACK",
    "VideoDecodeError",
]
