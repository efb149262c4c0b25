"""The statistics file: :class:`DifferenceStats`, its safetensors format, calibrated quantiles and summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from videomask.difference.calibration import QUANTILE_LEVELS
from videomask.errors import VideomaskError
from videomask.io import write_bytes_atomic
from videomask.patches import Tubelet, as_tubelet

__all__ = ["STATS_FORMAT", "STATS_VERSION", "DifferenceStats"]

STATS_FORMAT = "videomask.difference_stats"
STATS_VERSION = 2

log = logging.getLogger("videomask.difference")


def _setting(key: str, value: object) -> str:
    """``data.size=112`` for a config key, ``--size 112`` for a command-line flag."""
    return f"{key} {value}" if key.startswith("--") else f"{key}={value}"


@dataclass
class DifferenceStats:
    """Fitted difference statistics (see docs/difference.md).

    Visual words (a vocabulary fitted on source and target tokens): ``centroids [V, D]`` (unit vectors),
    ``counts_target [V]`` / ``counts_source [V]``, ``tficf [V]``, ``anchors [K]`` (the top-K TF-ICF words,
    the text paper's rule), ``enrichment [V]`` (log-odds z-scores) and ``enriched [K']`` (the words
    significantly more frequent in the target, most enriched first; may be empty).

    Source novelty: ``prototypes [M, D]`` (unit vectors, k-means on **source tokens only**) and the
    distance quantiles ``source_quantiles [1001]`` (held-out source tokens) and ``target_quantiles [1001]``
    at levels 0, 0.001, ..., 1, which calibrate a token's distance to the source.

    ``embedder`` (the embedder's identity dict) and ``settings`` (fit options, data sizes; ``clip_size``:
    the ``[T, H, W]`` of the fitted clips, checked by :meth:`check_clip`).
    """

    centroids: Tensor
    anchors: Tensor
    counts_target: Tensor
    counts_source: Tensor
    tficf: Tensor
    embedder: dict
    settings: dict = field(default_factory=dict)
    enrichment: Tensor | None = None
    enriched: Tensor | None = None
    prototypes: Tensor | None = None
    source_quantiles: Tensor | None = None
    target_quantiles: Tensor | None = None

    @property
    def num_words(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def tubelet(self) -> Tubelet:
        return as_tubelet(self.settings.get("tubelet", self.embedder.get("tubelet", (2, 16, 16))))

    @property
    def clip_size(self) -> tuple[int, int, int] | None:
        """``(T, H, W)`` of the clips the statistics were fitted on (None when the file does not record it)."""
        size = self.settings.get("clip_size")
        return tuple(int(v) for v in size) if size and len(size) == 3 else None  # type: ignore[return-value]

    @property
    def size(self) -> int | None:
        """The fitted clips' side in pixels (the shorter one), the scale every token embedding depends on."""
        clip = self.clip_size
        return None if clip is None else min(clip[1], clip[2])

    @property
    def frames_matter(self) -> bool:
        """Whether the embeddings depend on the clip's frame count: encoder blocks add a position table over
        the token grid (the tubelet, CNN and pixel embedders see one tubelet at a time)."""
        return self.embedder.get("kind") == "model" and self.embedder.get("layer", "patch") != "patch"

    def check_clip(
        self, clip: Sequence[int], *, size_key: str = "the clip size", frames_key: str = "the clip's frames"
    ) -> None:
        """Refuse to score clips of ``clip = (T, H, W)`` (or ``(H, W)``) at another scale than the fit.

        Token embeddings of pixel patches depend on the pixels per patch, so the source prototypes, the
        distance calibration and the visual words only hold at the fitted size (and, for encoder-block
        embedders, frame count). ``size_key`` / ``frames_key`` name the setting to change (``data.size``,
        ``--size``). Files that record no clip size skip the check (one log line).
        """
        fitted = self.clip_size
        if fitted is None:
            log.warning("these statistics record no clip size (an older videomask wrote them): size check skipped")
            return
        *frames, height, width = (int(v) for v in clip)
        size = min(height, width)
        if size != self.size:
            verb = "pass" if size_key.startswith("--") else "set"
            raise VideomaskError(
                f"statistics fitted at {self.size} px clips, this run uses {_setting(size_key, size)}: refit with "
                f"`videomask fit --size {size}` or {verb} {_setting(size_key, self.size)}"
            )
        if frames and self.frames_matter and frames[0] != fitted[0]:
            verb = "pass" if frames_key.startswith("--") else "set"
            raise VideomaskError(
                f"statistics fitted on {fitted[0]}-frame clips with encoder-block embeddings (positions over the "
                f"token grid), this run uses {_setting(frames_key, frames[0])}: refit with `videomask fit "
                f"--num-frames {frames[0]}` or {verb} {_setting(frames_key, fitted[0])}"
            )

    @property
    def scorers(self) -> tuple[str, ...]:
        """The scorers this file supports (version-1 files only have TF-ICF)."""
        out = ["tficf"]
        if self.enrichment is not None:
            out.insert(0, "enrichment")
        if self.prototypes is not None and self.source_quantiles is not None:
            out.insert(0, "distance")
        return tuple(out)

    def anchor_centroids(self) -> Tensor:
        """``[K, D]`` centroids of the TF-ICF anchor words."""
        return self.centroids[self.anchors]

    def source_quantile(self, level: float) -> float:
        """The distance below which a share ``level`` of held-out source tokens lie."""
        if self.source_quantiles is None:
            raise VideomaskError("these statistics have no source-distance calibration (refit with this videomask)")
        return _interp(level, QUANTILE_LEVELS, self.source_quantiles)

    def novelty_share(self, level: float = 0.99) -> tuple[float, float]:
        """``(target share, source share)`` of tokens whose distance exceeds the source ``level`` quantile."""
        thr = self.source_quantile(level)
        assert self.target_quantiles is not None
        return 1.0 - _interp(thr, self.target_quantiles, QUANTILE_LEVELS), 1.0 - level  # 1 - target CDF at thr

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file (tensors + JSON metadata under ``videomask``)."""

        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": STATS_FORMAT, "version": STATS_VERSION, "embedder": self.embedder, "settings": self.settings}
        tensors = {
            "centroids": self.centroids.detach().float().cpu().contiguous(),
            "anchors": self.anchors.detach().long().cpu().contiguous(),
            "counts_target": self.counts_target.detach().long().cpu().contiguous(),
            "counts_source": self.counts_source.detach().long().cpu().contiguous(),
            "tficf": self.tficf.detach().float().cpu().contiguous(),
        }
        for name in ("enrichment", "prototypes", "source_quantiles", "target_quantiles"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value.detach().float().cpu().contiguous()
        if self.enriched is not None:
            tensors["enriched"] = self.enriched.detach().long().cpu().contiguous()
        # the shared atomic writer: a file the user shares gets a checkpoint's permissions (umask), not 0600
        write_bytes_atomic(path, st_save(tensors, metadata={"videomask": json.dumps(meta)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DifferenceStats":
        """Read a file written by :meth:`save`; a clear error for a missing or foreign file."""

        path = Path(path)
        if not path.is_file():
            raise VideomaskError(f"statistics file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_text = (f.metadata() or {}).get("videomask")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise VideomaskError(f"{path} is not a readable safetensors statistics file ({err})") from None
        if meta_text is None:
            raise VideomaskError(f"{path} is a safetensors file but not videomask difference statistics")
        meta = json.loads(meta_text)
        if meta.get("format") != STATS_FORMAT:
            raise VideomaskError(f"{path} is not videomask difference statistics (format {meta.get('format')!r})")
        if int(meta.get("version", 0)) > STATS_VERSION:
            raise VideomaskError(f"{path} has statistics version {meta['version']}, newer than this videomask reads")
        missing = {"centroids", "anchors", "counts_target", "counts_source", "tficf"} - set(tensors)
        if missing:
            raise VideomaskError(f"{path} lacks tensors {sorted(missing)}")
        return cls(
            centroids=tensors["centroids"],
            anchors=tensors["anchors"],
            counts_target=tensors["counts_target"],
            counts_source=tensors["counts_source"],
            tficf=tensors["tficf"],
            embedder=meta["embedder"],
            settings=meta.get("settings", {}),
            enrichment=tensors.get("enrichment"),
            enriched=tensors.get("enriched"),
            prototypes=tensors.get("prototypes"),
            source_quantiles=tensors.get("source_quantiles"),
            target_quantiles=tensors.get("target_quantiles"),
        )

    def summary(self, top: int = 8) -> str:
        """What the statistics found, per scorer: target share, source share and enrichment."""
        n_t, n_s = int(self.counts_target.sum()), int(self.counts_source.sum())
        share_t = self.counts_target.double() / max(n_t, 1)
        share_s = self.counts_source.double() / max(n_s, 1)
        lines = [
            f"{self.num_words} visual words (dim {self.centroids.shape[1]}); target tokens {n_t}, source tokens {n_s}; "
            f"embedder {json.dumps(self.embedder, sort_keys=True)}",
        ]
        if "distance" in self.scorers:
            assert self.prototypes is not None
            lines.append(
                f"distance (default): cosine distance to the nearest of {self.prototypes.shape[0]} source prototypes"
            )
            lines.append("  source level  distance  target share above  source share above  enrichment")
            for level in (0.9, 0.95, 0.99):
                t_share, s_share = self.novelty_share(level)
                lines.append(
                    f"  {level:12.2f}  {self.source_quantile(level):8.4f}  {t_share:17.4f}  {s_share:18.4f}  "
                    f"{t_share / max(s_share, 1e-9):9.2f}x"
                )
        if self.enrichment is not None:
            enriched = self.enriched if self.enriched is not None else torch.zeros(0, dtype=torch.long)
            lines.append(
                f"enrichment: {enriched.numel()} word(s) significantly more frequent in the target "
                f"(log-odds z >= {self.settings.get('z_min', 1.96)})"
            )
            lines.append("  word  z-score  target share  source share")
            for w in enriched.tolist()[:top]:
                lines.append(
                    f"  {w:4d}  {float(self.enrichment[w]):7.2f}  {float(share_t[w]):12.4f}  {float(share_s[w]):12.4f}"
                )
        lines.append(f"tficf (the text paper's rule): top {self.anchors.numel()} words")
        lines.append("  word  tf-icf   target share  source share")
        for w in self.anchors.tolist()[:top]:
            lines.append(f"  {w:4d}  {float(self.tficf[w]):.4f}  {float(share_t[w]):12.4f}  {float(share_s[w]):12.4f}")
        return "\n".join(lines)

    def warnings(self) -> list[str]:
        """One-line warnings when nothing in the target stands out from the source."""
        out = []
        if "distance" in self.scorers:
            t_share, s_share = self.novelty_share(0.99)
            if t_share < 1.5 * s_share:
                out.append(
                    f"warning: only {t_share:.1%} of target tokens lie beyond the source's 99th distance "
                    f"percentile (source: {s_share:.1%}): nothing in the target looks new to this embedder"
                )
        if self.enriched is not None and self.enriched.numel() == 0:
            out.append("warning: no visual word is significantly more frequent in the target than in the source")
        if out:
            out.append(f"  try next: {_next_try(self.embedder, self.settings)}")
        return out


def _next_try(embedder: dict, settings: dict) -> str:
    """What to try when an embedder finds nothing new: another embedder first, then the data itself."""
    kind, layer = embedder.get("kind"), embedder.get("layer", "patch")
    if kind == "pixel":
        other = "--embedder cnn (ImageNet features: objects and scenes rather than texture and colour)"
    elif kind == "cnn":
        other = "--embedder pixel (texture and colour) or checkpoint:PATH (a source encoder)"
    elif kind == "model" and layer == "patch":
        other = "--layer block:2 (tokens that see their context) or --embedder cnn"
    else:
        other = "--embedder cnn or --embedder pixel"
    every = settings.get("holdout_every", 4)
    return (
        f"{other}; if no embedder finds anything, check that source and target differ, and give more source "
        f"videos (every {every}-th source video calibrates the 99th percentile)"
    )


def _interp(x: float, xs: Tensor, ys: Tensor) -> float:
    """Piecewise-linear ``y(x)`` through the points ``(xs, ys)`` (``xs`` increasing)."""
    x = min(max(float(x), float(xs[0])), float(xs[-1]))
    i = int(torch.searchsorted(xs, torch.tensor([x], dtype=xs.dtype)).clamp(1, xs.numel() - 1))
    x0, x1, y0, y1 = float(xs[i - 1]), float(xs[i]), float(ys[i - 1]), float(ys[i])
    return y0 if x1 == x0 else y0 + (x - x0) / (x1 - x0) * (y1 - y0)
