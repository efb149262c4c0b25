"""Streaming spherical k-means: the visual vocabulary and the source prototypes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from videomask.errors import VideomaskError

__all__ = ["StreamingKMeans"]


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

    def finalize(self, allow_fewer: bool = False) -> Tensor:
        """The centroids ``[V, D]`` (initialising from the buffer if the stream was short).

        ``allow_fewer``: with fewer buffered vectors than centroids, fit as many centroids as vectors
        instead of failing (the source prototypes of a tiny source set).
        """
        if self.centroids is None:
            if allow_fewer and 0 < self._buffered < self.num_words:
                self.num_words = self._buffered
            if self._buffered < self.num_words:
                raise VideomaskError(
                    f"only {self._buffered} tokens were seen, fewer than num_words={self.num_words}; "
                    "use more clips or fewer words"
                )
            self._initialise()
        assert self.centroids is not None
        return self.centroids
