"""Mask and reconstruction pictures: masked patches shaded, anchor patches outlined, detections drawn.

:func:`show_masks` does the whole job for one video and any registered masker (``videomask
show-masks``): it samples a centred clip, applies the evaluation transform (short side resize +
centre crop, the same :class:`~videomask.data.ClipTransform` the datasets use), builds a one-clip
batch dict, runs the masker and writes an animated GIF (left: the clip with detections; right: masked
patches shaded grey, anchor patches outlined yellow) and a PNG grid (one column per tubelet slot).

:func:`show_recon` (``videomask show-recon``) runs a model on the masked clip and draws four panels:
original | masked input | reconstruction | per-patch error heat map (:func:`reconstruct` does the
arithmetic). :class:`ReconLogger` puts the same grid into TensorBoard during training.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from videomask.data import ClipTransform, sample_indices
from videomask.errors import VideomaskError
from videomask.patches import ClipGeometry, Tubelet, patchify, unpatchify
from videomask.video import open_video

MASK_GREY = np.array([96, 96, 96], dtype=np.float32)
ANCHOR_COLOUR = (255, 220, 0)  # RGB yellow
BOX_COLOUR = (0, 230, 80)  # RGB green
NOT_RECONSTRUCTED = np.array([200, 200, 200], dtype=np.uint8)  # heat-map colour of visible patches


@dataclass
class Clip:
    """A sampled, transformed clip and what the masker and the drawing need about it."""

    video_id: str
    frames: np.ndarray  # uint8 [T, h, w, 3]: the transformed clip as pixels
    video: Tensor  # float [1, C, T, h, w]: normalised, the masker's input
    frame_indices: list[int]  # original frame index of each clip frame
    geometry: ClipGeometry
    original: np.ndarray  # uint8 [T, H, W, 3]: the decoded original frames (for detectors)

    def batch(self) -> dict[str, Any]:
        """A one-clip batch dict in the loaders' format."""
        return {
            "video": self.video,
            "video_id": [self.video_id],
            "frame_indices": torch.tensor([self.frame_indices], dtype=torch.long),  # [1, T]
            "geometry": self.geometry.to_tensor()[None],  # [1, 9]
            "label": torch.tensor([-1]),
            "index": torch.tensor([0]),
        }


def load_clip(
    path: str | Path,
    *,
    video_id: str | None = None,
    num_frames: int = 16,
    sampling_rate: int = 4,
    size: int = 224,
    patch: tuple[int, int] = (16, 16),
    backend: str = "pyav",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Clip:
    """Decode the centred clip of a video and apply the evaluation transform (``mean``/``std``: default ImageNet's)."""

    path = Path(path)
    if not path.is_file():
        raise VideomaskError(f"no such video file: {path}")
    norm = {k: tuple(float(x) for x in v) for k, v in (("mean", mean), ("std", std)) if v is not None}
    transform = ClipTransform.for_eval(size, patch=patch, **norm)
    with open_video(str(path), backend=backend) as reader:
        indices = sample_indices(reader.meta.num_frames, num_frames, sampling_rate, mode="center", short="loop")
        original = reader.read(indices)  # uint8 [T, H, W, 3]
    video, geometry = transform(original)  # [C, T, h, w] normalised
    mean = torch.tensor(transform.mean).view(-1, 1, 1, 1)
    std = torch.tensor(transform.std).view(-1, 1, 1, 1)
    pixels = ((video * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)  # [C, T, h, w]
    frames = pixels.permute(1, 2, 3, 0).contiguous().numpy()  # [T, h, w, C]
    return Clip(video_id or path.name, frames, video[None], [int(i) for i in indices], geometry, original)


def _outline(
    image: np.ndarray, cells: np.ndarray, patch: tuple[int, int], scale: int, colour: tuple[int, int, int]
) -> None:
    """Draw the border of the region ``cells`` (bool ``[h, w]``) on ``image`` (already upscaled by ``scale``)."""
    ph, pw = patch[0] * scale, patch[1] * scale
    gh, gw = cells.shape
    padded = np.pad(cells, 1)  # [h+2, w+2]
    for i, j in zip(*np.nonzero(cells)):
        y0, x0, y1, x1 = i * ph, j * pw, (i + 1) * ph - 1, (j + 1) * pw - 1
        if not padded[i, j + 1]:  # top neighbour outside the region
            image[y0 : y0 + scale, x0 : x1 + 1] = colour
        if not padded[i + 2, j + 1]:
            image[y1 - scale + 1 : y1 + 1, x0 : x1 + 1] = colour
        if not padded[i + 1, j]:
            image[y0 : y1 + 1, x0 : x0 + scale] = colour
        if not padded[i + 1, j + 2]:
            image[y0 : y1 + 1, x1 - scale + 1 : x1 + 1] = colour


def _draw_boxes(image: np.ndarray, boxes: Sequence[tuple[Sequence[float], str]], scale: int) -> None:

    for box, label in boxes:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        if x1 <= x0 or y1 <= y0:
            continue
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), BOX_COLOUR, max(1, scale // 2))
        cv2.putText(
            image,
            label,
            (x0 + 1, max(y0 - 2, 4 * scale)),
            cv2.FONT_HERSHEY_PLAIN,
            0.4 * scale,
            BOX_COLOUR,
            1,
            cv2.LINE_AA,
        )


def draw_frames(
    frames: np.ndarray,
    mask: Tensor,
    tubelet: Tubelet,
    *,
    anchors: Tensor | None = None,
    boxes: Sequence[Sequence[tuple[Sequence[float], str]]] | None = None,
    scale: int = 2,
    shade: float = 0.75,
) -> tuple[np.ndarray, np.ndarray]:
    """Pictures of one clip -> ``(plain [T, H*s, W*s, 3], masked [T, H*s, W*s, 3])`` uint8.

    ``frames`` uint8 ``[T, H, W, 3]``; ``mask`` / ``anchors`` bool ``[L]`` in token order; ``boxes[k]``:
    ``(box in clip pixels, label)`` pairs drawn on frame ``k`` of both pictures. Masked patches are
    blended ``shade`` of the way to grey; anchor patches get a yellow outline.
    """

    T, H, W, _ = frames.shape
    t, ph, pw = tubelet
    gh, gw = H // ph, W // pw
    mask_grid = mask.detach().cpu().bool().reshape(T // t, gh, gw).numpy()  # [t', h, w]
    anchor_grid = anchors.detach().cpu().bool().reshape(T // t, gh, gw).numpy() if anchors is not None else None
    plain, masked = [], []
    for k in range(T):
        big = cv2.resize(frames[k], (W * scale, H * scale), interpolation=cv2.INTER_NEAREST)
        cells = np.kron(mask_grid[k // t], np.ones((ph * scale, pw * scale), dtype=bool))  # [H*s, W*s]
        shaded = big.astype(np.float32)
        shaded[cells] = (1 - shade) * shaded[cells] + shade * MASK_GREY
        shaded = shaded.round().astype(np.uint8)
        if anchor_grid is not None:
            _outline(shaded, anchor_grid[k // t], (ph, pw), scale, ANCHOR_COLOUR)
        if boxes is not None:
            _draw_boxes(big, boxes[k], scale)
            _draw_boxes(shaded, boxes[k], scale)
        plain.append(big)
        masked.append(shaded)
    return np.stack(plain), np.stack(masked)


FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_COLOUR = (0, 0, 0)
WHITE = (255, 255, 255)


def _font(scale: int) -> float:
    """The text size of a picture drawn at ``scale`` (about 7 px tall capitals per scale unit)."""
    return 0.3 * scale


def _text_width(text: str, scale: int) -> int:
    return int(cv2.getTextSize(text, FONT, _font(scale), 1)[0][0])


def _put(image: np.ndarray, text: str, x: int, baseline: int, scale: int) -> None:
    cv2.putText(image, text, (x, baseline), FONT, _font(scale), TEXT_COLOUR, 1, cv2.LINE_AA)


def wrap_text(text: str, width: int, scale: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` px: at spaces, inside a word only when it alone is wider."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if _text_width(candidate, scale) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while _text_width(word, scale) > width and len(word) > 1:  # a word wider than the picture
                cut = 1
                while cut < len(word) and _text_width(word[: cut + 1], scale) <= width:
                    cut += 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def caption_band(width: int, text: str, scale: int, min_lines: int = 1) -> np.ndarray:
    """A white band ``width`` px wide holding ``text``, wrapped to the width (at least ``min_lines`` lines tall)."""
    margin = 2 * scale
    lines = wrap_text(text, width - 2 * margin, scale)
    bar = np.full(((max(len(lines), min_lines) * 10 + 2) * scale, width, 3), 255, dtype=np.uint8)
    for i, line in enumerate(lines):
        _put(bar, line, margin, (i * 10 + 9) * scale, scale)
    return bar


def _same_height(bands: Sequence[np.ndarray]) -> list[np.ndarray]:
    """White-pad ``[h_i, W, 3]`` bands at the bottom to the tallest one's height (the GIF's frames must agree)."""
    tallest = max(b.shape[0] for b in bands)
    return [np.pad(b, ((0, tallest - b.shape[0]), (0, 0), (0, 0)), constant_values=255) for b in bands]


def colour_ramp(levels: int) -> np.ndarray:
    """The heat maps' colours (inferno) for ``levels`` steps from low to high -> uint8 ``[levels, 3]`` RGB."""
    ramp = np.linspace(0, 255, levels).round().astype(np.uint8)[None]  # [1, levels]
    return np.ascontiguousarray(cv2.applyColorMap(ramp, cv2.COLORMAP_INFERNO)[0, :, ::-1])  # [levels, 3]


@dataclass(frozen=True)
class LegendEntry:
    """One legend item: ``kind`` ``"fill"`` (a filled square), ``"outline"`` (a square border), ``"box"`` (a
    thin box) in ``colour``, or ``"scale"`` (a colour bar from ``low`` to ``high``), followed by ``text``."""

    kind: str
    text: str
    colour: tuple[int, int, int] = (0, 0, 0)
    low: float = 0.0
    high: float = 1.0


def _legend_item(entry: LegendEntry, scale: int) -> np.ndarray:
    """One entry drawn on white -> uint8 ``[10*s, w, 3]``."""
    s = scale
    height, side = 10 * s, 8 * s
    if entry.kind == "scale":
        low, high = f"{entry.low:.3g}", f"{entry.high:.3g}"
        bar_w = 48 * s
        head = f"{entry.text} "
        widths = [_text_width(head, s), _text_width(low, s) + 2 * s, bar_w, 2 * s + _text_width(high, s)]
        item = np.full((height, sum(widths), 3), 255, dtype=np.uint8)
        x = 0
        _put(item, head, x, 8 * s, s)
        x += widths[0]
        _put(item, low, x, 8 * s, s)
        x += widths[1]
        item[s : s + side, x : x + bar_w] = colour_ramp(bar_w)[None]  # low left, high right
        _put(item, high, x + bar_w + 2 * s, 8 * s, s)
        return item
    text_w = _text_width(entry.text, s)
    item = np.full((height, side + 3 * s + text_w, 3), 255, dtype=np.uint8)
    y0, y1 = s, s + side
    if entry.kind == "fill":
        item[y0:y1, :side] = entry.colour
    elif entry.kind == "outline":
        item[y0:y1, :side] = 160  # a grey patch inside the border, as a masked anchor looks
        cells = np.zeros((1, 1), dtype=bool)
        cells[0, 0] = True
        patch = item[y0:y1, :side]
        _outline(patch, cells, (8, 8), s, entry.colour)
    elif entry.kind == "box":
        cv2.rectangle(item, (0, y0), (side - 1, y1 - 1), entry.colour, max(1, s // 2))
    else:
        raise ValueError(f"unknown legend entry kind {entry.kind!r}")
    _put(item, entry.text, side + 3 * s, 8 * s, s)
    return item


def legend_band(width: int, entries: Sequence[LegendEntry], scale: int) -> np.ndarray:
    """A white band ``width`` px wide with ``entries`` left to right, on as many lines as the width needs."""
    s = scale
    items = [_legend_item(e, s) for e in entries]
    lines: list[list[np.ndarray]] = [[]]
    used = 2 * s
    for item in items:
        if lines[-1] and used + item.shape[1] > width - 2 * s:
            lines.append([])
            used = 2 * s
        lines[-1].append(item)
        used += item.shape[1] + 8 * s
    band = np.full(((len(lines) * 12 + 2) * s, width, 3), 255, dtype=np.uint8)
    for i, line in enumerate(lines):
        x = 2 * s
        for item in line:
            w = min(item.shape[1], width - x)  # an item wider than the whole picture is cut at its edge
            band[(i * 12 + 2) * s : (i * 12 + 12) * s, x : x + w] = item[:, :w]
            x += item.shape[1] + 8 * s
    return band


def _gif_palette(pictures: np.ndarray, fixed: np.ndarray, colors: int) -> np.ndarray:
    """A ``colors``-entry palette ``[colors, 3]`` for ``pictures`` uint8 ``[T, H, W, 3]``: the ``fixed`` colours
    (the drawing's flat colours, kept exact) and a median-cut palette of the other pixels."""
    flat = pictures.reshape(-1, 3)
    packed = (flat[:, 0].astype(np.int32) << 16) | (flat[:, 1].astype(np.int32) << 8) | flat[:, 2]
    fixed_packed = (fixed[:, 0].astype(np.int32) << 16) | (fixed[:, 1].astype(np.int32) << 8) | fixed[:, 2]
    rest = flat[~np.isin(packed, fixed_packed)]
    if len(rest) > 1 << 20:  # a sample is enough to place the palette
        rest = rest[:: len(rest) // (1 << 20) + 1]
    free = colors - len(fixed)
    if len(rest) == 0 or free <= 0:
        return fixed[:colors]
    sample = Image.fromarray(np.ascontiguousarray(rest[None]))  # [1, N, 3]
    cut = sample.quantize(colors=free, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    found = np.array(cut.getpalette()[: 3 * free], dtype=np.uint8).reshape(-1, 3)
    return np.concatenate([fixed, found])


def _nearest(pictures: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Each pixel of uint8 ``[..., 3]`` -> the index of its nearest ``palette`` colour (exact, per distinct colour)."""
    flat = pictures.reshape(-1, 3)
    packed = (flat[:, 0].astype(np.int32) << 16) | (flat[:, 1].astype(np.int32) << 8) | flat[:, 2]
    distinct, inverse = np.unique(packed, return_inverse=True)
    rgb = np.stack([(distinct >> 16) & 255, (distinct >> 8) & 255, distinct & 255], axis=1).astype(np.int32)
    best = np.empty(len(rgb), dtype=np.uint8)
    pal = palette.astype(np.int32)
    for start in range(0, len(rgb), 4096):  # [chunk, colors] distances at a time
        d = ((rgb[start : start + 4096, None, :] - pal[None]) ** 2).sum(-1)
        best[start : start + 4096] = d.argmin(1)
    return best[inverse.reshape(-1)].reshape(pictures.shape[:-1])


# the flat colours of the drawings: kept exact in a GIF's palette
FLAT_COLOURS = np.array(
    [WHITE, TEXT_COLOUR, tuple(int(v) for v in MASK_GREY), ANCHOR_COLOUR, BOX_COLOUR, tuple(NOT_RECONSTRUCTED)],
    dtype=np.uint8,
)


def save_gif(pictures: np.ndarray, path: str | Path, frame_ms: int = 200, colors: int = 192) -> Path:
    """Write uint8 ``[T, H, W, 3]`` as a looping GIF with one ``colors``-colour palette for all frames.

    The palette holds the drawing's flat colours exactly (white, text, mask grey, anchor yellow, box
    green, the heat map's grey) and a median cut of the other pixels; no dithering, so flat masks stay
    flat and the file small.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    palette = _gif_palette(pictures, FLAT_COLOURS, colors)
    indices = _nearest(pictures, palette)  # [T, H, W] uint8
    flat_palette = palette.reshape(-1).tolist()
    images = []
    for frame in indices:
        image = Image.frombytes("P", (frame.shape[1], frame.shape[0]), np.ascontiguousarray(frame).tobytes())
        image.putpalette(flat_palette)
        images.append(image)
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0, optimize=True)
    return path


def save_png(picture: np.ndarray, path: str | Path) -> Path:
    """Write one uint8 ``[H, W, 3]`` picture as a full-colour (RGB, no palette) PNG."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8)).convert("RGB").save(path, optimize=True)
    return path


@dataclass
class MaskPicture:
    """What :func:`show_masks` wrote and measured."""

    gif: Path
    png: Path
    masked_share: float
    anchor_share: float | None
    detections: int
    frames: np.ndarray | None = None  # uint8 [T, rows, cols, 3]: the GIF's frames as drawn
    grid: np.ndarray | None = None  # uint8 [rows, cols, 3]: the PNG as drawn


def show_masks(
    clip: Clip,
    masker: Any,
    output: str | Path,
    *,
    detections: Sequence[Sequence[Any]] | None = None,
    png: str | Path | None = None,
    seed: int = 0,
    scale: int = 2,
    max_columns: int = 8,
    heatmap: bool = False,
) -> MaskPicture:
    """Mask ``clip`` with ``masker`` and write ``output`` (GIF) and a PNG grid (default: same name, ``.png``).

    ``detections[k]``: :class:`~videomask.detect.Detection` objects (original pixels) of clip frame ``k``,
    drawn mapped through the clip's geometry. ``heatmap``: a third panel with the masker's token scores
    (inferno colours from the clip's lowest to its highest score, blended over the frame, anchors
    outlined); an error for maskers without scores. Returns the paths and the masked / anchor token shares.
    """
    generator = torch.Generator().manual_seed(int(seed))
    result = masker.generate(clip.batch(), generator)
    mask = result.mask[0]  # [L]
    anchors = result.anchors[0] if result.anchors is not None else None
    if heatmap and result.scores is None:
        raise VideomaskError(f"masker {masker.name!r} gives no scores to draw as a heat map")
    drawn = _map_detections(clip, detections)
    plain, masked = draw_frames(clip.frames, mask, masker.tubelet, anchors=anchors, boxes=drawn, scale=scale)
    T = len(plain)
    panels, names = [plain, masked], ["clip", "masked"]
    entries = [LegendEntry("fill", "masked patch", tuple(int(v) for v in MASK_GREY))]
    if anchors is not None:
        entries.append(LegendEntry("outline", "anchor patch", ANCHOR_COLOUR))
    if detections is not None:
        labels = sorted({d.label for found in detections for d in found})
        what = f"detection: {', '.join(labels)}" if labels else "detection (none found)"
        entries.append(LegendEntry("box", what, BOX_COLOUR))
    if heatmap:
        scores = result.scores[0]
        panels.append(score_heatmap(plain, scores, masker.tubelet, scale, anchors))
        names.append("scores")
        entries.append(LegendEntry("scale", "score", low=float(scores.min()), high=float(scores.max())))
    masked_share = float(mask.float().mean())
    anchor_share = float(anchors.float().mean()) if anchors is not None else None
    title = f"{masker.name} masker: masked {masked_share:.0%}" + (
        f", anchors {anchor_share:.0%}" if anchor_share is not None else ""
    )

    # the animation: per frame a caption, the panel names, the panels side by side, the legend
    gap = 4 * scale
    width = plain.shape[2] * len(panels) + gap * (len(panels) - 1)
    white_gap = np.full((plain.shape[1], gap, 3), 255, dtype=np.uint8)
    captions = _same_height([caption_band(width, f"{title}, frame {clip.frame_indices[k]}", scale) for k in range(T)])
    heads = _text_bar(names, plain.shape[2], gap, scale)
    legend = legend_band(width, entries, scale)
    frames = np.stack(
        [
            np.concatenate(
                [
                    captions[k],
                    heads,
                    np.concatenate([part for panel in panels for part in (white_gap, panel[k])][1:], axis=1),
                    legend,
                ],
                axis=0,
            )
            for k in range(T)
        ]
    )  # [T, caption + names + H*s + legend, panels*W*s + gaps, 3]

    # the still: one row per panel (named on the left), one column per tubelet slot
    columns = list(range(0, T, masker.tubelet[0]))[:max_columns]  # the first frame of each tubelet slot
    col_gap = np.full((plain.shape[1], 2 * scale, 3), 255, dtype=np.uint8)
    rows = [np.concatenate([part for k in columns for part in (col_gap, panel[k])][1:], axis=1) for panel in panels]
    label_w = max(_text_width(name, scale) for name in names) + 6 * scale
    full_w = rows[0].shape[1] + label_w
    spacer = np.full((2 * scale, full_w, 3), 255, dtype=np.uint8)
    body = [part for image, name in zip(rows, names) for part in (spacer, _named_row(image, [name], label_w, scale))]
    shown = ", ".join(str(clip.frame_indices[k]) for k in columns)
    grid = np.concatenate(
        [
            caption_band(full_w, f"{title}; columns: frames {shown}", scale),
            *body[1:],
            legend_band(full_w, entries, scale),
        ],
        axis=0,
    )  # [caption + rows + spacers + legend, label + columns*W*s + gaps, 3]
    gif = save_gif(frames, output)
    png_path = save_png(grid, png if png is not None else Path(output).with_suffix(".png"))
    count = sum(len(f) for f in detections) if detections is not None else 0
    return MaskPicture(gif, png_path, masked_share, anchor_share, count, frames, grid)


def score_heatmap(
    plain: np.ndarray, scores: Tensor, tubelet: Tubelet, scale: int, anchors: Tensor | None = None
) -> np.ndarray:
    """Token scores ``[L]`` over the drawn frames ``uint8 [T, H*s, W*s, 3]`` -> the same shape: inferno colours
    from the lowest to the highest score of the clip, blended 60/40 over the frame, anchors outlined."""
    T, Hs, Ws, _ = plain.shape
    lo, hi = float(scores.min()), float(scores.max())
    heat = error_heatmap(
        scores, tubelet, (T, Hs // scale, Ws // scale), vmax=hi if hi > lo else lo + 1, scale=scale, vmin=lo
    )
    out = (0.6 * heat.astype(np.float32) + 0.4 * plain.astype(np.float32)).round().astype(np.uint8)
    if anchors is not None:
        t = tubelet[0]
        grid = anchors.detach().cpu().reshape(T // t, Hs // scale // tubelet[1], Ws // scale // tubelet[2]).numpy()
        for k in range(T):
            _outline(out[k], grid[k // t], tubelet[1:], scale, ANCHOR_COLOUR)
    return out


# ----------------------------------------------------------------------------- reconstructions

NORM_PIX_NOTE = "reconstruction: norm_pix_loss prediction un-normalised with each original patch's mean and std"
PIXEL_NOTE = "reconstruction: predicted pixels (norm_pix_loss off)"


@dataclass
class Reconstruction:
    """What a model made of one masked clip (see :func:`reconstruct`)."""

    pixels: Tensor  # float [C, T, H, W] in [0, 1]: visible patches as given, masked patches predicted
    token_error: Tensor  # float [L]: per-token MSE in the loss's space (the training loss); NaN = not reconstructed
    mask: Tensor  # bool [L]
    loss: float  # mean of token_error over the reconstructed tokens (= the model's loss)
    norm_pix_loss: bool  # the prediction was un-normalised with each original patch's mean / std


@torch.no_grad()
def reconstruct(model: Any, video: Tensor, mask: Tensor) -> Reconstruction:
    """Run ``model`` (a :class:`~videomask.model.VideoMAE`) on ``video [1, C, T, H, W]`` with ``mask [1, L]``.

    Every masked token is reconstructed (decoder masking is turned off here). With ``norm_pix_loss`` the
    decoder predicts each token's pixels normalised per channel, so the prediction is mapped back with
    the *original* patch's mean and std (unbiased, ``+1e-6``), as VideoMAE's visualisation script does:
    the picture then borrows the masked patch's mean colour and contrast from the original.
    """

    c = model.config
    grid = model.grid_of(video)
    mask = mask.to(video.device)
    was_training = model.training
    model.eval()
    try:
        out = model(video, mask, mask)  # decoder_mask = mask: reconstruct every masked token
    finally:
        model.train(was_training)
    frames = video.float()
    if c.in_chans == 3:
        frames = frames * model.pix_std.view(1, 3, 1, 1, 1) + model.pix_mean.view(
            1, 3, 1, 1, 1
        )  # [1, C, T, H, W] in [0, 1]
    tokens = patchify(frames, model.tubelet)  # [1, L, t*p*p*C]
    pred = out.pred.float()  # [1, L_mask, t*p*p*C]
    if c.norm_pix_loss:
        orig = tokens[out.decoder_mask].view(pred.shape).unflatten(-1, (-1, c.in_chans))  # [1, L_mask, t*p*p, C]
        mean = orig.mean(dim=-2, keepdim=True)
        std = orig.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6
        pred = (pred.unflatten(-1, (-1, c.in_chans)) * std + mean).flatten(-2)  # [1, L_mask, t*p*p*C]
    recon = tokens.clone()
    recon[out.decoder_mask] = pred.reshape(-1, pred.shape[-1])  # rows in increasing token index, as pred
    pixels = unpatchify(recon, grid, model.tubelet, c.in_chans)[0].clamp(0, 1)  # [C, T, H, W]
    error = torch.full((grid.num_tokens,), float("nan"), device=video.device)
    error[out.decoder_mask[0]] = out.token_loss[0].float()  # [L]
    return Reconstruction(pixels.cpu(), error.cpu(), mask[0].cpu(), float(out.loss), bool(c.norm_pix_loss))


def _to_uint8(pixels: Tensor) -> np.ndarray:
    """float ``[C, T, H, W]`` in [0, 1] -> uint8 ``[T, H, W, 3]`` (one channel repeated to three)."""
    frames = (pixels * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()  # [T, H, W, C]
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames[..., :3])


def error_heatmap(
    token_error: Tensor,
    tubelet: Tubelet,
    frames_shape: tuple[int, int, int],
    vmax: float,
    scale: int = 1,
    vmin: float = 0.0,
) -> np.ndarray:
    """Per-token error ``[L]`` -> uint8 ``[T, H*s, W*s, 3]``.

    Inferno colours from ``vmin`` to ``vmax``; NaN (a token not reconstructed) is light grey.
    """

    T, H, W = frames_shape
    t, ph, pw = tubelet
    grid = token_error.detach().cpu().float().reshape(T // t, H // ph, W // pw).numpy()  # [t', h, w]
    level = np.nan_to_num(np.clip((grid - vmin) / max(vmax - vmin, 1e-12), 0, 1), nan=0.0)
    levels = (level * 255).round().astype(np.uint8)  # [t', h, w]
    colours = cv2.applyColorMap(levels.reshape(-1, levels.shape[-1]), cv2.COLORMAP_INFERNO)[
        ..., ::-1
    ]  # [t'*h, w, 3] RGB
    colours = np.ascontiguousarray(colours).reshape(*levels.shape, 3)  # [t', h, w, 3]
    colours[np.isnan(grid)] = NOT_RECONSTRUCTED
    cells = colours.repeat(ph * scale, axis=1).repeat(pw * scale, axis=2)  # [t', H*s, W*s, 3]
    return np.ascontiguousarray(cells.repeat(t, axis=0))  # [T, H*s, W*s, 3]


@dataclass
class ReconPicture:
    """What :func:`draw_recon` / :func:`show_recon` made and measured."""

    frames: np.ndarray  # uint8 [T, caption + H*s, 4*W*s + gaps, 3]: the GIF's frames
    grid: np.ndarray  # uint8 [rows, cols, 3]: the PNG (four rows, one column per tubelet slot)
    loss: float
    loss_anchor: float | None
    loss_other: float | None
    masked_share: float
    anchor_share: float | None
    gif: Path | None = None
    png: Path | None = None


def _text_bar(texts: Sequence[str], panel: int, spacing: int, scale: int) -> np.ndarray:
    """A white bar with one name over each of ``len(texts)`` panels ``panel`` px wide, ``spacing`` apart (each
    name wrapped to its panel's width)."""

    wrapped = [wrap_text(text, panel - 2 * scale, scale) for text in texts]
    lines = max(len(w) for w in wrapped)
    bar = np.full(((lines * 10 + 2) * scale, len(texts) * panel + (len(texts) - 1) * spacing, 3), 255, dtype=np.uint8)
    for n, text_lines in enumerate(wrapped):
        for i, line in enumerate(text_lines):
            _put(bar, line, n * (panel + spacing) + 2 * scale, (i * 10 + 9) * scale, scale)
    return bar


def _named_row(image: np.ndarray, lines: Sequence[str], width: int, scale: int) -> np.ndarray:
    """``image`` with a white column ``width`` px wide on its left holding ``lines`` (a row name)."""

    side = np.full((image.shape[0], width, 3), 255, dtype=np.uint8)
    for i, word in enumerate(lines):
        _put(side, word, 2 * scale, 12 * scale + i * 10 * scale, scale)
    return np.concatenate([side, image], axis=1)


def _recon_losses(recon: Reconstruction, anchors: Tensor | None) -> tuple[float | None, float | None, float | None]:
    """``(anchor_share, anchor_loss, other_loss)``: mean token error on masked anchor / other patches."""
    if anchors is None:
        return None, None, None
    err, anchors = recon.token_error, anchors.detach().cpu().bool()
    a, o = anchors & recon.mask, ~anchors & recon.mask
    la = float(err[a].mean()) if bool(a.any()) else None
    lo = float(err[o].mean()) if bool(o.any()) else None
    return float(anchors.float().mean()), la, lo


def draw_recon(
    clip: Clip,
    recon: Reconstruction,
    tubelet: Tubelet,
    *,
    anchors: Tensor | None = None,
    boxes: Sequence[Sequence[tuple[Sequence[float], str]]] | None = None,
    title: str = "",
    scale: int = 2,
    max_columns: int = 8,
) -> ReconPicture:
    """The four panels of one reconstruction: original | masked input | reconstruction | error heat map.

    The masked input shows masked patches fully grey (what the encoder does not see) with the anchor
    patches outlined, as ``show-masks`` draws them; the heat map colours each reconstructed patch by
    its loss (from the clip's smallest to its largest), visible patches light grey, anchor outlines repeated.
    Returns the animation (one frame per clip frame, panels side by side) and a still grid (one row per
    panel, one column per time slot).
    """

    T, H, W, _ = clip.frames.shape
    plain, masked = draw_frames(clip.frames, recon.mask, tubelet, anchors=anchors, boxes=boxes, scale=scale, shade=1.0)
    rec = np.stack(
        [cv2.resize(f, (W * scale, H * scale), interpolation=cv2.INTER_NEAREST) for f in _to_uint8(recon.pixels)]
    )
    err = recon.token_error
    finite = err[torch.isfinite(err)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
    heat = error_heatmap(err, tubelet, (T, H, W), vmax, scale, vmin=vmin)
    if anchors is not None:
        anchor_grid = anchors.detach().cpu().bool().reshape(T // tubelet[0], H // tubelet[1], W // tubelet[2]).numpy()
        for k in range(T):
            _outline(heat[k], anchor_grid[k // tubelet[0]], tubelet[1:], scale, ANCHOR_COLOUR)
    panels = [plain, masked, rec, heat]  # each [T, H*s, W*s, 3]

    masked_share = float(recon.mask.float().mean())
    anchor_share, la, lo = _recon_losses(recon, anchors)
    head = f"{title}: masked {masked_share:.0%}" + (f", anchors {anchor_share:.0%}" if anchor_share is not None else "")
    head += f", loss {recon.loss:.3f}" + (
        f" (anchor {la:.3f}, other {lo:.3f})" if la is not None and lo is not None else ""
    )
    note = NORM_PIX_NOTE if recon.norm_pix_loss else PIXEL_NOTE
    entries = [LegendEntry("fill", "masked patch", tuple(int(v) for v in MASK_GREY))]
    if anchors is not None:
        entries.append(LegendEntry("outline", "anchor patch", ANCHOR_COLOUR))
    if boxes is not None:
        labels = sorted({name for found in boxes for _, name in found})
        what = f"detection: {', '.join(labels)}" if labels else "detection (none found)"
        entries.append(LegendEntry("box", what, BOX_COLOUR))
    entries.append(LegendEntry("fill", "visible (no error)", tuple(int(v) for v in NOT_RECONSTRUCTED)))
    entries.append(LegendEntry("scale", "error", low=vmin, high=vmax))

    # the animation: per frame a caption, the panel labels, the four panels side by side, the note
    gap = 4 * scale
    width = 4 * W * scale + 3 * gap
    white_gap = np.full((H * scale, gap, 3), 255, dtype=np.uint8)
    labels = _text_bar(["original", "masked input", "reconstruction", "error"], W * scale, gap, scale)
    captions = _same_height([caption_band(width, f"{head}, frame {clip.frame_indices[k]}", scale) for k in range(T)])
    legend, note_bar = legend_band(width, entries, scale), caption_band(width, note, scale)
    frames = np.stack(
        [
            np.concatenate(
                [
                    captions[k],
                    labels,
                    np.concatenate([part for panel in panels for part in (white_gap, panel[k])][1:], axis=1),
                    legend,
                    note_bar,
                ],
                axis=0,
            )
            for k in range(T)
        ]
    )  # [T, caption + names + H*s + legend + note, 4*W*s + 3 gaps, 3]

    # the still: one row per panel (named on the left), one column per time slot
    columns = list(range(0, T, tubelet[0]))[:max_columns]
    col_gap = np.full((H * scale, 2 * scale, 3), 255, dtype=np.uint8)
    rows = [np.concatenate([part for k in columns for part in (col_gap, panel[k])][1:], axis=1) for panel in panels]
    row_names = [["original"], ["masked", "input"], ["recon-", "struction"], ["error"]]
    label_w = max(_text_width(line, scale) for names in row_names for line in names) + 6 * scale
    full_w = rows[0].shape[1] + label_w
    spacer = np.full((2 * scale, full_w, 3), 255, dtype=np.uint8)
    body = [
        part for image, names in zip(rows, row_names) for part in (spacer, _named_row(image, names, label_w, scale))
    ]
    grid = np.concatenate(
        [
            caption_band(full_w, head, scale),
            *body[1:],
            legend_band(full_w, entries, scale),
            caption_band(full_w, note, scale),
        ],
        axis=0,
    )  # [caption + rows + spacers + legend + note, label + columns*W*s + gaps, 3]
    return ReconPicture(frames, grid, recon.loss, la, lo, masked_share, anchor_share)


def show_recon(
    clip: Clip,
    model: Any,
    masker: Any,
    output: str | Path,
    *,
    detections: Sequence[Sequence[Any]] | None = None,
    png: str | Path | None = None,
    seed: int = 0,
    scale: int = 2,
    max_columns: int = 8,
) -> ReconPicture:
    """Mask ``clip`` with ``masker``, reconstruct it with ``model`` and write ``output`` (GIF) and a PNG grid.

    The PNG (default: the GIF's name with ``.png``) has four rows (original, masked input, reconstruction,
    error) with one column per tubelet slot; the GIF shows the four panels side by side, frame by frame.
    """
    if tuple(masker.tubelet) != tuple(model.tubelet):
        raise VideomaskError(
            f"the masker's tubelet {tuple(masker.tubelet)} differs from the model's {tuple(model.tubelet)}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    result = masker.generate(clip.batch(), generator)
    anchors = result.anchors[0] if result.anchors is not None else None
    device = next(model.parameters()).device
    recon = reconstruct(model, clip.video.to(device), result.mask[:1])
    drawn = _map_detections(clip, detections)
    picture = draw_recon(
        clip,
        recon,
        model.tubelet,
        anchors=anchors,
        boxes=drawn,
        title=masker.name,
        scale=scale,
        max_columns=max_columns,
    )
    picture.gif = save_gif(picture.frames, output)
    picture.png = save_png(picture.grid, png if png is not None else Path(output).with_suffix(".png"))
    return picture


def _map_detections(
    clip: Clip, detections: Sequence[Sequence[Any]] | None
) -> list[list[tuple[tuple[float, ...], str]]] | None:
    """Detections (original pixels) per clip frame -> ``(box in clip pixels, label)`` pairs per frame."""
    if detections is None:
        return None
    drawn = []
    for found in detections:
        if found:
            mapped = clip.geometry.map_boxes(torch.tensor([list(d.box) for d in found], dtype=torch.float64))
            drawn.append([(tuple(b.tolist()), d.label) for b, d in zip(mapped, found)])
        else:
            drawn.append([])
    return drawn


class ReconLogger:
    """During training: the reconstruction grid of one fixed clip into TensorBoard every ``train.recon_every`` steps.

    The clip is the centred evaluation clip of the dataset's first video, masked with the run's masker
    under one fixed seed (``run.seed``), so successive pictures differ only by what the model learned.
    The grid goes to the ``recon`` image tag (HWC uint8); a custom-scalars chart puts
    ``train/loss_anchor`` and ``train/loss_other`` side by side.
    """

    def __init__(
        self,
        writer: Any,
        dataset: Any,
        masker: Any,
        *,
        every: int,
        seed: int = 0,
        size: int | None = None,
        backend: str = "pyav",
        scale: int = 1,
    ) -> None:
        self.writer, self.dataset, self.masker, self.every = writer, dataset, masker, int(every)
        self.seed, self.size, self.backend, self.scale = int(seed), size, backend, int(scale)
        self._clip: Clip | None = None
        self._mask: tuple[Tensor, Tensor | None] | None = None
        writer.add_custom_scalars(
            {
                "videomask": {
                    "loss: anchor vs other masked patches": ["Multiline", ["train/loss_anchor", "train/loss_other"]]
                }
            }
        )

    @classmethod
    def for_run(cls, cfg: Any, dataset: Any, masker: Any, writer: Any) -> "ReconLogger | None":
        """The logger of a run (None when ``train.recon_every`` is 0 or TensorBoard is off)."""
        every = int(getattr(cfg.train, "recon_every", 0))
        if writer is None or every <= 0:
            return None
        return cls(
            writer, dataset, masker, every=every, seed=cfg.run.seed, size=cfg.data.size, backend=cfg.data.backend
        )

    def _fixed(self, model: Any) -> tuple[Clip, Tensor, Tensor | None]:
        if self._clip is None:
            transform = self.dataset.transform
            errors = []
            for item in self.dataset.items[:5]:  # the first video that decodes
                try:
                    self._clip = load_clip(
                        item.path,
                        video_id=item.video_id,
                        num_frames=self.dataset.num_frames,
                        sampling_rate=self.dataset.sampling_rate,
                        size=self.size or transform.size[0],
                        patch=tuple(model.tubelet[1:]),
                        backend=self.backend,
                        mean=transform.mean,
                        std=transform.std,
                    )
                    break
                except Exception as err:  # a bad video must not stop the training run
                    errors.append(f"{item.video_id}: {err}")
            if self._clip is None:
                raise VideomaskError("no video for the reconstruction picture decodes (" + "; ".join(errors) + ")")
            device = next(model.parameters()).device
            batch = {**self._clip.batch(), "video": self._clip.video.to(device)}
            gen = torch.Generator(device=device).manual_seed(self.seed)
            with torch.no_grad():
                result = self.masker.generate(batch, generator=gen)
            self._mask = (result.mask[:1].cpu(), result.anchors[0].cpu() if result.anchors is not None else None)
        assert self._mask is not None
        return self._clip, self._mask[0], self._mask[1]

    def maybe_log(self, model: Any, step: int) -> ReconPicture | None:
        """Log the grid when ``step`` is a multiple of ``every``; returns the picture (None when not logged)."""
        if self.every <= 0 or step % self.every:
            return None
        try:
            clip, mask, anchors = self._fixed(model)
        except Exception as err:
            print(f"warning: train.recon_every: no reconstruction pictures in this run ({err})", file=sys.stderr)
            self.every = 0
            return None
        device = next(model.parameters()).device
        recon = reconstruct(model, clip.video.to(device), mask)
        picture = draw_recon(clip, recon, model.tubelet, anchors=anchors, title=f"step {step}", scale=self.scale)
        self.writer.add_image("recon", picture.grid, step, dataformats="HWC")
        self.writer.flush()
        return picture
