"""Probes on frozen features: labels from the footage (arrow of time, speed), time-split windows, decoding,
linear probe and kNN, and `videomask probe` end to end."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from videomask.errors import VideomaskError
from videomask.eval import (
    SPEED_STRIDES,
    arrow_indices,
    build_task_samples,
    knn_accuracy,
    linear_probe,
    speed_indices,
    task_span,
    time_split_windows,
)

SIZE = 32


def write_index_clip(path: Path, num_frames: int, size: int = SIZE) -> None:
    """A lossless clip (FFV1 in MKV) whose frame i is a flat grey of value 4*i (decodable back to i)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv444p"
        for i in range(num_frames):
            frame = np.full((size, size, 3), 4 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frame_ids(clip: torch.Tensor) -> list[int]:
    """uint8 [3, T, H, W] of index-encoded frames -> the frame index of each time step."""
    return [int(round(float(v) / 4)) for v in clip.float().mean(dim=(0, 2, 3))]


def test_arrow_reverses_the_frame_order():
    fwd = arrow_indices(10, 8, 2, reverse=False)
    rev = arrow_indices(10, 8, 2, reverse=True)
    assert fwd == [10, 12, 14, 16, 18, 20, 22, 24]
    assert rev == fwd[::-1]


def test_speed_classes_use_their_stride_inside_one_window():
    T, start = 8, 5
    span = task_span("speed", T)
    assert span == (T - 1) * max(SPEED_STRIDES) + 1
    for c, stride in enumerate(SPEED_STRIDES):
        idx = speed_indices(start, T, c)
        assert len(idx) == T
        assert all(b - a == stride for a, b in zip(idx, idx[1:]))
        assert start <= idx[0] and idx[-1] < start + span


@pytest.mark.parametrize("n,span,gap", [(100, 15, 8), (250, 29, 0), (61, 29, 4), (300, 7, 20)])
def test_time_split_windows_never_overlap(n, span, gap):
    train, test = time_split_windows(n, span, train_share=0.7, gap=gap)
    cut = int(0.7 * n)
    frames = [set(range(s, s + span)) for s in train + test]
    for i, a in enumerate(frames):
        for b in frames[i + 1 :]:
            assert not a & b, "two windows share a frame"
    # with a smaller step, windows overlap inside a split but never across the split
    tr_step, te_step = time_split_windows(n, span, train_share=0.7, gap=gap, step=3)
    assert len(tr_step) >= len(train) and len(te_step) >= len(test)
    tr_frames = {f for s in tr_step for f in range(s, s + span)}
    te_frames = {f for s in te_step for f in range(s, s + span)}
    assert not tr_frames & te_frames
    assert all(s + span <= cut for s in train)
    assert all(s >= cut + gap and s + span <= n for s in test)
    if train and test:
        assert min(test) - (max(train) + span - 1) > gap


def test_build_task_samples_labels_and_splits():
    samples = build_task_samples(
        [("a.mkv", "a", 200), ("b.mkv", "b", 120)], "speed", num_frames=4, train_share=0.7, gap=5
    )
    assert {s.split for s in samples} == {"train", "test"}
    by_window: dict[int, list] = {}
    for s in samples:
        by_window.setdefault(s.window, []).append(s)
    for group in by_window.values():
        assert sorted(s.label for s in group) == list(range(len(SPEED_STRIDES)))
        assert len({(s.video_id, s.split) for s in group}) == 1
    # no frame of a train sample appears in a test sample of the same video
    for vid in ("a", "b"):
        tr = {f for s in samples if s.video_id == vid and s.split == "train" for f in s.indices}
        te = {f for s in samples if s.video_id == vid and s.split == "test" for f in s.indices}
        assert tr and te and not tr & te
    with pytest.raises(VideomaskError):
        build_task_samples([("a.mkv", "a", 200)], "colour", num_frames=4)


def test_decoded_labels_match_frame_content(tmp_path):
    pytest.importorskip("videomask.video")
    from videomask.eval import decode_samples

    path = tmp_path / "index.mkv"
    write_index_clip(path, 60)
    for task in ("arrow", "speed"):
        samples = build_task_samples([(str(path), "index.mkv", 60)], task, num_frames=4, gap=2)
        clips = decode_samples(samples, SIZE)
        assert clips.clips.shape[1:] == (3, 4, SIZE, SIZE)
        for i, s in enumerate(samples):
            ids = frame_ids(clips.clips[i])
            assert ids == list(s.indices)
            steps = [b - a for a, b in zip(ids, ids[1:])]
            if task == "arrow":
                assert all(d == (-2 if s.label == 1 else 2) for d in steps)
            else:
                assert all(d == SPEED_STRIDES[s.label] for d in steps)


def _blobs(n: int, d: int, classes: int, seed: int, sep: float):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * sep
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, d, generator=g)
    return x, y


def test_probe_separable_set_is_near_perfect():
    x, y = _blobs(240, 16, 3, seed=0, sep=6.0)
    res = linear_probe(x[:160], y[:160], x[160:], y[160:])
    assert res.accuracy >= 0.98
    assert knn_accuracy(x[:160], y[:160], x[160:], y[160:], k=5) >= 0.98


def test_probe_random_labels_is_near_chance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 16, generator=g)
    y = torch.randint(0, 2, (600,), generator=g)
    res = linear_probe(x[:400], y[:400], x[400:], y[400:])
    knn = knn_accuracy(x[:400], y[:400], x[400:], y[400:], k=5)
    assert 0.38 <= res.accuracy <= 0.62
    assert 0.38 <= knn <= 0.62


def test_probe_rejects_empty_splits():
    x, y = _blobs(10, 4, 2, seed=0, sep=3.0)
    with pytest.raises(VideomaskError):
        linear_probe(x[:0], y[:0], x, y)
    with pytest.raises(VideomaskError):
        knn_accuracy(x, y, x[:0], y[:0])


def test_probe_command_on_a_labelled_list(tmp_path, capsys):
    """`videomask probe` end to end: dark vs bright clips are separable even for a random-init encoder."""
    pytest.importorskip("videomask.video")
    import json

    from videomask.bench import write_lossless
    from videomask.cli import main

    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for i in range(12):
        label = i % 2
        frames = rng.integers(0, 60, (12, SIZE, SIZE, 3)) + (150 if label else 0)
        write_lossless(frames.astype(np.uint8), tmp_path / f"v{i}.mkv")
        rows.append(f"v{i}.mkv,{'bright' if label else 'dark'},{'train' if i < 8 else 'test'}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "probe.json"
    rc = main(
        [
            "probe",
            "--checkpoint",
            "tiny",
            "--data",
            str(tmp_path / "list.csv"),
            "--split-column",
            "split",
            "--num-frames",
            "4",
            "--sampling-rate",
            "2",
            "--size",
            str(SIZE),
            "--k",
            "3",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["classes"] == ["bright", "dark"]
    assert (result["num_train"], result["num_test"]) == (8, 4)
    assert result["linear"] == 1.0 and result["knn"] == 1.0
    assert "linear probe accuracy: 100.0%" in capsys.readouterr().out
    assert main(["probe", "--checkpoint", "tiny", "--data", str(tmp_path / "list.csv"), "--split-column", "nope"]) == 2
