"""Where the allocator is tuned: in processes that decode videos, not in the training process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers_train import write_videos

SCRIPT = """
import sys
from torch.utils.data import DataLoader
from videomask.data import VideoDataset, collate_clips, process

dataset = VideoDataset.from_folder(sys.argv[1], num_frames=4, sampling_rate=1, size=32)
assert not process._malloc_tuned, "pinned by building the dataset"
loader = DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate_clips)
batch = next(iter(loader))
assert batch["video"].shape[0] == 2
assert not process._malloc_tuned, "pinned in a process whose batches come from workers"
dataset[0]
assert process._malloc_tuned, "not pinned in a process that decodes"
print("ok")
"""


def test_the_mmap_threshold_is_pinned_only_where_videos_are_decoded(tmp_path: Path) -> None:
    videos = write_videos(tmp_path / "videos", count=2)
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}  # the user's choice would win
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(videos)], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
