"""The masker core: :class:`MaskResult`, the :class:`Masker` base classes, the registry and the shared
selection step (MAE-style index bookkeeping, :func:`mask_to_ids`, lives in :mod:`videomask.patches`).

Every masker is "scores -> one shared selection step":

* a scorer gives per-token scores ``[B, L]`` and/or anchor flags ``[B, L]``;
* in **tube** mode (default, VideoMAE) they are aggregated over time to ``[B, h*w]`` (scores by
  ``mean`` or ``max``, anchors by ``any``), one spatial mask is selected and repeated over every
  temporal slot; the budget is ``int(ratio * h*w)`` tubes (VideoMAE's ``TubeMaskingGenerator``);
* in **token** mode the selection runs on all ``L`` tokens with budget ``int(ratio * L)``.

Selection rules (all batched over ``B``, exact count ``k`` per row, reproducible with a
``torch.Generator``):

* :func:`select_topk` — the ``k`` highest scores, ties broken at random;
* :func:`select_anchor_share` — the seed's video rule: ``min(#anchors, round(alpha * k))`` picks from
  the anchors (shuffled), the rest uniformly from the units not yet picked; a row without anchors is
  plain uniform random masking;
* :func:`select_rank_sampling` — the seed's text rule: sampling without replacement with probability
  decreasing in score rank (Gumbel top-k), optionally mixed with uniform.

``direction="mask"`` masks what the rule selects (anchors / high scores are masked; the seed's
choice). ``direction="keep"`` applies the same rule to choose the *visible* set of size ``N - k``
and masks the rest, so anchors / high scores stay visible. Either way exactly ``k`` units are masked.
The selection functions default to ``"mask"``; the maskers (:class:`ScoredMasker`) to ``"keep"``, the
direction the evidence protocol found at or above tube masking (docs/evidence.md).

Random numbers are drawn on the generator's device (CPU when ``generator`` is a CPU generator) and
moved to the video's device, so a CPU generator seeds masks for a GPU batch reproducibly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from videomask.errors import VideomaskError
from videomask.patches import Grid, Tubelet, as_tubelet, grid_for, mask_to_ids, tokens_to_tubes, tubes_to_tokens

__all__ = [
    "MaskResult",
    "Masker",
    "ScoredMasker",
    "MASKERS",
    "register_masker",
    "build_masker",
    "masker_options",
    "available_maskers",
    "batch_video",
    "budget",
    "select_topk",
    "select_anchor_share",
    "select_rank_sampling",
    "mask_to_ids",
    "MODES",
    "DIRECTIONS",
    "SELECTIONS",
]

MODES = ("tube", "token")
DIRECTIONS = ("mask", "keep")
SELECTIONS = ("share", "topk", "sample")
REDUCTIONS = ("mean", "max")


@dataclass
class MaskResult:
    """What a masker produced for one batch.

    ``mask``: bool ``[B, L]``, True = masked, the same count in every row.
    ``anchors``: bool ``[B, L]`` token-level anchor flags (None for maskers without anchors).
    ``scores``: float ``[B, L]`` token-level scores (None for maskers without scores).
    """

    mask: Tensor
    anchors: Tensor | None = None
    scores: Tensor | None = None


# --------------------------------------------------------------------------------------------- #
# random numbers, budgets, small helpers
# --------------------------------------------------------------------------------------------- #


def _uniform(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform ``[0, 1)`` numbers of ``shape`` from ``generator`` (drawn on its device), on ``device``.

    A CPU generator's numbers go to a GPU with an asynchronous copy (no stream sync per draw)."""
    if generator is None:
        return torch.rand(tuple(shape), device=device)
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device, non_blocking=True)


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise VideomaskError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def _check_k(k: int, n: int) -> int:
    k = int(k)
    if not 0 <= k <= n:
        raise VideomaskError(f"cannot select {k} of {n} units (need 0 <= k <= {n})")
    return k


def _first_per_row(order: Tensor, counts: Tensor) -> Tensor:
    """Bool ``[B, N]``: True at ``order[b, :counts[b]]`` (the first ``counts[b]`` entries of each row's order)."""
    B, N = order.shape
    take = torch.arange(N, device=order.device).expand(B, N) < counts.view(B, 1)  # [B, N] by rank
    out = torch.zeros(B, N, dtype=torch.bool, device=order.device)
    return out.scatter(1, order, take)  # [B, N] by unit index


def _rank_order(scores: Tensor, generator: torch.Generator | None) -> Tensor:
    """Indices ``[B, N]`` sorting each row by score, highest first, ties in random order."""
    B, N = scores.shape
    perm = _uniform((B, N), generator, scores.device).argsort(dim=1)  # [B, N] random permutation
    permuted = scores.gather(1, perm)
    order = permuted.argsort(dim=1, descending=True, stable=True)  # stable: ties keep the random order
    return perm.gather(1, order)  # [B, N] unit indices, best first


def budget(ratio: float, n: int) -> int:
    """Number of units to mask: ``int(ratio * n)`` (VideoMAE's rounding)."""
    if not 0.0 <= float(ratio) < 1.0:
        raise VideomaskError(f"mask ratio must be in [0, 1), got {ratio}")
    return int(ratio * n)


# --------------------------------------------------------------------------------------------- #
# the shared selection step
# --------------------------------------------------------------------------------------------- #


def select_topk(
    scores: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    *,
    direction: str = "mask",
) -> Tensor:
    """Rule (a): scores ``[B, N]`` -> bool mask ``[B, N]`` with exactly ``k`` True per row.

    ``direction="mask"`` masks the ``k`` highest scores; ``"keep"`` keeps the ``N - k`` highest
    visible and masks the rest (the ``k`` lowest). Ties are broken uniformly at random.
    """
    _check_direction(direction)
    B, N = scores.shape
    k = _check_k(k, N)
    order = _rank_order(scores.float(), generator)  # [B, N] best first
    n_pick = k if direction == "mask" else N - k
    picked = _first_per_row(order, torch.full((B,), n_pick, device=scores.device))
    return picked if direction == "mask" else ~picked


def _anchor_share_pick(anchors: Tensor, k: int, alpha: float, generator: torch.Generator | None) -> Tensor:
    """Pick ``k`` units per row: ``min(#anchors, round(alpha*k))`` anchors, the rest uniformly from the others."""
    B, N = anchors.shape
    device = anchors.device
    n_anchor = torch.clamp(anchors.sum(dim=1), max=int(round(alpha * k)))  # [B] anchor picks per row
    # 1) anchors first, in random order; non-anchors sort after them (key 2 > any uniform number)
    key = torch.where(anchors, _uniform((B, N), generator, device), torch.full((B, N), 2.0, device=device))
    picked = _first_per_row(key.argsort(dim=1), n_anchor)  # [B, N]
    # 2) fill the rest of the budget uniformly from every unit not yet picked
    key = torch.where(picked, torch.full((B, N), 2.0, device=device), _uniform((B, N), generator, device))
    filled = _first_per_row(key.argsort(dim=1), k - n_anchor)  # [B, N]
    return picked | filled


def select_anchor_share(
    anchors: Tensor,
    k: int,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    direction: str = "mask",
) -> Tensor:
    """Rule (b), the seed's video rule: anchors bool ``[B, N]`` -> bool mask ``[B, N]``, ``k`` True per row.

    ``direction="mask"``: ``min(#anchors, round(alpha*k))`` anchors are masked (chosen at random), the
    rest of the budget is filled uniformly at random from the units not yet picked (anchors included).
    ``direction="keep"``: the same rule picks the *visible* set of size ``N - k`` (anchors kept visible
    first), the rest is masked. A row with no anchor gets plain uniform random masking.
    """
    _check_direction(direction)
    if not 0.0 <= float(alpha) <= 1.0:
        raise VideomaskError(f"alpha must be in [0, 1], got {alpha}")
    B, N = anchors.shape
    k = _check_k(k, N)
    anchors = anchors.bool()
    if direction == "mask":
        return _anchor_share_pick(anchors, k, alpha, generator)
    return ~_anchor_share_pick(anchors, N - k, alpha, generator)


def select_rank_sampling(
    scores: Tensor,
    k: int,
    temperature: float = 0.25,
    uniform_mix: float = 0.0,
    generator: torch.Generator | None = None,
    *,
    direction: str = "mask",
) -> Tensor:
    """Rule (c), the seed's text rule: sample ``k`` units per row without replacement, favouring high ranks.

    Each row is ranked by score (``r = 0`` the highest, ties at random). A unit's sampling weight is
    ``p(r) = (1 - uniform_mix) * softmax_r(-r / (temperature * N)) + uniform_mix / N``, so the weight
    falls by a factor ``e`` every ``temperature`` share of the ranking. The ``k`` units are drawn
    without replacement in proportion to ``p`` with the Gumbel top-k trick (top-k of
    ``log p + Gumbel noise``). ``direction="keep"`` draws the *visible* ``N - k`` units this way and
    masks the rest.
    """
    _check_direction(direction)
    if temperature <= 0:
        raise VideomaskError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= float(uniform_mix) <= 1.0:
        raise VideomaskError(f"uniform_mix must be in [0, 1], got {uniform_mix}")
    B, N = scores.shape
    k = _check_k(k, N)
    device = scores.device
    order = _rank_order(scores.float(), generator)  # [B, N] unit indices, best first
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=device).expand(B, N))  # [B, N]
    logits = -ranks.float() / (temperature * N)
    p = (1.0 - uniform_mix) * logits.softmax(dim=1) + uniform_mix / N  # [B, N]
    u = _uniform((B, N), generator, device).clamp_(min=1e-12, max=1.0 - 1e-7)
    keys = p.clamp_min(1e-30).log() - torch.log(-torch.log(u))  # log p + Gumbel(0, 1)
    n_pick = k if direction == "mask" else N - k
    picked = select_topk(keys, n_pick, generator)  # keys are continuous: ties have probability 0
    return picked if direction == "mask" else ~picked


# --------------------------------------------------------------------------------------------- #
# masker base classes
# --------------------------------------------------------------------------------------------- #


def batch_video(batch: Tensor | Mapping[str, Any]) -> Tensor:
    """The video ``[B, C, T, H, W]`` of a batch (a tensor or a loader batch dict with key ``video``)."""
    video = batch.get("video") if isinstance(batch, Mapping) else batch
    if not isinstance(video, Tensor):
        raise VideomaskError("a masker takes a video tensor [B, C, T, H, W] or a batch dict with a 'video' tensor")
    if video.dim() != 5:
        raise VideomaskError(f"a masker expects video [B, C, T, H, W], got shape {tuple(video.shape)}")
    return video


class Masker:
    """Base class: maps a batch to a :class:`MaskResult`. Subclasses implement :meth:`_generate`.

    Keyword-only options shared by every masker: ``tubelet`` (t, p, p), ``ratio`` (share masked)
    and ``mode`` (``"tube"``: one spatial mask repeated over time, ``"token"``: per token; default:
    the first of the class's ``modes``). The shared options are declared here and in
    :class:`ScoredMasker` only: a subclass declares its own options and passes ``**options`` on
    (:func:`masker_options` lists them all, :func:`build_masker` checks against it).
    """

    name: str = ""
    modes: tuple[str, ...] = MODES

    def __init__(
        self, *, tubelet: int | Sequence[int] = (2, 16, 16), ratio: float = 0.9, mode: str | None = None
    ) -> None:
        self.tubelet: Tubelet = as_tubelet(tubelet)
        budget(ratio, 1)  # validates the ratio
        self.ratio = float(ratio)
        mode = self.modes[0] if mode is None else mode
        if mode not in self.modes:
            raise VideomaskError(
                f"masker {self.name or type(self).__name__!r} supports mode {self.modes}, got {mode!r}"
            )
        self.mode = mode

    # -- geometry ------------------------------------------------------------------------------
    def grid(self, video: Tensor) -> Grid:
        """Token grid of a video ``[B, C, T, H, W]`` under this masker's tubelet."""
        return grid_for(video.shape[2:], self.tubelet)

    def num_units(self, grid: Grid) -> int:
        """Units the selection runs on: ``h*w`` tubes in tube mode, ``L`` tokens in token mode."""
        return grid.num_tubes if self.mode == "tube" else grid.num_tokens

    def num_masked_units(self, grid: Grid) -> int:
        """Masked units per row: ``int(ratio * h*w)`` tubes or ``int(ratio * L)`` tokens."""
        return budget(self.ratio, self.num_units(grid))

    def num_masked(self, grid: Grid) -> int:
        """Masked tokens per row (what the mask's row sums are)."""
        k = self.num_masked_units(grid)
        return k * grid.t if self.mode == "tube" else k

    def to_tokens(self, unit_values: Tensor, grid: Grid) -> Tensor:
        """Unit values ``[B, N]`` -> token values ``[B, L]`` (repeat over time in tube mode)."""
        return tubes_to_tokens(unit_values, grid) if self.mode == "tube" else unit_values

    # -- API -----------------------------------------------------------------------------------
    def generate(self, batch: Tensor | Mapping[str, Any], generator: torch.Generator | None = None) -> MaskResult:
        """Mask (and anchors / scores where the masker has them) for a batch."""
        video = batch_video(batch)
        grid = self.grid(video)
        return self._generate(video, batch, grid, generator)

    def __call__(self, batch: Tensor | Mapping[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """Bool mask ``[B, L]``, True = masked."""
        return self.generate(batch, generator).mask

    def _generate(
        self, video: Tensor, batch: Tensor | Mapping[str, Any], grid: Grid, generator: torch.Generator | None
    ) -> MaskResult:
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "Masker":
        """Move any tensors the masker holds to ``device`` (a no-op for model-free maskers)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tubelet={self.tubelet}, ratio={self.ratio}, mode={self.mode!r})"


class ScoredMasker(Masker):
    """A masker whose scorer gives token scores and/or anchors; one shared selection turns them into a mask.

    Subclasses implement :meth:`token_scores` returning ``(scores [B, L] float | None,
    anchors [B, L] bool | None)``. Options:

    * ``selection``: ``"share"`` (rule b, needs anchors; default), ``"topk"`` (rule a, needs scores),
      ``"sample"`` (rule c, needs scores);
    * ``alpha``: anchor share of the budget for ``"share"``;
    * ``direction``: ``"keep"`` (keep anchors / high scores visible; the default, see docs/evidence.md)
      or ``"mask"`` (mask them, the paper's direction);
    * ``reduce``: how a tube's score aggregates its tokens over time (``"mean"`` or ``"max"``); a tube
      is an anchor when any of its tokens is;
    * ``temperature``, ``uniform_mix``: rank-sampling options (see :func:`select_rank_sampling`).

    ``tubelet``, ``ratio`` and ``mode`` pass on to :class:`Masker`. ``reduce`` defaults to the
    class's ``default_reduce``.
    """

    default_reduce: str = "mean"

    def __init__(
        self,
        *,
        selection: str = "share",
        alpha: float = 1.0,
        direction: str = "keep",
        reduce: str | None = None,
        temperature: float = 0.25,
        uniform_mix: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        reduce = self.default_reduce if reduce is None else reduce
        if selection not in SELECTIONS:
            raise VideomaskError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        _check_direction(direction)
        if reduce not in REDUCTIONS:
            raise VideomaskError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise VideomaskError(f"alpha must be in [0, 1], got {alpha}")
        if temperature <= 0 or not 0.0 <= float(uniform_mix) <= 1.0:
            raise VideomaskError(f"need temperature > 0 and uniform_mix in [0, 1], got {temperature}, {uniform_mix}")
        self.selection = selection
        self.alpha = float(alpha)
        self.direction = direction
        self.reduce = reduce
        self.temperature = float(temperature)
        self.uniform_mix = float(uniform_mix)

    def token_scores(
        self, video: Tensor, batch: Tensor | Mapping[str, Any], grid: Grid
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(scores [B, L] float | None, anchors [B, L] bool | None)`` for the batch, on the video's device."""
        raise NotImplementedError

    def select(
        self, scores: Tensor | None, anchors: Tensor | None, k: int, generator: torch.Generator | None
    ) -> Tensor:
        """Unit scores / anchors ``[B, N]`` -> bool unit mask ``[B, N]`` with ``k`` True per row."""
        if self.selection == "share":
            if anchors is None:
                raise VideomaskError(f"selection 'share' needs anchors; masker {self.name!r} gives only scores")
            return select_anchor_share(anchors, k, self.alpha, generator, direction=self.direction)
        if scores is None:
            raise VideomaskError(f"selection {self.selection!r} needs scores; masker {self.name!r} gives only anchors")
        if self.selection == "topk":
            return select_topk(scores, k, generator, direction=self.direction)
        return select_rank_sampling(scores, k, self.temperature, self.uniform_mix, generator, direction=self.direction)

    def _generate(
        self, video: Tensor, batch: Tensor | Mapping[str, Any], grid: Grid, generator: torch.Generator | None
    ) -> MaskResult:
        scores, anchors = self.token_scores(video, batch, grid)  # [B, L] each, or None
        unit_scores, unit_anchors = scores, anchors
        if self.mode == "tube":
            if scores is not None:
                unit_scores = tokens_to_tubes(scores, grid, self.reduce)  # [B, h*w]
            if anchors is not None:
                unit_anchors = tokens_to_tubes(anchors, grid, "any")  # [B, h*w]
        unit_mask = self.select(unit_scores, unit_anchors, self.num_masked_units(grid), generator)  # [B, N]
        mask = self.to_tokens(unit_mask, grid)  # [B, L]
        return MaskResult(mask=mask, anchors=anchors, scores=scores)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tubelet={self.tubelet}, ratio={self.ratio}, mode={self.mode!r}, "
            f"selection={self.selection!r}, alpha={self.alpha}, direction={self.direction!r}, reduce={self.reduce!r})"
        )


# --------------------------------------------------------------------------------------------- #
# registry
# --------------------------------------------------------------------------------------------- #

MASKERS: dict[str, type[Masker]] = {}


def register_masker(name: str) -> Callable[[type[Masker]], type[Masker]]:
    """Class decorator: register a :class:`Masker` subclass under ``name`` (used by configs and the CLI)."""

    def decorator(cls: type[Masker]) -> type[Masker]:
        if name in MASKERS and MASKERS[name] is not cls:
            raise ValueError(f"masker name {name!r} is already registered to {MASKERS[name].__name__}")
        cls.name = name
        MASKERS[name] = cls
        return cls

    return decorator


def available_maskers() -> list[str]:
    """Names of the registered maskers, sorted."""
    return sorted(MASKERS)


def masker_options(cls: type[Masker]) -> dict[str, inspect.Parameter]:
    """The keyword options a masker class takes, by name: its own and its base classes' (``**options`` chains)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):  # base classes first; a subclass may redeclare an option's default
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params.update((n, p) for n, p in inspect.signature(init).parameters.items() if p.kind is p.KEYWORD_ONLY)
    if len(cls.modes) == 1:  # random / tube: the name fixes the mode, so there is no mode to choose
        params.pop("mode", None)
    return params


def mode_option(name: str, mode: str | None) -> dict[str, str]:
    """The ``mode`` keyword for masker ``name`` from a run config's ``mask.mode`` (None = the masker's default).

    A masker whose name fixes its mode (``random``: tokens, ``tube``: tubes) takes none; a ``mask.mode``
    that agrees with it is fine, one that contradicts it is a user error.
    """
    if mode is None:
        return {}
    if name not in MASKERS:
        raise VideomaskError(f"unknown masker {name!r} (choose from {', '.join(available_maskers())})")
    modes = MASKERS[name].modes
    if len(modes) > 1:
        return {"mode": mode}
    if mode != modes[0]:
        raise VideomaskError(f"mask.mode={mode} does not apply to the {name!r} masker, which always masks {modes[0]}s")
    return {}


def build_masker(name: str, **options: Any) -> Masker:
    """Build a registered masker by name with keyword options; unknown names / options are user errors."""
    if name not in MASKERS:
        raise VideomaskError(f"unknown masker {name!r} (choose from {', '.join(available_maskers())})")
    cls = MASKERS[name]
    accepted = masker_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise VideomaskError(
            f"masker {name!r}: unknown option(s) {', '.join(unknown)} (it takes {', '.join(accepted)})"
        )
    missing = [n for n, p in accepted.items() if p.default is p.empty and n not in options]
    if missing:
        raise VideomaskError(f"masker {name!r}: missing required option(s) {', '.join(missing)}")
    return cls(**options)
