"""videomask.video: frame-exact reads on generated index clips, metadata, rotation, formats, bad files."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
import weakref

import numpy as np
import pytest
from clips import decode_index, make_corrupt_files, make_garbled_file, make_index_clip

from videomask.errors import VideoDecodeError, VideomaskError
from videomask.video import BACKENDS, VideoMeta, available_backends, call_with_timeout, open_video, probe

N = 48  # frames per generated clip
BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in available_backends(), reason=f"{name} not installed"))
    for name in BACKENDS
]

# name -> make_index_clip options; several GOPs, B-frames, long GOP, VFR, no timestamps at all
CLIPS = {
    "h264_bframes.mp4": dict(gop=12, bframes=3),
    "h264_longgop.mkv": dict(gop=40, bframes=3),
    "h264_opengop.mp4": dict(gop=12, bframes=3, options={"x264-params": "open-gop=1"}),
    "mpeg4_bframes.avi": dict(codec="mpeg4", gop=10, bframes=2),
    "vp9.webm": dict(codec="libvpx-vp9", gop=15),
    "vfr.mkv": dict(pts=[k * 40 + (k % 3) * 11 for k in range(N)]),
    "raw_stream.h264": dict(gop=12),
}
# decord cannot open a raw elementary stream (no container, no timestamps): the file is handed over to PyAV
DECORD_CANNOT = {"raw_stream.h264"}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("index_clips")
    for name, options in CLIPS.items():
        make_index_clip(folder / name, N, 64, 96, **options)
    return folder


def _open(path, backend):
    video = open_video(path, backend)
    if backend == "decord" and path.name in DECORD_CANNOT:
        assert video.backend == "pyav" and video.requested_backend == "decord"
        assert "decord cannot open" in video.fallback
    return video


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", list(CLIPS))
def test_sequential_decode_gives_every_frame_in_order(clip_dir, name, backend):
    with _open(clip_dir / name, backend) as video:
        assert video.meta.num_frames == N
        frames = video.read_all()
    assert frames.shape == (N, 64, 96, 3) and frames.dtype == np.uint8
    assert [decode_index(f) for f in frames] == list(range(N))


@pytest.mark.parametrize("gap", [1, 16], ids=["seek-eagerly", "seek-default"])
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", list(CLIPS))
def test_random_reads_equal_sequential_decode(clip_dir, name, backend, gap):
    with _open(clip_dir / name, backend) as video:
        reference = video.read_all()
    rng = np.random.default_rng(7)
    index_sets = [
        [int(i) for i in rng.integers(0, N, 10)],  # random, unsorted, maybe duplicates
        sorted(int(i) for i in rng.choice(N, 8, replace=False)),
        list(range(N - 1, -1, -7)),  # backwards
        [N - 1, 0, N - 1, 5, 5],
        list(range(3, N, 4))[:16],  # a VideoMAE-style clip: stride 4
    ]
    with _open(clip_dir / name, backend) as video:  # one reader across reads: its decoder state must not leak
        video.seek_min_gap = gap  # 1: seek at every keyframe crossed (most seeks); 16: the default
        for indices in index_sets:
            got = video.read(indices)
            assert got.shape == (len(indices), 64, 96, 3)
            np.testing.assert_array_equal(got, reference[indices])
    for indices in index_sets[:2]:  # and fresh readers
        with _open(clip_dir / name, backend) as video:
            video.seek_min_gap = gap
            np.testing.assert_array_equal(video.read(indices), reference[indices])


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_seeks_are_used_when_timestamps_are_sound(clip_dir, backend):
    with open_video(clip_dir / "h264_bframes.mp4", backend) as video:
        got = video.read([40, 3, 30])  # keyframes every 12 frames: 3 from the start, seek to 24 for 30
        assert video.seek_ok and video.num_seeks == 1
    with open_video(clip_dir / "h264_bframes.mp4", backend) as video:
        video.seek_min_gap = 1
        got = video.read([40, 3, 30])  # ... and to 36 for 40 when seeking eagerly
        assert video.seek_ok and video.num_seeks == 2
    assert [decode_index(f) for f in got] == [40, 3, 30]
    with open_video(clip_dir / "raw_stream.h264", backend) as video:  # no pts: sequential path only
        assert [decode_index(f) for f in video.read([40, 3])] == [40, 3]
        assert not video.seek_ok and video.num_seeks == 0


def test_pyav_falls_back_when_pts_do_not_match_the_index(clip_dir):
    with open_video(clip_dir / "h264_bframes.mp4") as video:
        reference = video.read_all()
    with open_video(clip_dir / "h264_bframes.mp4") as video:
        # pretend the index is off by one frame: decoded pts no longer line up, so seeking must be dropped
        video._pts_to_index.update({p: k + 1 for p, k in video._pts_to_index.items()})  # in place: the decoder holds it
        got = video.read([30, 2, 45])
        assert not video.seek_ok
    np.testing.assert_array_equal(got, reference[[30, 2, 45]])


def test_pyav_stays_exact_when_keyframe_table_lies(clip_dir):
    """Seeking to a non-keyframe lands on an earlier keyframe; frames are still identified by pts."""
    with open_video(clip_dir / "h264_longgop.mkv") as video:
        reference = video.read_all()
    with open_video(clip_dir / "h264_longgop.mkv") as video:
        video._index.keyframes = list(range(N))  # every frame claimed to be a keyframe
        video.seek_min_gap = 1
        indices = [37, 11, 44, 20, 21, 5]
        np.testing.assert_array_equal(video.read(indices), reference[indices])
        assert video.num_seeks >= 3 and video.seek_ok


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_metadata(clip_dir, backend):
    with open_video(clip_dir / "h264_bframes.mp4", backend) as video:
        meta = video.meta
    assert isinstance(meta, VideoMeta)
    assert (meta.num_frames, meta.height, meta.width, meta.rotation) == (N, 64, 96, 0)
    assert meta.fps == pytest.approx(25.0)
    assert meta.duration == pytest.approx(N / 25.0, abs=0.05)
    assert (meta.codec, meta.pix_fmt) == ("h264", "yuv420p")
    assert probe(clip_dir / "mpeg4_bframes.avi").codec == "mpeg4"
    vfr = probe(clip_dir / "vfr.mkv")
    assert vfr.num_frames == N and vfr.duration == pytest.approx(
        ((N - 1) * 40 + ((N - 1) % 3) * 11) / 1000 + 0.04, abs=0.05
    )


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path, backend, rotation):
    path = make_index_clip(tmp_path / f"rot{rotation}.mp4", 12, 64, 96, rotation=rotation)
    with open_video(path, backend) as video:
        assert video.meta.rotation == rotation
        expected_hw = (96, 64) if rotation in (90, 270) else (64, 96)
        assert (video.meta.height, video.meta.width) == expected_hw
        frames = video.read([7, 2])
    assert frames.shape == (2, *expected_hw, 3)
    # undo the clockwise display rotation: the code is readable again only if it was applied correctly
    upright = [np.rot90(f, k=rotation // 90) for f in frames]
    assert [decode_index(f) for f in upright] == [7, 2]
    assert decode_index(frames[0]) != 7 or rotation == 0


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    "options",
    [
        dict(codec="ffv1", pix_fmt="gray", height=64, width=96),
        dict(codec="libx264", pix_fmt="yuv422p10le", height=64, width=96),
        dict(codec="libx264", pix_fmt="yuv444p", height=33, width=47, gop=8),
        dict(codec="ffv1", pix_fmt="yuv420p", height=35, width=51),
        dict(codec="mjpeg", pix_fmt="yuvj422p", height=48, width=80),
        dict(codec="libx264", pix_fmt="yuv420p", height=16, width=16),
    ],
    ids=["gray", "10bit", "odd444", "odd420", "mjpeg", "tiny"],
)
def test_pixel_formats_and_odd_sizes(tmp_path, backend, options):
    options = dict(options)
    height, width = options.pop("height"), options.pop("width")
    suffix = ".avi" if options["codec"] == "mjpeg" else ".mkv"
    path = make_index_clip(tmp_path / f"clip{suffix}", 20, height, width, **options)
    with open_video(path, backend) as video:
        if backend == "decord" and width == 16:  # decord returns [16, 16, 6] frames here: handed over at open
            assert video.backend == "pyav" and "decord cannot decode" in video.fallback
        assert (video.meta.height, video.meta.width, video.meta.num_frames) == (height, width, 20)
        frames = video.read([19, 0, 8])
        reference = video.read_all()
    assert frames.shape == (3, height, width, 3) and frames.dtype == np.uint8
    assert [decode_index(f) for f in frames] == [19, 0, 8]
    np.testing.assert_array_equal(frames, reference[[19, 0, 8]])
    if options["pix_fmt"] == "gray":
        assert np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(frames[..., 1], frames[..., 2])


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    return make_corrupt_files(tmp_path_factory.mktemp("corrupt"))


@pytest.mark.parametrize("backend", BACKEND_PARAMS + ["auto"])
@pytest.mark.parametrize("case", ["zero_byte", "truncated", "random_bytes", "text", "unknown_codec"])
def test_broken_files_raise_video_decode_error(corrupt, case, backend):
    with pytest.raises(VideoDecodeError) as info:
        with open_video(corrupt[case], backend) as video:
            video.read([0])
    message = str(info.value)
    assert "\n" not in message and str(corrupt[case]) in message
    assert isinstance(info.value, VideomaskError)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_one_frame_video_reads_frame_zero_only(corrupt, backend):
    with open_video(corrupt["one_frame"], backend) as video:
        assert video.meta.num_frames == 1
        assert decode_index(video.read([0, 0])[1]) == 0
        with pytest.raises(VideoDecodeError, match="out of range"):
            video.read([0, 1])


def test_user_mistakes(tmp_path, clip_dir):
    with pytest.raises(VideoDecodeError, match="no such file"):
        open_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoDecodeError, match="unknown video backend"):
        open_video(clip_dir / "vfr.mkv", backend="ffmpeg-cli")
    video = open_video(clip_dir / "vfr.mkv")
    with pytest.raises(VideoDecodeError, match="out of range"):
        video.read([-1])
    with video:
        pass
    with pytest.raises(VideoDecodeError, match="closed"):
        video.read([0])


def test_auto_backend_is_the_fastest_measured(clip_dir):
    with open_video(clip_dir / "raw_stream.h264", backend="auto") as video:
        assert video.backend == "pyav"
        assert [decode_index(f) for f in video.read([5, 1])] == [5, 1]
    with open_video(clip_dir / "vfr.mkv", backend="auto") as video:  # the fastest measured (decode.md): PyAV
        assert video.backend == video.requested_backend == "pyav" and video.fallback is None


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_read_under_call_with_timeout_cuts_a_slow_decode(clip_dir, backend):
    """The public timeout path (the one VideoDataset(timeout=) takes): the caller gets a VideoDecodeError in
    time while the decode goes on in the abandoned worker thread."""
    video = open_video(clip_dir / "raw_stream.h264", "pyav" if backend == "decord" else backend)
    real = video._frame
    stop, abandoned = threading.Event(), []

    def slow(index):  # a decode that takes 0.3 s per frame
        abandoned.append(threading.current_thread())
        if stop.wait(0.3):
            raise VideoDecodeError("stopped by the test")
        return real(index)

    video._frame = slow
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match="timed out after 0.05 s"):
        call_with_timeout(lambda: video.read(range(N)), 0.05, what="decode")
    assert time.monotonic() - start < 0.25  # released before the first frame is even decoded
    stop.set()  # end the abandoned decode: a thread still inside a C++ decoder at interpreter exit aborts it
    abandoned[0].join(timeout=10.0)
    assert not abandoned[0].is_alive()
    with open_video(clip_dir / "raw_stream.h264", backend) as fresh:  # a new reader decodes normally
        assert [decode_index(f) for f in call_with_timeout(lambda: fresh.read([1, 0]), 30.0)] == [1, 0]


def test_call_with_timeout():
    assert call_with_timeout(lambda: 3, 1.0) == 3
    assert call_with_timeout(lambda: 4, None) == 4
    with pytest.raises(VideoDecodeError, match="timed out"):
        call_with_timeout(lambda: time.sleep(2.0), 0.05)
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 / 0, 1.0)


def _live_pyav_objects() -> int:
    """PyAV containers, streams and codec contexts the cyclic GC knows of (alive now)."""
    import av

    kinds = (av.container.InputContainer, av.stream.Stream, av.codec.context.CodecContext)
    return sum(issubclass(type(o), kinds) for o in gc.get_objects())  # type(): no __class__ lookups


@pytest.mark.parametrize("close", [True, False])
def test_pyav_reader_frees_its_decoder_without_the_cyclic_gc(clip_dir, close):
    """No reference cycle holds a PyAV reader or its container / stream / codec context / generators: they
    (and FFmpeg's decoder memory and threads) go when the reader is closed or dropped, not at the next
    cyclic GC (which came rarely enough that ``videomask fit``'s peak RSS grew with the number of clips)."""
    gc.collect()
    before = _live_pyav_objects()
    gc.disable()
    try:
        refs = []
        for name, indices in [
            ("h264_bframes.mp4", [30, 2, 45]),  # seeks
            ("raw_stream.h264", [5, 1]),  # no pts: sequential path, restarts
            ("vfr.mkv", list(range(N))),
        ]:  # forward decode to the end
            video = open_video(clip_dir / name)
            video.read(indices)
            refs.append(weakref.ref(video))
            if close:
                video.close()
                assert _live_pyav_objects() == before, f"{name}: PyAV objects alive after close()"
            del video
            assert refs[-1]() is None, f"{name}: the reader is kept alive by a reference cycle"
            assert _live_pyav_objects() == before, f"{name}: PyAV objects left for the cyclic GC"
        with open_video(clip_dir / "h264_bframes.mp4") as video:  # the sequential fallback after a bad seek
            video._pts_to_index.update(
                {p: k + 1 for p, k in video._pts_to_index.items()}
            )  # in place: the decoder holds it
            video.read([30, 2])
            assert not video.seek_ok
        assert _live_pyav_objects() == before
    finally:
        gc.enable()


def test_call_with_timeout_reuses_its_worker_thread():

    me = threading.current_thread()
    first = call_with_timeout(threading.current_thread, 5.0)
    assert first is not me and first.name == "videomask-decode" and first.daemon
    assert call_with_timeout(threading.current_thread, 5.0) is first  # one thread, reused
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 / 0, 5.0)
    assert call_with_timeout(threading.current_thread, 5.0) is first  # an error does not lose the worker
    assert call_with_timeout(threading.current_thread, None) is me  # no timeout: inline
    stuck = threading.Event()
    with pytest.raises(VideoDecodeError, match="timed out"):
        call_with_timeout(lambda: stuck.wait(5.0), 0.05)
    assert call_with_timeout(threading.current_thread, 5.0) is not first  # the timed-out worker is not reused
    stuck.set()
    first.join(5.0)
    assert not first.is_alive()  # and it ends once its call returned
    # concurrent callers get workers of their own (no caller waits for another one's decode)
    gate = threading.Barrier(3, timeout=5.0)
    out: list = []
    callers = [
        threading.Thread(
            target=lambda: out.append(call_with_timeout(lambda: (gate.wait(), threading.current_thread())[1], 5.0))
        )
        for _ in range(3)
    ]
    for t in callers:
        t.start()
    for t in callers:
        t.join(10.0)
    assert len(out) == 3 and len({id(t) for t in out}) == 3


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_sparse_read_of_large_frames_holds_only_requested_frames(tmp_path, backend):
    height, width, frames = 1088, 1920, 24
    path = make_index_clip(tmp_path / "big.mp4", frames, height, width, gop=8, bframes=0)
    frame_bytes = height * width * 3
    with open_video(path, backend) as video:
        tracemalloc.start()
        got = video.read([21, 2])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert [decode_index(f) for f in got] == [21, 2]
    # the output (2 frames; OpenCV's first read also holds its check frame, frame 1) plus a few frames of
    # conversion buffers, never the 24 frames of the video
    assert peak < 7 * frame_bytes, f"peak {peak / 1e6:.1f} MB for two {frame_bytes / 1e6:.1f} MB frames"


def test_call_with_timeout_abandons_a_read_stuck_in_the_library(clip_dir, monkeypatch):
    video = open_video(clip_dir / "vfr.mkv")

    def stuck(index):  # a decoder call that never returns in time
        time.sleep(1.5)
        raise AssertionError("unreachable for the caller")

    monkeypatch.setattr(video, "_frame", stuck)
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match="timed out"):
        call_with_timeout(lambda: video.read([3]), 0.05)
    assert time.monotonic() - start < 1.2  # the caller is released before the stuck call returns


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_garbled_file_reads_consistently_or_raises_video_decode_error(tmp_path, backend, suffix):
    path = make_garbled_file(tmp_path / f"garbled{suffix}")
    try:
        with open_video(path, backend) as video:
            everything = video.read_all()
            n = video.meta.num_frames
            got = video.read([n - 1, 0, n // 2, 3])
            assert got.shape == (4, 64, 96, 3)
            # frames before the damage are exact; inside it, error concealment depends on what was decoded
            # before, so a seek-based read may differ from the sequential decode there (a known limit)
            np.testing.assert_array_equal(got[[1, 3]], everything[[0, 3]])
    except VideoDecodeError as err:
        assert "\n" not in str(err) and str(path) in str(err)


@pytest.mark.skipif("decord" not in available_backends(), reason="decord not installed")
def test_decord_get_batch_is_not_trusted_where_its_timestamps_are_wrong(clip_dir):
    """decord's get_batch returns wrong frames on B-frame MPEG-4 AVI (its timestamps are garbage there):
    the reader must notice and use decord's sequential path."""
    import decord

    path = clip_dir / "mpeg4_bframes.avi"
    raw = decord.VideoReader(str(path)).get_batch([3, 7, 15, 2]).asnumpy()
    raw_codes = [decode_index(f) for f in raw]
    with open_video(path, "decord") as video:
        assert not video.seek_ok
        assert [decode_index(f) for f in video.read([3, 7, 15, 2])] == [3, 7, 15, 2]
    with open_video(clip_dir / "h264_opengop.mp4", "decord") as video:  # wrong frames near open-GOP keyframes
        assert not video.seek_ok
        assert [decode_index(f) for f in video.read([11, 12, 13, 0])] == [11, 12, 13, 0]
    with open_video(clip_dir / "h264_bframes.mp4", "decord") as video:
        assert video.seek_ok  # and trusted where its timestamps match the index
    if raw_codes == [3, 7, 15, 2]:
        pytest.skip("this decord build seeks this file correctly; the check above still held")


def test_auto_order_is_the_recorded_measurement():
    """AUTO_ORDER is the order of videomask's backends by CPU clips/s in benchmarks/results/decode.md (Part 1)."""
    import re
    from pathlib import Path

    from videomask.video import AUTO_ORDER

    text = (Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "decode.md").read_text()
    part1 = text[text.index("Part 1:") :]
    speed = {m[0]: float(m[1]) for m in re.findall(r"^\| videomask\[(\w+)\] \| ([\d.]+) \|", part1, re.M)[:3]}
    assert set(speed) == set(AUTO_ORDER)
    assert list(AUTO_ORDER) == sorted(speed, key=speed.get, reverse=True)
