"""Video datasets: frame sampling, clip transforms with geometry, video lists, batching.

    ds = VideoDataset.from_path("videos/", num_frames=16, sampling_rate=4, train=True)
    batch = collate_clips([ds[0], ds[1]])

See docs/data.md for the determinism contract, bad-video skipping and the list file formats.
"""

from videomask.constants import IMAGENET_MEAN, IMAGENET_STD
from videomask.data.collate import collate_clips
from videomask.data.dataset import ClipDecodeError, VideoDataset
from videomask.data.lists import VIDEO_EXTENSIONS, VideoItem, list_videos, read_video_list
from videomask.data.process import MMAP_THRESHOLD, collect_before_fork, keep_mmap_threshold, prepare_process
from videomask.data.sampling import (
    SAMPLING_MODES,
    SHORT_POLICIES,
    VideoTooShortError,
    clip_span,
    plan_reads,
    sample_indices,
)
from videomask.data.shards import ShardReport, ShardSource, is_shard_folder, read_rejects, write_shards
from videomask.data.skiplog import SkipLog, remove_skip_log
from videomask.data.transforms import (
    ClipTransform,
    center_crop,
    crop,
    frames_to_tensor,
    hflip,
    multiscale_crop_params,
    normalize,
    random_resized_crop_params,
    resize,
    resize_short_side,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MMAP_THRESHOLD",
    "SAMPLING_MODES",
    "SHORT_POLICIES",
    "VIDEO_EXTENSIONS",
    "ClipDecodeError",
    "ClipTransform",
    "SkipLog",
    "VideoDataset",
    "ShardSource",
    "ShardReport",
    "write_shards",
    "read_rejects",
    "is_shard_folder",
    "VideoItem",
    "VideoTooShortError",
    "center_crop",
    "clip_span",
    "collate_clips",
    "collect_before_fork",
    "crop",
    "frames_to_tensor",
    "hflip",
    "keep_mmap_threshold",
    "list_videos",
    "multiscale_crop_params",
    "normalize",
    "plan_reads",
    "prepare_process",
    "random_resized_crop_params",
    "remove_skip_log",
    "read_video_list",
    "resize",
    "resize_short_side",
    "sample_indices",
]
