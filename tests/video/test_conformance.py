"""Conformance: every backend on a corpus of codecs and containers (tests/corpus.py) returns PyAV's
sequential decode (within the colour-conversion tolerance of videomask.video.frames_differ) or hands the
file over to PyAV, never different pixels; per-file verification and FFmpeg log handling."""

from __future__ import annotations

import logging
import zlib

import av
import numpy as np
import pytest
from clips import decode_index, encode_index_frame, make_garbled_file, make_index_clip
from corpus import CORPUS, FRAMES, HEIGHT, WIDTH, make_corpus, missing_encoders

from videomask import video as vv
from videomask.video import (
    BACKENDS,
    available_backends,
    forget_verdicts,
    frames_differ,
    open_video,
    verify,
)

BACKEND_PARAMS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in available_backends(), reason=f"{name} not installed"))
    for name in BACKENDS
] + ["auto"]
NAMES = [
    pytest.param(
        name, marks=pytest.mark.skipif(name in missing_encoders(), reason=f"no {CORPUS[name].get('codec')} encoder")
    )
    for name in CORPUS
]


def pyav_sequential(path) -> np.ndarray:
    """Plain PyAV: decode every frame from the start, RGB, upright (the reference); cropped exactly to the
    picture (``Flags.unaligned``: else FFmpeg keeps columns of a left crop, see theora_offset.ogv)."""
    rotation = vv.probe(path).rotation
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.flags |= av.codec.context.Flags.unaligned
        frames = [vv.convert.rotate(f.to_ndarray(format="rgb24"), rotation) for f in container.decode(stream)]
    return np.stack(frames)  # [N, H, W, 3]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    files = make_corpus(tmp_path_factory.mktemp("corpus"))
    references = {}
    for name, path in files.items():
        ref = pyav_sequential(path)
        rotation = vv.probe(path).rotation
        upright = [np.rot90(f, k=rotation // 90) for f in ref]  # the display rotation undone
        # the reference itself is right: frame k carries k, and it is the picture that was encoded, its size
        # and its pixels within the codec's loss (measured: at most 3.6/255 per frame; a picture one column
        # off gives 4.6, the next frame far more)
        assert [decode_index(f) for f in upright] == list(range(FRAMES)), name
        height, width = CORPUS[name].get("height", HEIGHT), CORPUS[name].get("width", WIDTH)
        for k, frame in enumerate(upright):
            encoded = encode_index_frame(k, height, width).astype(np.float32)  # [H, W, 3]
            if name.startswith("gray"):
                encoded = np.repeat(encoded.mean(axis=2, keepdims=True), 3, axis=2)
            assert frame.shape == encoded.shape, (name, frame.shape)
            assert np.abs(frame.astype(np.float32) - encoded).mean() <= 4.0, (name, k)
        references[name] = ref
    return files, references


def test_corpus_covers_the_formats(corpus):
    files, _ = corpus
    made = set(files)
    assert made == set(CORPUS) - set(missing_encoders())
    codecs = {vv.probe(p).codec for p in files.values()}
    assert {"mpeg1video", "mpeg2video", "theora", "vp8", "vp9", "mjpeg", "mpeg4", "h264", "ffv1"} <= codecs
    assert {p.suffix for p in files.values()} >= {".mpg", ".ts", ".ogv", ".webm", ".mov", ".avi", ".mp4", ".mkv"}


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", NAMES)
def test_backend_equals_pyav_sequential_decode_or_hands_over(corpus, name, backend):
    files, references = corpus
    path, ref = files[name], references[name]
    forget_verdicts()  # verify this file now
    rng = np.random.default_rng(zlib.crc32(f"{name}/{backend}".encode()))
    sparse = [int(i) for i in rng.integers(0, FRAMES, 8)]
    with open_video(path, backend) as video:
        assert (video.meta.num_frames, video.meta.height, video.meta.width) == (FRAMES, *ref.shape[1:3])
        first = video.read(sparse)  # the first read is the one that is verified
        every = video.read_all()
        clip = video.read(list(range(2, FRAMES, 4)))
        decoder = video.backend
    for indices, got in [(sparse, first), (list(range(FRAMES)), every), (list(range(2, FRAMES, 4)), clip)]:
        assert got.shape == (len(indices), *ref.shape[1:]) and got.dtype == np.uint8
        for i, frame in zip(indices, got):
            why = frames_differ(frame, ref[i])
            assert why is None, f"{name} [{backend} -> {decoder}] frame {i}: {why}"
        if decoder == "pyav":  # PyAV itself (default or after a hand-over) is exact
            np.testing.assert_array_equal(got, ref[indices])
    # the checked first read gives the pixels every later read of the file gives (whatever the verdict
    # state: a resumed run, a new DataLoader worker), the same backend's
    np.testing.assert_array_equal(first, every[sparse])
    with open_video(path, backend) as again:  # verdict remembered: no check this time
        np.testing.assert_array_equal(again.read(sparse), first)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_reader_is_exact_from_every_keyframe(corpus, name, backend):
    """A clip that starts at a keyframe, or just after one, read by a fresh reader (its first read is a seek
    there). In the MPEG-1 program stream a seek made the demuxer give the packets other pts than a pass from
    the start (the keyframe's one frame earlier): PyAV gave frame 25 for 24, 27 for 26 and 29 for 28 before
    its order check saw the break."""
    files, references = corpus
    path, ref = files[name], references[name]
    forget_verdicts()
    found = vv.meta.open_probe(str(path), threads=1)
    found.container.close()
    keys = [k for k in found.index.keyframes if 0 < k < FRAMES - 1]
    for start in [k + d for k in keys for d in (0, 1)]:
        indices = [min(start + 2 * i, FRAMES - 1) for i in range(4)]
        with open_video(path, backend) as video:
            got = video.read(indices)
            decoder = video.backend
        for i, frame in zip(indices, got):
            why = frames_differ(frame, ref[i])
            assert why is None, f"{name} [{backend} -> {decoder}] clip from {start}, frame {i}: {why}"
        if decoder == "pyav":
            np.testing.assert_array_equal(got, ref[indices], err_msg=f"{name}: clip from {start}")


def test_pyav_seeks_in_packed_bframes(corpus):
    """PyAV's reader counts frames after a seek in a packed B-frame AVI (pts swapped in pairs) instead of
    decoding from frame 0 for every clip: forward within the file or one seek a clip, seeking still trusted,
    the sequential decode's frames."""
    files, references = corpus
    ref = references["mpeg4_packed.avi"]
    for reads, seeks in [([[2, 3, 6], [13, 14, 15, 20]], 0), ([[25, 27, 29, 35]], 1), ([[30], [13, 15]], 2)]:
        with open_video(files["mpeg4_packed.avi"], "pyav") as video:
            for indices in reads:
                np.testing.assert_array_equal(video.read(indices), ref[indices], err_msg=str(indices))
            assert video.seek_ok and video.num_seeks == seeks, reads


@pytest.mark.parametrize("name", [n for n in NAMES if n.values[0].endswith(".ts")])
def test_pyav_goes_back_to_the_start_of_a_transport_stream(corpus, name):
    """A seek back to keyframe 0 of an MPEG transport stream lands after it; the reader opens the file anew
    there instead of giving up seeking for the rest of the file, and stays exact."""
    files, references = corpus
    with open_video(files[name], "pyav") as video:
        for indices in ([30], [5, 7], [26], [2]):
            np.testing.assert_array_equal(video.read(indices), references[name][indices])
        assert video.seek_ok and video.num_seeks == 4


def cheapest_check(wanted: list[int], path) -> int:
    """OpenCV's check frame: of the requested frames other than 0 and the first frame OpenCV decodes on its way
    to the first of them, the one cheapest for PyAV to give (videomask.video's
    cost: packet bytes, 400 + pixels / 100 per decoded frame, 500 per seek), from the keyframe before it
    (from frame 1 in the first GOP, the probe having decoded frame 0), sizes from a plain PyAV demux."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pixels = stream.codec_context.width * stream.codec_context.height
        packets = sorted((p.pts, p.size, p.is_keyframe) for p in container.demux(stream) if p.size)
    sizes = [size for _, size, _ in packets]
    keys = [k for k, (_, _, is_key) in enumerate(packets) if is_key]

    def cost(i: int) -> int:
        key = max(k for k in keys if k <= i)
        start = max(key, 1)
        return sum(sizes[start : i + 1]) + (i + 1 - start) * (400 + pixels // 100) + (500 if key else 0)

    requested = sorted(i for i in wanted if i != 0)
    key = max(k for k in keys if k <= requested[0])
    # decoded on the way to the first requested frame: grabbing from frame 0 (keyframe within 16 frames), or
    # after OpenCV's own seek, which starts 16 frames before its target (+2 for its seek by time)
    after_key = key + 1 if key <= 16 else key + 18
    candidates = requested + ([after_key] if after_key < requested[0] else [])
    return min(candidates, key=lambda i: (cost(i), i))


def test_verification_catches_wrong_frames_and_remembers_the_verdict(corpus, monkeypatch, caplog):
    files, references = corpus
    path = files["h264_bframes.mp4"]
    forget_verdicts()
    real = vv.OpenCVReader._frame

    def off_by_one(self, index):  # a backend that returns the next frame
        return real(self, min(index + 1, FRAMES - 1))

    monkeypatch.setattr(vv.OpenCVReader, "_frame", off_by_one)
    with caplog.at_level(logging.WARNING, logger="videomask.video"):
        with open_video(path, "opencv") as video:
            assert video.backend == "opencv" and video.verified is None  # frame 0 agreed at open
            got = video.read([13, 20, 4])
            assert video.backend == "pyav" and video.verified is False
            assert f"opencv's frame {cheapest_check([13, 20, 4], path)} differs" in video.fallback
        np.testing.assert_array_equal(got, references["h264_bframes.mp4"][[13, 20, 4]])
        lines = [r for r in caplog.records if "using PyAV instead of opencv" in r.getMessage()]
        assert len(lines) == 1
        with open_video(path, "opencv") as again:  # the verdict is remembered: PyAV straight away, no new line
            assert type(again) is vv.PyAVReader and again.requested_backend == "opencv"
            assert "differs" in again.fallback
        assert len([r for r in caplog.records if "using PyAV instead" in r.getMessage()]) == 1


@pytest.mark.parametrize("name", NAMES)
def test_check_shortcut_gives_pyav_sequential_frames(corpus, name):
    """The verification's cheap PyAV decode (probe decoder for the first GOP, counting frames; else seek and
    count on from the first frame's pts) gives the sequential decode's frame on every corpus file, the packed
    B-frame AVI too, whose pts are swapped in pairs (targets 13, 19, 25 and 31 come out under their
    neighbour's pts and are confirmed by the next frame; an order check declined every target after a seek
    there, and PyAV's reader decoded from frame 0)."""
    import bisect

    files, references = corpus
    path, ref = files[name], references[name]
    decoded = 0
    for target in range(1, FRAMES, 3):
        found = vv.meta.open_probe(str(path), threads=1)
        try:
            keys = found.index.keyframes
            key = keys[bisect.bisect_right(keys, target) - 1] if keys else 0
            frame = vv.frames.decode_one(found, found.index, target, key)
            if frame is not None:
                decoded += 1
                np.testing.assert_array_equal(
                    vv.convert.rotate(vv.convert.to_rgb(frame), found.meta.rotation), ref[target]
                )
        finally:
            found.container.close()
    assert decoded == 12, f"{name}: the shortcut declined {12 - decoded} of 12 targets"


@pytest.mark.parametrize(
    "positions, taken, in_step",
    [
        ([12, 13, 14], [True] * 3, [True] * 3),  # in order
        ([12, 14, 13, 16, 15], [True] * 5, [True, False, True, False, True]),  # packed B-frames: pts swapped in pairs
        ([12, 14, 15, 16], [True] * 4, [True, False, False, False]),  # frame 13 dropped: never in step again
        ([12, 14, 12], [True, True, False], [True, False]),  # a frame seen before
        ([12, 15], [True, False], [True]),  # two away from the count
        ([12, 11], [True, False], [True]),  # before the first
    ],
)
def test_frame_counter(positions, taken, in_step):
    """The frames after a seek are counted from the first one's pts; a pts may name the count's neighbour (packed
    B-frames), and a count is trusted only in step (every frame up to it seen), which a dropped frame never is."""
    counter = vv.frames.FrameCounter()
    got_taken, got_in_step = [], []
    for pos in positions:
        got_taken.append(counter.take(pos))
        if not got_taken[-1]:
            break
        got_in_step.append(counter.in_step)
    assert got_taken == taken
    assert got_in_step == in_step
    assert counter.count == 12 + len(got_taken) - 1


@pytest.mark.parametrize(
    "positions, from_start, named, breaks",
    [
        ([0, 1, 2], True, [0, 1, 2], False),
        ([1, 2], True, [], True),  # from the start, the first frame must be frame 0
        ([12, 14, 13, 16, 15], False, [12, 13, 14, 15, 16], False),  # packed B-frames
        ([12, 14, 15, 16], False, [12], True),  # frame 13 dropped: 14 is never confirmed as 13
        ([12, 14], False, [12], True),  # the video ends before the count of the last frame is confirmed
    ],
)
def test_named_frames(positions, from_start, named, breaks):
    """Decoded frames get their index from the count (the frames' own pts in the order given), a frame out of
    step only once the next one brings the count in step; a broken rule raises (the reader then decodes
    from the start)."""

    class Frame:
        def __init__(self, pts: int) -> None:
            self.pts = pts

    frames = [Frame(100 * k) for k in positions]
    got: list[tuple[int, int]] = []
    try:
        for frame, index in vv.frames.named(iter(frames), lambda pts: pts // 100, from_start=from_start):
            got.append((frame.pts // 100, index))
        broke = False
    except vv.frames.Unreliable:
        broke = True
    assert [index for _, index in got] == named and broke == breaks
    assert [pos for pos, _ in got] == positions[: len(got)]  # each frame given once, in the decoder's order


@pytest.mark.parametrize("backend", [b for b in ("opencv", "decord") if b in available_backends()])
def test_long_gop_check_uses_the_frame_after_the_keyframe(tmp_path, monkeypatch, backend):
    """With one keyframe every 60 frames, a read deep inside a GOP is checked on a frame the backend decodes
    on its way (not in the result), not on a requested frame PyAV would decode the GOP for: the frame after
    the keyframe, or for OpenCV after a seek the frame 18 after it (OpenCV's own seek to the frame after the
    keyframe would start a GOP earlier; from keyframe 60 it can give frame 76 first), read with the one seek
    the clip needs. A backend wrong on that frame alone is caught."""
    path = make_index_clip(tmp_path / "long_gop.mp4", 120, 48, 64, gop=60, bframes=2)
    checked: list[int] = []
    decode_one = vv.frames.decode_one
    monkeypatch.setattr(
        verify, "decode_one", lambda found, index, t, key: checked.append(t) or decode_one(found, index, t, key)
    )
    for wanted, expected, seeks in [([40, 44, 48], 1, 0), ([100, 104], 61 if backend == "decord" else 78, 1)]:
        forget_verdicts()
        checked.clear()
        with open_video(path, backend) as video:
            got = video.read(wanted)
            assert video.backend == backend and video.verified
            assert backend == "decord" or video.num_seeks == seeks
        assert checked == [expected] and got.shape == (len(wanted), 48, 64, 3)
        assert [decode_index(f) for f in got] == wanted
    real = type(video)._read
    for wanted, wrong in [([40, 44], 1), ([100, 104], 61 if backend == "decord" else 78)]:

        def wrong_on_one(self, indices, wrong=wrong):  # the check's frame alone comes out as the next one
            frames = real(self, indices)
            return np.stack([real(self, [wrong + 1])[0] if i == wrong else f for i, f in zip(indices, frames)])

        monkeypatch.setattr(type(video), "_read", wrong_on_one)
        forget_verdicts()
        with open_video(path, backend) as video:
            got = video.read(wanted)
            assert video.backend == "pyav" and f"frame {wrong} differs" in video.fallback
        assert [decode_index(f) for f in got] == wanted


@pytest.mark.parametrize("backend", [b for b in ("opencv", "decord") if b in available_backends()])
def test_a_backend_that_agrees_is_not_handed_over_on_packed_bframes(corpus, backend):
    """In a packed B-frame AVI (pts swapped in pairs) the check names its PyAV frame by counting, so OpenCV and
    decord, which give the right frames there, keep the file (checking frame 2 by its pts took frame 1 and
    handed the file over; on real DivX files that doubled the first read)."""
    files, references = corpus
    for wanted in ([2, 6], [14, 20]):  # the first GOP (frame 2 has frame 1's pts), after a seek
        forget_verdicts()
        with open_video(files["mpeg4_packed.avi"], backend) as video:
            got = video.read(wanted)
            assert video.backend == backend and video.verified, video.fallback
        np.testing.assert_array_equal(got, references["mpeg4_packed.avi"][wanted])


@pytest.mark.parametrize("backend", [b for b in ("opencv", "decord") if b in available_backends()])
@pytest.mark.parametrize("threads", [0, 1, 3])
def test_checks_decode_on_one_thread_and_a_hand_over_keeps_the_requested_threads(corpus, monkeypatch, backend, threads):
    """The PyAV decoder kept for the checks decodes on one thread whatever ``threads`` says (it decodes a frame
    or two, for which FFmpeg's frame threads cost more than they give); a file handed over to PyAV at open is
    then decoded with the requested ``threads``, and gives PyAV's frames."""
    files, references = corpus
    path = files["h264_bframes.mp4"]
    forget_verdicts()
    with open_video(path, backend, threads=threads) as video:
        assert video._check is not None and video._check.stream.codec_context.thread_count == vv.CHECK_THREADS == 1
    forget_verdicts()

    def differs(self, got, reference=None):  # a backend whose frame 0 disagrees: handed over at open
        raise vv.verify.Refused(f"{self.backend}'s frame 0 differs from PyAV's (test)")

    monkeypatch.setattr(vv.CheckedReader, "_verify_frame0", differs)
    with open_video(path, backend, threads=threads) as video:
        assert type(video) is vv.PyAVReader and "frame 0 differs" in video.fallback
        count = video._stream.codec_context.thread_count
        assert count == threads if threads else count > 1  # 0: FFmpeg's choice (cores + 1 frame threads)
        np.testing.assert_array_equal(video.read([0, 17, 3]), references["h264_bframes.mp4"][[0, 17, 3]])
    forget_verdicts()


def test_verified_files_skip_the_checks_next_time(corpus):
    files, _ = corpus
    path = files["vp9.webm"]
    forget_verdicts()
    with open_video(path, "opencv") as video:
        assert video._check is not None  # PyAV's decoder kept for the check
        video.read([5, 9])
        assert video.verified is True and video._check is None  # checked, and PyAV's decoder released
    with open_video(path, "opencv") as video:
        assert video.verified is True and video._check is None  # known good: no PyAV decoder at all
    with open_video(path, "opencv", verify=False) as video:
        assert video._check is None


def test_frame_count_disagreement_hands_over(corpus, monkeypatch):
    pytest.importorskip("decord")
    import decord

    files, references = corpus
    forget_verdicts()
    monkeypatch.setattr(decord.VideoReader, "__len__", lambda self: FRAMES - 3)
    with open_video(files["h264_bframes.mp4"], "decord") as video:
        assert video.backend == "pyav" and "counts 33 frames" in video.fallback
        np.testing.assert_array_equal(video.read([35, 1]), references["h264_bframes.mp4"][[35, 1]])


def test_frames_differ_tolerance():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert frames_differ(a, a) is None
    noise = np.clip(a.astype(int) + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    assert frames_differ(noise, a) is None  # conversion-level differences agree
    assert frames_differ(np.roll(a, 1, axis=1), a) is not None  # a different picture does not
    assert "shape" in frames_differ(a[:, :32], a)


@pytest.mark.skipif("decord" not in available_backends(), reason="decord not installed")
def test_decord_ffmpeg_messages_are_one_log_line_not_stderr(tmp_path, capfd, caplog):
    vv.enable_ffmpeg_log_capture()  # as a VideoDataset's process set-up does
    path = make_garbled_file(tmp_path / "garbled.mp4")
    forget_verdicts()
    with caplog.at_level(logging.WARNING, logger="videomask.video"):
        for _ in range(2):
            try:
                with open_video(path, "decord", verify=False) as video:
                    video.read_all()
            except vv.VideoDecodeError:
                pass
    err = capfd.readouterr().err
    assert "[h264 @" not in err, err[:500]
    ffmpeg_lines = [r for r in caplog.records if "FFmpeg reported" in r.getMessage()]
    assert len(ffmpeg_lines) == 1 and str(path) in ffmpeg_lines[0].getMessage()


def test_opencv_ffmpeg_messages_do_not_reach_stderr(corpus, tmp_path, capfd):
    vv.enable_ffmpeg_log_capture()  # as a VideoDataset's process set-up does
    files, _ = corpus
    for path in [files["h264_ts.ts"], make_garbled_file(tmp_path / "garbled.mp4")]:  # both make FFmpeg complain
        try:
            with open_video(path, "opencv", verify=False) as video:
                video.read_all()
        except vv.VideoDecodeError:
            pass
    assert "[h264 @" not in capfd.readouterr().err


def test_decode_benchmark_reports_exact_wrong_refused(corpus):
    """benchmarks/decode.py's agreement table classifies loaders instead of asserting."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import decode

    files, _ = corpus
    clips = [files["h264_bframes.mp4"], files["vp9.webm"]]

    def shifted(path):  # the next frames: wrong pixels
        with open_video(path) as video:
            return video.read([min(i + 1, FRAMES - 1) for i in decode.indices_for(FRAMES)])

    def refuses(path):
        raise vv.VideoDecodeError(f"{path}: no")

    loaders = {"videomask[pyav]": lambda p: decode.load_videomask(p, "pyav", 1), "shifted": shifted, "refuses": refuses}
    lines, readable = decode.agreement(clips, loaders, files["vp9.webm"].parent)
    table = "\n".join(lines)
    assert "| h264_bframes.mp4 | exact | wrong (" in table and "refused (VideoDecodeError)" in table
    assert lines[-1].endswith("| 2/0/0/0 | 0/0/2/0 | 0/0/0/2 |")
    assert readable["videomask[pyav]"] == clips and readable["shifted"] == readable["refuses"] == []


def test_exactness_benchmark_counts_wrong_frames(corpus, tmp_path, monkeypatch, capsys):
    """benchmarks/exactness.py reads every backend from keyframes and at random against the sequential
    decode: 0 wrong on the MPEG-1 program stream and the packed B-frame AVI (PyAV gave 3 wrong frames from
    keyframe 24 of the first before), and a backend that gives the next frame is counted wrong."""
    import shutil
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import exactness

    files, _ = corpus
    for name in ("mpeg1_ps.mpg", "mpeg4_packed.avi"):
        shutil.copy(files[name], tmp_path / name)
    exactness.main(["--footage", str(tmp_path), "--keyframes", "3", "--reads", "2"])

    def cells(out: str) -> dict[str, list[str]]:  # the table's rows by file
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines()]
        return {row[0]: row[2:] for row in rows if len(row) > 2}

    rows = cells(capsys.readouterr().out)
    assert set(rows) >= {"mpeg1_ps.mpg", "mpeg4_packed.avi", "**total**"}
    totals = rows["**total**"]
    assert len(totals) == len(available_backends())
    assert all(cell.startswith("0 / ") and int(cell.split(" / ")[1]) > 50 for cell in totals), totals

    real = vv.PyAVReader._frame
    monkeypatch.setattr(vv.PyAVReader, "_frame", lambda self, i: real(self, min(i + 1, FRAMES - 1)))
    exactness.main(["--footage", str(tmp_path), "--keyframes", "3", "--reads", "2", "--seed", "1"])
    pyav = cells(capsys.readouterr().out)["**total**"][0]  # the first column: the next frames are wrong
    assert not pyav.startswith("0 / "), pyav
