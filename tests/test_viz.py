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
        assert png.mode == "RGB"
        assert png.size[0] > columns * SIZE * SCALE + (columns - 1) * 2 * SCALE  # and the row names on the left
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
        # one more row and its spacer (the legend may take one more line for the colour bar)
        assert rows_height - two.size[1] in (SIZE * SCALE + 2 * SCALE, SIZE * SCALE + 14 * SCALE)
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


# ----------------------------------------------------------------------------- pictures that explain themselves

WHITE = np.array([255, 255, 255], dtype=np.uint8)


def _has(image: np.ndarray, colour) -> bool:
    """Whether ``image`` ``[..., 3]`` holds a pixel of exactly ``colour``."""
    return bool((image.reshape(-1, 3) == np.asarray(colour, dtype=np.uint8)).all(-1).any())


def _panel_rows(picture: np.ndarray, height: int) -> list[tuple[int, int]]:
    """``(first, last + 1)`` of each run of exactly ``height`` non-white rows in the picture's last column
    of panels (the panels reach the right edge; text bands never give such a long run)."""
    column = picture[:, -height // 2]  # [rows, 3], the middle of the last panel column
    inked = ~(column == WHITE).all(-1)
    runs, start = [], None
    for y, on in enumerate([*inked, False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            runs.append((start, y))
            start = None
    return [r for r in runs if r[1] - r[0] == height]


def test_png_is_full_colour_and_equal_to_the_drawn_picture(tmp_path):
    """A palette PNG bands colour footage: the saved PNG is RGB and pixel-equal to the array drawn."""
    from videomask.viz import save_png

    ys, xs = np.mgrid[0:96, 0:160]
    picture = np.stack([xs * 255 // 159, ys * 255 // 95, (xs + ys) % 256], axis=-1).astype(np.uint8)  # 15k colours
    path = save_png(picture, tmp_path / "p.png")
    with Image.open(path) as png:
        assert png.mode == "RGB"
        assert np.array_equal(np.asarray(png), picture)


def test_gif_palette_keeps_the_drawing_colours_exact(tmp_path):
    """The GIF's one palette holds the flat colours of the drawing (masks, outlines, boxes, text) exactly and
    spends the rest on the footage."""
    from videomask.viz import BOX_COLOUR, NOT_RECONSTRUCTED, save_gif

    ys, xs = np.mgrid[0:64, 0:96]
    footage = np.stack([xs * 255 // 95, ys * 255 // 63, 255 - xs * 255 // 95], axis=-1).astype(np.uint8)
    frames = np.stack([np.roll(footage, 7 * k, axis=1) for k in range(4)])  # [4, 64, 96, 3]
    flat = [MASK_GREY.astype(np.uint8), ANCHOR_COLOUR, BOX_COLOUR, NOT_RECONSTRUCTED, (0, 0, 0), (255, 255, 255)]
    for n, colour in enumerate(flat):
        frames[:, 4 * n : 4 * n + 3, :20] = colour  # thin lines, as outlines and text are
    path = save_gif(frames, tmp_path / "g.gif")
    with Image.open(path) as gif:
        read = []
        for k in range(gif.n_frames):
            gif.seek(k)
            read.append(np.asarray(gif.convert("RGB")))
    read = np.stack(read)
    for n, colour in enumerate(flat):
        assert (read[:, 4 * n : 4 * n + 3, :20] == np.asarray(colour, dtype=np.uint8)).all(), colour
    assert np.abs(read.astype(int) - frames.astype(int)).mean() < 5.5  # a 128-colour median cut gave 6.4 here


def test_long_caption_wraps_to_the_picture_width_without_cutting_text():
    from videomask.viz import caption_band

    text = "difference masker: masked 90%, anchors 45%, loss 0.123 (anchor 0.456, other 0.789), frame 1234"
    width, scale = 200, 2
    band = caption_band(width, text, scale)
    assert band.shape[1] == width
    assert band.shape[0] >= 3 * 10 * scale  # three lines or more
    wide = caption_band(4000, text, scale)
    assert wide.shape[0] == 12 * scale  # one line when there is room
    ink = int((255 - band.astype(int)).sum())
    assert ink == pytest.approx(int((255 - wide.astype(int)).sum()), rel=0.01)  # every glyph drawn whole
    assert (band[:, -2 * scale :] == 255).all()  # nothing reaches the right edge


def test_show_masks_png_names_its_rows_and_has_a_legend(inputs, tmp_path):
    """show-masks' PNG: a name left of each row, and a legend band under the rows with the colours drawn
    (grey = masked, yellow = anchor, green = detection boxes); --heatmap adds a colour bar."""
    from videomask.viz import BOX_COLOUR, colour_ramp

    out = tmp_path / "legend.gif"
    argv = [
        "show-masks",
        str(inputs["video"]),
        "--masker",
        "objects",
        "--boxes",
        str(inputs["boxes"]),
        "--alpha",
        "1",
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
    assert main(argv) == 0
    png = np.asarray(Image.open(out.with_suffix(".png")))
    columns = NUM_FRAMES // 2
    label_w = png.shape[1] - (columns * SIZE * SCALE + (columns - 1) * 2 * SCALE)
    assert label_w > 0
    rows = _panel_rows(png, SIZE * SCALE)
    assert len(rows) == 2  # clip, masked
    for first, last in rows:  # each row's name: text left of it
        assert (png[first:last, :label_w] < 100).all(-1).any()
    legend = png[rows[-1][1] :]  # everything under the last row
    assert legend.shape[0] >= 10 * SCALE
    for colour in (MASK_GREY.astype(np.uint8), ANCHOR_COLOUR, BOX_COLOUR):
        assert _has(legend, colour), colour

    assert main([*argv[:3], "difference", "--stats", str(inputs["stats"]), "--heatmap", *argv[8:]]) == 0
    png = np.asarray(Image.open(out.with_suffix(".png")))
    rows = _panel_rows(png, SIZE * SCALE)
    assert len(rows) == 3  # clip, masked, scores
    legend = png[rows[-1][1] :]
    ramp = colour_ramp(256)
    assert _has(legend, ramp[0]) and _has(legend, ramp[-1])  # the colour bar, lowest to highest score


def test_show_masks_gif_fits_its_caption_and_names_its_panels(inputs, tmp_path):
    """At a small picture the caption wraps instead of running off the edge; panels are named above."""
    out = tmp_path / "small.gif"
    argv = ["show-masks", str(inputs["video"]), "--masker", "difference", "--stats", str(inputs["stats"])]
    argv += ["-o", str(out), "--num-frames", str(NUM_FRAMES), "--sampling-rate", "2", "--size", str(SIZE)]
    assert main([*argv, "--scale", "1"]) == 0
    with Image.open(out) as gif:
        frame = np.asarray(gif.convert("RGB"))
    rows = _panel_rows(frame, SIZE)
    assert len(rows) == 1
    above = frame[: rows[0][0]]  # caption and panel names
    assert (above[:, -2:] == WHITE).all()  # no text cut at the right edge
    inked = np.nonzero(~(above == WHITE).all(-1).all(-1))[0]
    lines = 1 + int((np.diff(inked) > 1).sum())  # runs of rows with text
    assert lines >= 3  # the caption on two lines or more, then the panel names


def test_recon_picture_has_a_colour_bar_and_legend():
    """show-recon's grid: under the four rows a legend with the masked grey, the not-reconstructed grey and
    the error colour bar (min to max)."""
    from videomask.patches import ClipGeometry
    from videomask.viz import NOT_RECONSTRUCTED, Clip, Reconstruction, colour_ramp, draw_recon

    T, H, W, tubelet = 4, 32, 32, (2, 16, 16)
    frames = np.full((T, H, W, 3), 90, dtype=np.uint8)
    L = grid_for((T, H, W), tubelet).num_tokens
    mask = torch.zeros(L, dtype=torch.bool)
    mask[: L - 2] = True
    error = torch.full((L,), float("nan"))
    error[mask] = torch.linspace(0.2, 0.9, int(mask.sum()))
    recon = Reconstruction(torch.rand(3, T, H, W), error, mask, 0.5, True)
    clip = Clip("c", frames, torch.zeros(1, 3, T, H, W), list(range(T)), ClipGeometry.identity(H, W), frames)
    picture = draw_recon(clip, recon, tubelet, title="tube", scale=2)
    rows = _panel_rows(picture.grid, H * 2)
    assert len(rows) == 4
    below = picture.grid[rows[-1][1] :]
    ramp = colour_ramp(256)
    for colour in (MASK_GREY.astype(np.uint8), NOT_RECONSTRUCTED, ramp[0], ramp[-1]):
        assert _has(below, colour), colour
