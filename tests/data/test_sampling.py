"""videomask.data sampling: clip frame indices (modes, short-video policies), reads planned once."""

from __future__ import annotations

import pytest
from helpers_data import gen

from videomask.data import VideoTooShortError, plan_reads, sample_indices
from videomask.errors import VideoDecodeError, VideomaskError
from videomask.seeding import item_seed


def test_random_sampling_stride_and_bounds():
    starts = set()
    for seed in range(300):
        idx = sample_indices(50, 8, 4, "random", generator=gen(seed))
        assert len(idx) == 8
        assert all(b - a == 4 for a, b in zip(idx, idx[1:]))
        assert 0 <= idx[0] and idx[-1] <= 49
        starts.add(idx[0])
    assert starts == set(range(50 - 29 + 1))  # every legal start (span 29) is reachable, none beyond


def test_center_and_uniform_sampling():
    assert sample_indices(50, 4, 3, "center") == [20, 23, 26, 29]  # span 10, start (50-10)//2
    assert sample_indices(10, 4, 3, "center") == [0, 3, 6, 9]  # exactly the span
    assert sample_indices(100, 4, 7, "uniform") == [12, 37, 62, 87]  # centres of 4 segments of 25
    assert sample_indices(8, 8, 1, "uniform") == list(range(8))


def test_short_video_policies():
    assert sample_indices(10, 6, 3, "center", short="pad") == [0, 3, 6, 9, 9, 9]
    assert sample_indices(10, 6, 3, "center", short="loop") == [0, 3, 6, 9, 2, 5]
    assert sample_indices(3, 5, 1, "uniform", short="pad") == [0, 1, 2, 2, 2]
    assert sample_indices(3, 5, 1, "uniform", short="loop") == [0, 1, 2, 0, 1]
    looped = sample_indices(10, 6, 3, "random", short="loop", generator=gen(3))
    assert all(0 <= i < 10 for i in looped)
    assert all((b - a) % 10 == 3 for a, b in zip(looped, looped[1:]))
    with pytest.raises(VideoTooShortError, match="short='skip'"):
        sample_indices(10, 6, 3, "random", short="skip", generator=gen(0))
    assert sample_indices(16, 6, 3, "random", short="skip", generator=gen(0))  # span 16 fits


def test_sampling_reproducible_and_validated():
    a = [sample_indices(1000, 16, 4, "random", generator=gen(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert len({tuple(sample_indices(1000, 16, 4, "random", generator=gen(s))) for s in range(10)}) > 1
    with pytest.raises(VideomaskError, match="unknown sampling mode"):
        sample_indices(10, 4, 1, "middle")
    with pytest.raises(VideomaskError, match="unknown short-video policy"):
        sample_indices(10, 4, 1, "center", short="wrap")
    with pytest.raises(VideoDecodeError, match="no frames"):
        sample_indices(0, 4, 1, "center")
    with pytest.raises(VideomaskError, match="positive"):
        sample_indices(10, 0, 1, "center")


def test_plan_reads_and_item_seed():
    unique, positions = plan_reads([[5, 1, 5], [9, 1]])
    assert unique == [1, 5, 9]
    assert positions == [[1, 0, 1], [2, 0]]
    assert item_seed(0, 1, 2, 3) == item_seed(0, 1, 2, 3)
    assert len({item_seed(0, e, i, s) for e in range(3) for i in range(3) for s in range(3)}) == 27
