"""Mask pictures: a clip with its masked patches shaded, anchor patches outlined and detections drawn.

:func:`show_masks` does the whole job for one video and any registered masker (``videomask
show-masks``): it samples a centred clip, applies the evaluation transform (short side resize +
centre crop, the same :class:`~videomask.data.ClipTransform` the datasets use), builds a one-clip
batch dict, runs the masker and writes an animated GIF (left: the clip with detections; right: masked
patches shaded grey, anchor patches outlined yellow) and a PNG grid (one column per tubelet slot).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.patches import ClipGeometry, Tubelet

MASK_GREY = np.array([96, 96, 96], dtype=np.float32)
ANCHOR_COLOUR = (255, 220, 0)  # RGB yellow
BOX_COLOUR = (0, 230, 80)  # RGB green


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
) -> Clip:
    """Decode the centred clip of a video and apply the evaluation transform."""
    from videomask.data import ClipTransform, sample_indices
    from videomask.video import open_video

    path = Path(path)
    if not path.is_file():
        raise VideomaskError(f"no such video file: {path}")
    transform = ClipTransform.for_eval(size, patch=patch)
    with open_video(str(path), backend=backend) as reader:
        indices = sample_indices(reader.meta.num_frames, num_frames, sampling_rate, mode="center", short="loop")
        original = reader.read(indices)  # uint8 [T, H, W, 3]
    video, geometry = transform(original)  # [C, T, h, w] normalised
    mean = torch.tensor(transform.mean).view(-1, 1, 1, 1)
    std = torch.tensor(transform.std).view(-1, 1, 1, 1)
    pixels = ((video * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)  # [C, T, h, w]
    frames = pixels.permute(1, 2, 3, 0).contiguous().numpy()  # [T, h, w, C]
    return Clip(video_id or path.name, frames, video[None], [int(i) for i in indices], geometry, original)


def _outline(image: np.ndarray, cells: np.ndarray, patch: tuple[int, int], scale: int, colour: tuple[int, int, int]) -> None:
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
    import cv2

    for box, label in boxes:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        if x1 <= x0 or y1 <= y0:
            continue
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), BOX_COLOUR, max(1, scale // 2))
        cv2.putText(image, label, (x0 + 1, max(y0 - 2, 4 * scale)), cv2.FONT_HERSHEY_PLAIN, 0.4 * scale, BOX_COLOUR, 1, cv2.LINE_AA)


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
    import cv2

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


def _caption(width: int, text: str, scale: int) -> np.ndarray:
    import cv2

    bar = np.full((12 * scale, width, 3), 255, dtype=np.uint8)
    cv2.putText(bar, text, (4, 9 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.3 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def save_gif(pictures: np.ndarray, path: str | Path, frame_ms: int = 200, colors: int = 128) -> Path:
    """Write uint8 ``[T, H, W, 3]`` as a looping GIF (one ``colors``-colour palette for all frames)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one shared palette without dithering keeps the file small (flat grey masks, no noise patterns)
    strip = Image.fromarray(np.concatenate(list(pictures), axis=0))
    palette = strip.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    images = [Image.fromarray(p).quantize(palette=palette, dither=Image.Dither.NONE) for p in pictures]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0, optimize=True)
    return path


def save_png(picture: np.ndarray, path: str | Path, colors: int | None = 256) -> Path:
    """Write one uint8 ``[H, W, 3]`` picture as PNG (palette of ``colors`` colours, or full RGB with None)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(picture)
    if colors is not None:
        image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    return path


@dataclass
class MaskPicture:
    """What :func:`show_masks` wrote and measured."""

    gif: Path
    png: Path
    masked_share: float
    anchor_share: float | None
    detections: int


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
) -> MaskPicture:
    """Mask ``clip`` with ``masker`` and write ``output`` (GIF) and a PNG grid (default: same name, ``.png``).

    ``detections[k]``: :class:`~videomask.detect.Detection` objects (original pixels) of clip frame ``k``,
    drawn mapped through the clip's geometry. Returns the paths and the masked / anchor token shares.
    """
    generator = torch.Generator().manual_seed(int(seed))
    result = masker.generate(clip.batch(), generator)
    mask = result.mask[0]  # [L]
    anchors = result.anchors[0] if result.anchors is not None else None
    drawn = None
    if detections is not None:
        drawn = []
        for found in detections:
            if found:
                mapped = clip.geometry.map_boxes(torch.tensor([list(d.box) for d in found], dtype=torch.float64))
                drawn.append([(tuple(b.tolist()), d.label) for b, d in zip(mapped, found)])
            else:
                drawn.append([])
    plain, masked = draw_frames(clip.frames, mask, masker.tubelet, anchors=anchors, boxes=drawn, scale=scale)
    T = len(plain)
    masked_share = float(mask.float().mean())
    anchor_share = float(anchors.float().mean()) if anchors is not None else None
    title = f"{masker.name}  masked {masked_share:.0%}" + (f"  anchors {anchor_share:.0%}" if anchor_share is not None else "")
    width = plain.shape[2] * 2 + 4 * scale
    gap = np.full((plain.shape[1], 4 * scale, 3), 255, dtype=np.uint8)
    pictures = np.stack([
        np.concatenate([_caption(width, f"{title}  frame {clip.frame_indices[k]}", scale),
                        np.concatenate([plain[k], gap, masked[k]], axis=1)], axis=0)
        for k in range(T)
    ])  # [T, caption + H*s, 2*W*s + gap, 3]
    gif = save_gif(pictures, output)
    t = masker.tubelet[0]
    columns = list(range(0, T, t))[:max_columns]  # the first frame of each tubelet slot
    col_gap = np.full((plain.shape[1], 2 * scale, 3), 255, dtype=np.uint8)

    def row(images: np.ndarray) -> np.ndarray:
        parts = []
        for n, k in enumerate(columns):
            parts += ([col_gap] if n else []) + [images[k]]
        return np.concatenate(parts, axis=1)

    top, bottom = row(plain), row(masked)
    grid = np.concatenate([_caption(top.shape[1], title, scale), top, np.full((2 * scale, top.shape[1], 3), 255, np.uint8), bottom], axis=0)
    png_path = save_png(grid, png if png is not None else Path(output).with_suffix(".png"))
    count = sum(len(f) for f in detections) if detections is not None else 0
    return MaskPicture(gif, png_path, masked_share, anchor_share, count)
