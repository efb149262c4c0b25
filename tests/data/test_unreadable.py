"""What the dataset tells about videos it cannot read: which ones, and a skip list the user can open."""

from __future__ import annotations

import pytest

from videomask.data import VideoDataset
from videomask.errors import VideomaskError


def test_unreadable_lists_videos_that_do_not_open_or_are_too_short(mixed_dir):
    ds = VideoDataset.from_folder(mixed_dir, num_frames=4, sampling_rate=1, size=32)
    bad = dict(ds.unreadable())
    assert {"bad/zero_byte.mp4", "bad/random_bytes.mp4", "bad/text.mp4", "bad/one_frame.mp4"} <= set(bad)
    assert not {"good1.mp4", "good2.mp4", "short.mp4"} & set(bad)
    assert "min_frames" in bad["bad/one_frame.mp4"] and str(mixed_dir) not in bad["bad/text.mp4"]
    assert ds.skipped == 0  # a look, not a skip: nothing is logged


def test_all_bad_names_only_a_skip_list_that_outlives_the_run(mixed_dir, tmp_path):
    """The default skip list is a temporary file removed at exit: the message must not send the user there."""
    bad = mixed_dir / "bad" / "text.mp4"
    with pytest.raises(VideomaskError) as caught:
        VideoDataset.from_path(bad, num_frames=4, size=32)[0]
    message = str(caught.value)
    assert "every video failed to decode (1 video;" in message and "videomask-skipped" not in message
    kept = tmp_path / "skipped.tsv"
    with pytest.raises(VideomaskError, match=f"all reasons in {kept}"):
        VideoDataset.from_path(bad, num_frames=4, size=32, skip_log=kept)[0]
