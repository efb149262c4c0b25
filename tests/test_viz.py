"""Mask pictures: ``draw_frames`` pixels, and ``videomask show-masks`` for every registered masker."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_squares import square_inputs
from PIL import Image

from videomask.cli import main
from videomask.masking import available_maskers
from videomask.patches import grid_for
from videomask.viz import ANCHOR_COLOUR, MASK_GREY, draw_frames

NUM_FRAMES, SIZE, SCALE = 8, 64, 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return square_inputs(tmp_path_factory.mktemp("viz"), NUM_FRAMES, SIZE)


def test_draw_frames_shades_masked_patches_and_outlines_anchors():
    T, H, W, tubelet = 2, 32, 32, (2, 16, 16)
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    frames[..., 0] = 200  # red
    grid = grid_for((T, H, W), tubelet)
    mask = torch.zeros(grid.num_tokens, dtype=torch.bool)
    mask[0] = True  # the top-left patch
    anchors = torch.zeros(grid.num_tokens, dtype=torch.bool)
    anchors[3] = True  # the bottom-right patch
    plain, masked = draw_frames(frames, mask, tubelet, anchors=anchors, scale=1)
    assert plain.shape == masked.shape == (T, H, W, 3) and np.array_equal(plain, frames)
    shaded = np.round(0.25 * np.array([200, 0, 0]) + 0.75 * MASK_GREY)
    assert np.array_equal(masked[0, 5, 5], shaded) and np.array_equal(masked[1, 15, 15], shaded)
    assert np.array_equal(masked[0, 5, 20], [200, 0, 0])  # visible patch untouched
    assert tuple(masked[0, 16, 20]) == ANCHOR_COLOUR and tuple(masked[0, 31, 31]) == ANCHOR_COLOUR  # anchor border
    assert np.array_equal(masked[0, 24, 24], [200, 0, 0])  # anchor interior stays visible


def _options(name: str, inputs: dict[str, Path]) -> list[str]:
    if name == "difference":
        return ["--stats", str(inputs["stats"])]
    if name == "objects":
        return ["--boxes", str(inputs["boxes"]), "--alpha", "1"]
    return []


@pytest.mark.parametrize("name", available_maskers())
def test_show_masks_writes_gif_and_png_for_every_masker(name, inputs, tmp_path, capsys):
    out = tmp_path / f"{name}.gif"
    argv = [
        "show-masks",
        str(inputs["video"]),
        "--masker",
        name,
        "-o",
        str(out),
        "--num-frames",
        str(NUM_FRAMES),
        "--sampling-rate",
        "2",
        "--size",
        str(SIZE),
        "--scale",
        str(SCALE),
        *_options(name, inputs),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    masked = float(re.search(r"masked ([\d.]+)% of tokens", text).group(1))
    assert masked == pytest.approx(90.0, abs=3.0)  # int(0.9 * 16) / 16 tubes or int(0.9 * 64) / 64 tokens
    with Image.open(out) as gif:
        assert gif.n_frames == NUM_FRAMES
    with Image.open(out.with_suffix(".png")) as png:
        columns = NUM_FRAMES // 2  # one per tubelet slot
        assert png.size[0] == columns * SIZE * SCALE + (columns - 1) * 2 * SCALE
    if name == "objects":
        anchors = float(re.search(r"anchors ([\d.]+)% of tokens", text).group(1))
        assert anchors > 0 and "detections drawn" in text and not text.rstrip().endswith(" 0 detections drawn")


def test_show_masks_heatmap_colours_follow_the_scores(inputs, tmp_path, capsys):
    """--heatmap adds a third row; the highest-scoring token's cell is brighter than the lowest's (inferno)."""
    from videomask.masking import DifferenceMasker
    from videomask.viz import load_clip, score_heatmap

    out = tmp_path / "heat.gif"
    base = [
        "show-masks",
        str(inputs["video"]),
        "-o",
        str(out),
        "--num-frames",
        str(NUM_FRAMES),
        "--sampling-rate",
        "2",
        "--size",
        str(SIZE),
        "--scale",
        str(SCALE),
    ]
    assert main(base + ["--masker", "difference", "--stats", str(inputs["stats"]), "--heatmap"]) == 0
    with Image.open(out.with_suffix(".png")) as png:
        rows_height = png.size[1]
    assert (
        main(base + ["--masker", "difference", "--stats", str(inputs["stats"]), "-o", str(tmp_path / "two.gif")]) == 0
    )
    with Image.open(tmp_path / "two.png") as two:
        assert rows_height - two.size[1] == SIZE * SCALE + 2 * SCALE  # one more row and its spacer
    capsys.readouterr()
    clip = load_clip(inputs["video"], num_frames=NUM_FRAMES, sampling_rate=2, size=SIZE, patch=(16, 16))
    scores = DifferenceMasker.load(inputs["stats"]).generate(clip.batch()).scores[0]  # [L]
    plain = np.zeros((NUM_FRAMES, SIZE * SCALE, SIZE * SCALE, 3), dtype=np.uint8)
    heat = score_heatmap(plain, scores, (2, 16, 16), SCALE)
    cell = 16 * SCALE
    hw = (SIZE // 16) ** 2

    def brightness(token: int) -> float:
        i, j = divmod(token % hw, SIZE // 16)
        k = 2 * (token // hw)
        return float(heat[k, i * cell + 4 : (i + 1) * cell - 4, j * cell + 4 : (j + 1) * cell - 4].mean())

    assert brightness(int(scores.argmax())) > brightness(int(scores.argmin())) + 50
    assert main(base + ["--masker", "tube", "--heatmap"]) == 2
    assert "no scores" in capsys.readouterr().err


def test_show_masks_with_a_detector(inputs, tmp_path, capsys):
    out = tmp_path / "detector.gif"
    argv = [
        "show-masks",
        str(inputs["video"]),
        "--masker",
        "objects",
        "--detector",
        "haar-face",
        "-o",
        str(out),
        "--num-frames",
        "4",
        "--size",
        str(SIZE),
        "--png",
        str(tmp_path / "grid.png"),
    ]
    assert main(argv) == 0
    assert "anchors 0.0% of tokens" in capsys.readouterr().out  # no face on a square: the tube fallback
    assert (tmp_path / "grid.png").exists() and out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show-masks", "missing.mp4", "--masker", "tube", "-o", "x.gif"], "no such video file"),
        (["show-masks", "{video}", "--masker", "nope", "-o", "x.gif"], "unknown masker"),
        (["show-masks", "{video}", "--masker", "objects", "-o", "x.gif"], "needs --boxes"),
        (["show-masks", "{video}", "--masker", "difference", "-o", "x.gif"], "needs --stats"),
        (["show-masks", "{video}", "--masker", "random", "--alpha", "0.5", "-o", "x.gif"], "does not take --alpha"),
        (
            ["show-masks", "{video}", "--masker", "objects", "--boxes", "{root}/none.jsonl", "-o", "x.gif"],
            "does not exist",
        ),
    ],
)
def test_show_masks_bad_input_is_one_line_and_exit_2(argv, message, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(video=inputs["video"], root=inputs["root"]) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.gif").exists()
