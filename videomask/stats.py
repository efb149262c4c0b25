"""Difference statistics: a visual vocabulary of tubelet embeddings, visual-word counts in the source and
target domains, TF-ICF ranking, and the anchor words the difference masker scores patches against.

Pipeline (:func:`fit_statistics`):

1. **Embed** every tubelet token of clips from both sets with an :class:`Embedder`
   (``video [B, C, T, H, W] -> [B, L, D]``); embeddings are L2-normalised.
2. **Vocabulary** (pass 1): spherical mini-batch k-means (Sculley 2010) over a random subset of
   ``tokens_per_clip`` tokens per clip, source and target batches interleaved. k-means++ seeds the
   ``V = num_words`` centroids on the first chunk (``init_tokens`` vectors), refined by a few Lloyd
   steps; then every batch moves each centroid towards its assigned points with rate ``1 / n_c``
   (its running count). Memory is flat in the number of clips: only the first chunk is buffered.
3. **Counts** (pass 2): every token of every clip is assigned to its nearest centroid (highest cosine
   similarity); ``c_T(w)`` / ``c_S(w)`` count the tokens of word ``w`` in target / source,
   ``N_T`` / ``N_S`` the tokens in each set.
4. **TF-ICF** (term frequency in the target, inverse frequency in the source corpus)::

       tf_T(w)   = c_T(w) / N_T
       icf(w)    = log((N_S + V) / (c_S(w) + 1))        # -log of the add-one smoothed source frequency
       tficf(w)  = tf_T(w) * icf(w)

   Words frequent in the target and rare in the source score high; the top ``K = num_anchors`` words
   are the anchors.

The result, :class:`DifferenceStats`, is saved as safetensors (tensors plus JSON metadata) and loads
back with :meth:`DifferenceStats.load` or ``DifferenceMasker.load(path)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.patches import Tubelet, as_tubelet, grid_for

STATS_FORMAT = "videomask.difference_stats"
STATS_VERSION = 1
TFICF_FORMULA = "tf_T(w) = c_T(w)/N_T; icf(w) = log((N_S + V)/(c_S(w) + 1)); tficf(w) = tf_T(w) * icf(w)"

__all__ = [
    "Embedder",
    "PixelEmbedder",
    "ModelEmbedder",
    "CallableEmbedder",
    "build_embedder",
    "StreamingKMeans",
    "tficf_scores",
    "DifferenceStats",
    "fit_statistics",
]


# --------------------------------------------------------------------------------------------- #
# embedders
# --------------------------------------------------------------------------------------------- #


@runtime_checkable
class Embedder(Protocol):
    """``__call__(video [B, C, T, H, W]) -> [B, L, D]`` (one vector per tubelet token, token order)."""

    identity: dict

    def __call__(self, video: Tensor) -> Tensor: ...

    def to(self, device: torch.device | str) -> "Embedder": ...


class PixelEmbedder:
    """Model-free embedder: per-token normalised tubelet pixels through a fixed Gaussian projection.

    The clip is first average-pooled by ``pool`` x ``pool`` pixels in space (default 2: a 16 x 16
    patch becomes 8 x 8 values per frame and channel; ``pool=1`` keeps every pixel), which keeps
    colour and texture down to 2-px detail and makes the embedder about ``pool**2`` times cheaper. A token's
    ``t * (p/pool)**2 * C`` values are standardised (zero mean, unit variance over the token, so
    brightness and contrast drop out while texture and relative colour stay), then projected to
    ``dim`` with a matrix of ``N(0, 1/P)`` entries drawn from ``torch.Generator().manual_seed(seed)``.
    Deterministic from ``(seed, dim, tubelet, pool)``, which is its identity.
    """

    def __init__(self, *, dim: int = 64, seed: int = 0, tubelet: int | Sequence[int] = (2, 16, 16), pool: int = 2) -> None:
        if dim <= 0:
            raise VideomaskError(f"pixel embedder dim must be > 0, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)
        self.tubelet: Tubelet = as_tubelet(tubelet)
        self.pool = int(pool)
        if self.pool < 1 or self.tubelet[1] % self.pool or self.tubelet[2] % self.pool:
            raise VideomaskError(f"pixel embedder pool={pool} must divide the patch size {self.tubelet[1:]}")
        self.device = torch.device("cpu")
        self._projections: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}  # (C, device) -> conv kernels

    @property
    def identity(self) -> dict:
        return {"kind": "pixel", "seed": self.seed, "dim": self.dim, "tubelet": list(self.tubelet), "pool": self.pool}

    @property
    def _pooled_tubelet(self) -> Tubelet:
        t, ph, pw = self.tubelet
        return (t, ph // self.pool, pw // self.pool)

    def projection(self, in_features: int) -> Tensor:
        """The fixed ``[P, D]`` projection for ``P = in_features`` (drawn on CPU from the seed)."""
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(in_features, self.dim, generator=g) / math.sqrt(in_features)  # [P, D]

    def _kernels(self, channels: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Cached conv kernels for the *summed* (not averaged) pooled clip: projection + mean
        ``[D+1, C, t, p, p]`` and mean ``[1, C, t, p, p]``, both scaled by ``1 / pool**2`` (the mean of a
        pooling window is its sum over ``pool**2``; the mean-square kernel by ``1 / pool**4``), and ``1ᵀP [D]``.

        Scaling a kernel by a power of two is exact in floating point, so for ``pool`` = 1, 2, 4 the
        convolutions give the same numbers as on the average-pooled clip (only the order of the
        pooling window's additions differs).
        """
        key = (channels, device)
        if key not in self._projections:
            t, ph, pw = self._pooled_tubelet
            n = t * ph * pw * channels
            scale = 1.0 / (self.pool * self.pool)
            proj = self.projection(n)  # [P, D], rows in patchify order (t, p, p, C)
            weight = proj.T.reshape(self.dim, t, ph, pw, channels).permute(0, 4, 1, 2, 3)  # [D, C, t, p, p]
            mean = torch.full((1, channels, t, ph, pw), 1.0 / n)
            self._projections[key] = (
                (torch.cat([weight, mean]) * scale).contiguous().to(device),
                (mean * (scale * scale)).to(device),
                proj.sum(dim=0).to(device),
            )
        return self._projections[key]

    def _pool_sum(self, video: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` -> ``[B, C, T, H/pool, W/pool]``: the *sum* over each ``pool x pool`` window.

        Two passes of plain additions of strided views (rows, then column pairs); much cheaper on CPU
        than ``avg_pool3d`` (about 3 ms instead of 12 ms for a 8x3x16x112x112 clip on one thread).
        """
        p = self.pool
        rows = video.unflatten(3, (video.shape[3] // p, p))  # [B, C, T, H/p, p, W]
        acc = rows[:, :, :, :, 0] + rows[:, :, :, :, 1]  # (only called with pool >= 2)
        for i in range(2, p):
            acc += rows[:, :, :, :, i]
        cols = acc.unflatten(4, (acc.shape[4] // p, p))  # [B, C, T, H/p, W/p, p]
        out = cols[..., 0] + cols[..., 1]
        for i in range(2, p):
            out += cols[..., i]
        return out  # [B, C, T, H/p, W/p]

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` -> ``[B, L, D]``: ``standardise(patchify(pooled video)) @ projection``.

        Computed without materialising the patches: strided ``conv3d`` kernels give each token's
        projection and mean (one conv) and its mean square (a second), using
        ``((x - m) / s) @ P = (x @ P - m * 1ᵀP) / s`` (``s``: unbiased standard deviation, as ``torch.std``).
        The pooling's ``1 / pool**2`` is folded into the kernels (see :meth:`_kernels`).
        """
        video = video.float()
        grid_for(video.shape[2:], self.tubelet)
        if self.pool > 1:
            video = self._pool_sum(video)  # [B, C, T, H/pool, W/pool], window sums
        B, C = video.shape[:2]
        tubelet = self._pooled_tubelet
        n = tubelet[0] * tubelet[1] * tubelet[2] * C  # values per token
        weight, mean_kernel, proj_sum = self._kernels(C, video.device)
        out = F.conv3d(video, weight, stride=tubelet).flatten(2)  # [B, D+1, L]
        xp, mean = out[:, :-1], out[:, -1:]  # [B, D, L], [B, 1, L]
        sq = F.conv3d(video.square(), mean_kernel, stride=tubelet).flatten(2)  # [B, 1, L]
        std = ((sq - mean * mean).clamp_min(0) * (n / (n - 1))).sqrt()
        # the [B, D, L] layout keeps these element-wise ops contiguous; one transposing copy at the end
        emb = (xp - mean * proj_sum[:, None]) / (std + 1e-6)  # [B, D, L]
        return emb.transpose(1, 2).contiguous()  # [B, L, D]

    def to(self, device: torch.device | str) -> "PixelEmbedder":
        self.device = torch.device(device)  # kernels are built per (channels, device) on first use
        return self


def _fingerprint(module: torch.nn.Module) -> str:
    """SHA-1 of a module's state dict (names, shapes, values): a weight-level identity."""
    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _model_tubelet(model: torch.nn.Module) -> Tubelet | None:
    """The model's tubelet ``(t, p, p)`` when it exposes one (``tubelet`` or ``config.tubelet`` / HF names)."""
    for owner in (model, getattr(model, "config", None)):
        if owner is None:
            continue
        value = getattr(owner, "tubelet", None)
        if value is not None:
            return as_tubelet(value)
        t, p = getattr(owner, "tubelet_size", None), getattr(owner, "patch_size", None)
        if isinstance(t, int) and p is not None:
            return as_tubelet((t, *p) if isinstance(p, (tuple, list)) else (t, int(p)))
    return None


class ModelEmbedder:
    """Embeds with a (frozen) video model that has ``embed_patches(video) -> [B, L, D]``.

    The embedder holds a frozen deep copy of ``model`` (so the statistics' embedding space stays fixed
    while the original model trains). ``layer="patch"`` is the model's tubelet embedding (its patch projection, the contract of
    ``videomask.model.VideoMAE.embed_patches``). The identity holds a SHA-1 fingerprint of the
    model's weights, so statistics fitted with one checkpoint refuse another; ``source`` (e.g. the
    checkpoint path) is recorded so :func:`build_embedder` can rebuild it from a statistics file.
    """

    LAYERS = ("patch",)

    def __init__(self, model: torch.nn.Module, *, layer: str = "patch", source: str | None = None) -> None:
        if layer not in self.LAYERS:
            raise VideomaskError(f"model embedder layer must be one of {self.LAYERS}, got {layer!r}")
        if not hasattr(model, "embed_patches"):
            raise VideomaskError(f"model {type(model).__name__} has no embed_patches(video) -> [B, L, D]")
        self.model = copy.deepcopy(model).eval()  # a frozen copy: training the original leaves it untouched
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layer = layer
        self.source = source
        self.tubelet = _model_tubelet(model)
        self._fingerprint = _fingerprint(model)

    @property
    def identity(self) -> dict:
        ident = {"kind": "model", "layer": self.layer, "model": type(self.model).__name__, "fingerprint": self._fingerprint}
        if self.source is not None:
            ident["source"] = self.source
        return ident

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        dtype = next(self.model.parameters()).dtype
        return self.model.embed_patches(video.to(dtype)).float()  # [B, L, D]

    def to(self, device: torch.device | str) -> "ModelEmbedder":
        self.model.to(device)
        return self


class CallableEmbedder:
    """Wraps any ``fn(video [B, C, T, H, W]) -> [B, L, D]`` with a user-given JSON-able identity."""

    def __init__(self, fn: Callable[[Tensor], Tensor], identity: Mapping[str, Any]) -> None:
        try:
            json.dumps(dict(identity))
        except TypeError as err:
            raise VideomaskError(f"a callable embedder's identity must be JSON-able: {err}") from None
        self.fn = fn
        self._identity = {"kind": "callable", **dict(identity)}

    @property
    def identity(self) -> dict:
        return dict(self._identity)

    @torch.no_grad()
    def __call__(self, video: Tensor) -> Tensor:
        return self.fn(video)

    def to(self, device: torch.device | str) -> "CallableEmbedder":
        if hasattr(self.fn, "to"):
            self.fn.to(device)  # type: ignore[union-attr]
        return self


def _load_checkpoint_model(path: str) -> torch.nn.Module:
    """A videomask ``VideoMAE`` from a Hugging Face folder (``config.json``), a videomask checkpoint
    (``.safetensors`` file with its stored ``model_config``, or a folder holding ``model.safetensors``)
    or an original VideoMAE ``.pth`` (see :func:`videomask.checkpoint.load_model`)."""
    from videomask.checkpoint import load_model

    return load_model(path)[0]


def build_embedder(
    spec: str | Mapping[str, Any], *, tubelet: int | Sequence[int] = (2, 16, 16), dim: int = 64, seed: int = 0, pool: int = 2
) -> Any:
    """An embedder from a CLI spec (``"pixel"``, ``"checkpoint:PATH"``) or from a stored identity dict."""
    if isinstance(spec, Mapping):
        kind = spec.get("kind")
        if kind == "pixel":
            return PixelEmbedder(dim=int(spec["dim"]), seed=int(spec["seed"]), tubelet=spec["tubelet"], pool=int(spec.get("pool", 1)))
        if kind == "model" and spec.get("source"):
            embedder = ModelEmbedder(_load_checkpoint_model(str(spec["source"])), layer=str(spec.get("layer", "patch")), source=str(spec["source"]))
            check_identity(spec, embedder.identity)
            return embedder
        raise VideomaskError(
            f"statistics were fitted with a {kind!r} embedder that cannot be rebuilt from the file; "
            "pass the same embedder (embedder=...)"
        )
    if spec == "pixel":
        return PixelEmbedder(dim=dim, seed=seed, tubelet=tubelet, pool=pool)
    if spec.startswith("checkpoint:"):
        source = spec.split(":", 1)[1]
        return ModelEmbedder(_load_checkpoint_model(source), source=source)
    raise VideomaskError(f"unknown embedder {spec!r} (use 'pixel' or 'checkpoint:PATH')")


def check_identity(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    """Raise when an embedder is not the one the statistics were fitted with (``source`` may differ)."""
    a = {k: v for k, v in dict(expected).items() if k != "source"}
    b = {k: v for k, v in dict(actual).items() if k != "source"}
    if json.loads(json.dumps(a)) != json.loads(json.dumps(b)):
        raise VideomaskError(
            f"embedder mismatch: the statistics were fitted with {json.dumps(a, sort_keys=True)}, "
            f"got {json.dumps(b, sort_keys=True)}"
        )


# --------------------------------------------------------------------------------------------- #
# streaming spherical k-means
# --------------------------------------------------------------------------------------------- #


class StreamingKMeans:
    """Spherical mini-batch k-means on L2-normalised vectors, memory flat in the number of batches.

    ``partial_fit(x [N, D])`` buffers vectors until ``init_tokens`` have arrived, seeds the
    centroids with k-means++ on that chunk and refines them with ``init_iters`` Lloyd steps; after
    that each call moves every centroid towards the mean of its assigned points with rate
    ``n_batch / n_c`` (Sculley's per-centre learning rate) and re-normalises it. ``finalize()``
    initialises from whatever was buffered when fewer than ``init_tokens`` vectors came.
    """

    def __init__(self, num_words: int, *, init_tokens: int = 4096, init_iters: int = 10, seed: int = 0) -> None:
        if num_words < 1:
            raise VideomaskError(f"num_words must be >= 1, got {num_words}")
        self.num_words = int(num_words)
        self.init_tokens = max(int(init_tokens), self.num_words)
        self.init_iters = int(init_iters)
        self.generator = torch.Generator().manual_seed(seed)
        self.centroids: Tensor | None = None  # [V, D]
        self.counts: Tensor | None = None  # [V] points seen per centroid
        self._buffer: list[Tensor] = []
        self._buffered = 0

    @staticmethod
    def assign(x: Tensor, centroids: Tensor) -> Tensor:
        """Nearest centroid (highest cosine) of each row of ``x [N, D]`` -> long ``[N]``."""
        return (x @ centroids.T).argmax(dim=1)

    def _kmeans_pp(self, x: Tensor) -> Tensor:
        """Greedy k-means++ seeding on ``x [N, D]`` (distance ``1 - cos``) -> ``[V, D]``.

        As scikit-learn: each step draws ``2 + ln V`` candidates with probability proportional to
        the current distance and keeps the one that lowers the total distance most.
        """
        n = x.shape[0]
        trials = 2 + int(math.log(self.num_words))
        first = int(torch.randint(n, (1,), generator=self.generator))
        chosen = [first]
        dist = (1.0 - x @ x[first]).clamp_min(0)  # [N] distance to the nearest chosen centre
        for _ in range(1, self.num_words):
            total = float(dist.sum())
            if total <= 0:  # fewer distinct points than words: repeat a random point
                cand = torch.randint(n, (trials,), generator=self.generator)
            else:
                cand = torch.multinomial(dist / total, trials, replacement=True, generator=self.generator)  # [trials]
            new_dist = torch.minimum(dist[None], (1.0 - x[cand] @ x.T).clamp_min(0))  # [trials, N]
            best = int(new_dist.sum(dim=1).argmin())
            chosen.append(int(cand[best]))
            dist = new_dist[best]
        return x[chosen].clone()

    def _initialise(self) -> None:
        x = torch.cat(self._buffer)  # [N0, D]
        self._buffer, self._buffered = [], 0
        c = self._kmeans_pp(x)
        for _ in range(self.init_iters):
            a = self.assign(x, c)
            sums = torch.zeros_like(c).index_add_(0, a, x)
            n = torch.bincount(a, minlength=self.num_words)
            c = torch.where((n > 0)[:, None], F.normalize(sums, dim=1), c)
        self.centroids = c
        self.counts = torch.bincount(self.assign(x, c), minlength=self.num_words).float()

    def partial_fit(self, x: Tensor) -> None:
        """Feed vectors ``[N, D]`` (normalised here)."""
        x = F.normalize(x.detach().float().cpu(), dim=1)
        if self.centroids is None:
            self._buffer.append(x)
            self._buffered += x.shape[0]
            if self._buffered >= self.init_tokens:
                self._initialise()
            return
        assert self.counts is not None
        a = self.assign(x, self.centroids)
        n = torch.bincount(a, minlength=self.num_words).float()  # [V]
        sums = torch.zeros_like(self.centroids).index_add_(0, a, x)  # [V, D]
        self.counts += n
        rate = (n / self.counts.clamp_min(1))[:, None]  # [V, 1]
        means = sums / n.clamp_min(1)[:, None]
        updated = F.normalize((1 - rate) * self.centroids + rate * means, dim=1)
        self.centroids = torch.where((n > 0)[:, None], updated, self.centroids)

    def finalize(self) -> Tensor:
        """The centroids ``[V, D]`` (initialising from the buffer if the stream was short)."""
        if self.centroids is None:
            if self._buffered < self.num_words:
                raise VideomaskError(
                    f"only {self._buffered} tokens were seen, fewer than num_words={self.num_words}; "
                    "use more clips or fewer words"
                )
            self._initialise()
        assert self.centroids is not None
        return self.centroids


def tficf_scores(counts_target: Tensor, counts_source: Tensor) -> Tensor:
    """TF-ICF per word ``[V]``: ``tf_T(w) * log((N_S + V) / (c_S(w) + 1))`` with ``tf_T(w) = c_T(w) / N_T``."""
    V = counts_target.numel()
    n_t = counts_target.sum().clamp_min(1).double()
    n_s = counts_source.sum().double()
    tf = counts_target.double() / n_t
    icf = torch.log((n_s + V) / (counts_source.double() + 1))
    return (tf * icf).float()


# --------------------------------------------------------------------------------------------- #
# the statistics file
# --------------------------------------------------------------------------------------------- #


@dataclass
class DifferenceStats:
    """Fitted difference statistics.

    ``centroids [V, D]`` (unit vectors), ``anchors [K]`` (word ids, best TF-ICF first),
    ``counts_target [V]`` / ``counts_source [V]`` (token counts per word), ``tficf [V]``,
    ``embedder`` (the embedder's identity dict) and ``settings`` (fit options and data sizes).
    """

    centroids: Tensor
    anchors: Tensor
    counts_target: Tensor
    counts_source: Tensor
    tficf: Tensor
    embedder: dict
    settings: dict = field(default_factory=dict)

    @property
    def num_words(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def tubelet(self) -> Tubelet:
        return as_tubelet(self.settings.get("tubelet", self.embedder.get("tubelet", (2, 16, 16))))

    def anchor_centroids(self) -> Tensor:
        """``[K, D]`` centroids of the anchor words."""
        return self.centroids[self.anchors]

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file (tensors + JSON metadata under ``videomask``)."""
        from safetensors.torch import save_file

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
        save_file(tensors, str(path), metadata={"videomask": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DifferenceStats":
        """Read a file written by :meth:`save`; a clear error for a missing or foreign file."""
        from safetensors import SafetensorError, safe_open

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
        )

    def summary(self) -> str:
        """A few lines describing the vocabulary and the anchors."""
        n_t, n_s = int(self.counts_target.sum()), int(self.counts_source.sum())
        lines = [
            f"{self.num_words} visual words (dim {self.centroids.shape[1]}), {self.anchors.numel()} anchors; "
            f"target tokens {n_t}, source tokens {n_s}; embedder {json.dumps(self.embedder, sort_keys=True)}",
            "anchor  word  tf-icf   target share  source share",
        ]
        for rank, w in enumerate(self.anchors.tolist()):
            lines.append(
                f"{rank:6d}  {w:4d}  {float(self.tficf[w]):.4f}  {int(self.counts_target[w]) / max(n_t, 1):12.4f}  "
                f"{int(self.counts_source[w]) / max(n_s, 1):12.4f}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- #
# fitting
# --------------------------------------------------------------------------------------------- #


def _batches(data: Any, batch_size: int, num_workers: int) -> Iterable[Any]:
    """Re-iterable batches from a DataLoader, a map-style dataset, or any re-iterable of batches."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Tensor):  # one batch of videos [B, C, T, H, W]
        return [data]
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple))):
        try:
            from videomask.data import collate_clips
        except ImportError:
            collate_clips = None
        kwargs = {"collate_fn": collate_clips} if collate_clips is not None else {}
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, **kwargs)
    if isinstance(data, Iterator):
        raise VideomaskError("fit_statistics needs a re-iterable source (a dataset, DataLoader or list), not a one-shot iterator")
    return data


def _video_of(batch: Any) -> Tensor:
    video = batch.get("video") if isinstance(batch, Mapping) else batch
    if not isinstance(video, Tensor) or video.dim() != 5:
        raise VideomaskError("batches must be video tensors [B, C, T, H, W] or dicts with a 'video' tensor")
    return video


def _limited(batches: Iterable[Any], max_clips: int | None) -> Iterator[Tensor]:
    """Videos from ``batches``, stopping after ``max_clips`` clips (the last batch is cut)."""
    seen = 0
    for batch in batches:
        video = _video_of(batch)
        if max_clips is not None:
            if seen >= max_clips:
                return
            video = video[: max_clips - seen]
        seen += video.shape[0]
        yield video


@torch.no_grad()
def _embed(embedder: Any, video: Tensor, device: torch.device) -> Tensor:
    """Normalised embeddings ``[B, L, D]`` on ``device``."""
    emb = embedder(video.to(device))
    if emb.dim() != 3:
        raise VideomaskError(f"embedder must return [B, L, D], got shape {tuple(emb.shape)}")
    return F.normalize(emb.float(), dim=-1)


def fit_statistics(
    source: Any,
    target: Any,
    embedder: Any,
    *,
    num_words: int = 64,
    num_anchors: int = 8,
    tokens_per_clip: int = 256,
    max_clips: int | None = None,
    epochs: int = 1,
    init_tokens: int = 4096,
    seed: int = 0,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> DifferenceStats:
    """Fit the visual vocabulary, count words in source and target, rank them by TF-ICF, keep anchors.

    ``source`` / ``target``: a ``VideoDataset`` (or any map-style dataset of clip dicts), a
    ``DataLoader``, or a re-iterable of batches (video tensors ``[B, C, T, H, W]`` or dicts with
    ``video``). ``embedder``: an :class:`Embedder`. ``tokens_per_clip`` tokens per clip (random,
    seeded) feed the k-means for ``epochs`` passes; the counting pass uses every token.
    ``max_clips`` caps the clips taken from each set per pass. See the module docstring for TF-ICF.
    """
    from tqdm.auto import tqdm

    if num_anchors < 1 or num_anchors > num_words:
        raise VideomaskError(f"num_anchors must be in [1, num_words={num_words}], got {num_anchors}")
    device = torch.device(device)
    embedder.to(device)
    src = _batches(source, batch_size, num_workers)
    tgt = _batches(target, batch_size, num_workers)
    g = torch.Generator().manual_seed(seed)
    kmeans = StreamingKMeans(num_words, init_tokens=init_tokens, seed=seed)

    # pass 1: vocabulary, source and target batches interleaved so the first chunk holds both
    bar = tqdm(desc="fit vocabulary", unit="clip", disable=not progress)
    clip_size: tuple | None = None
    for _ in range(max(1, int(epochs))):
        for pair in zip_longest(_limited(src, max_clips), _limited(tgt, max_clips)):
            for video in pair:
                if video is None:
                    continue
                emb = _embed(embedder, video, device)  # [B, L, D]
                B, L, D = emb.shape
                n = min(tokens_per_clip, L)
                pick = torch.rand(B, L, generator=g).argsort(dim=1)[:, :n].to(device)  # [B, n]
                sample = emb.gather(1, pick[..., None].expand(B, n, D)).reshape(B * n, D)  # [B*n, D]
                kmeans.partial_fit(sample)
                clip_size = clip_size or tuple(video.shape[2:])
                bar.update(B)
    bar.close()
    centroids = kmeans.finalize().to(device)  # [V, D]

    # pass 2: count every token's visual word in each set
    counts = {}
    clips = {}
    for name, data in (("source", src), ("target", tgt)):
        c = torch.zeros(num_words, dtype=torch.long, device=device)
        n_clips = 0
        for video in tqdm(_limited(data, max_clips), desc=f"count {name} words", unit="batch", disable=not progress):
            emb = _embed(embedder, video, device)  # [B, L, D]
            words = StreamingKMeans.assign(emb.reshape(-1, emb.shape[-1]), centroids)  # [B*L]
            c += torch.bincount(words, minlength=num_words)
            n_clips += video.shape[0]
        if n_clips == 0:
            raise VideomaskError(f"the {name} set gave no clips")
        counts[name], clips[name] = c.cpu(), n_clips

    scores = tficf_scores(counts["target"], counts["source"])  # [V]
    anchors = scores.argsort(descending=True, stable=True)[:num_anchors]  # [K] best first
    tubelet = getattr(embedder, "tubelet", None) or embedder.identity.get("tubelet")
    settings = {
        "num_words": num_words,
        "num_anchors": num_anchors,
        "tokens_per_clip": tokens_per_clip,
        "epochs": int(epochs),
        "init_tokens": init_tokens,
        "seed": seed,
        "max_clips": max_clips,
        "source_clips": clips["source"],
        "target_clips": clips["target"],
        "clip_size": list(clip_size) if clip_size else None,
        "tficf": TFICF_FORMULA,
    }
    if tubelet is not None:
        settings["tubelet"] = list(as_tubelet(tubelet))
    return DifferenceStats(
        centroids=centroids.cpu(),
        anchors=anchors,
        counts_target=counts["target"],
        counts_source=counts["source"],
        tficf=scores,
        embedder=embedder.identity,
        settings=settings,
    )
