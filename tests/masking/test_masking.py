"""Masker core: the shared selection step, the registry, and every registered masker's contract."""

from __future__ import annotations

import math

import pytest
import torch

from videomask.difference import DifferenceStats, PixelEmbedder, fit_statistics
from videomask.errors import VideomaskError
from videomask.masking import (
    MASKERS,
    MaskResult,
    ScoredMasker,
    available_maskers,
    build_masker,
    mask_to_ids,
    masker_options,
    mode_option,
    select_anchor_share,
    select_rank_sampling,
    select_topk,
)
from videomask.masking.base import budget
from videomask.patches import grid_for

TUBELET = (2, 16, 16)
B, C, T, H, W = 4, 3, 4, 64, 64  # grid (2, 4, 4): 16 tubes, 32 tokens
GRID = grid_for((T, H, W), TUBELET)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _clips(n: int, with_object: bool, seed: int) -> torch.Tensor:
    """``[n, C, T, H, W]`` smooth random grey stripes (scenery) plus a little noise; with ``with_object`` a
    saturated, textured square at the top-left quarter."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    angle = torch.rand(n, 1, 1, 1, 1, generator=g) * math.pi
    freq = 0.05 + 0.1 * torch.rand(n, 1, 1, 1, 1, generator=g)
    phase = torch.rand(n, 1, 1, 1, 1, generator=g) * 2 * math.pi  # grey: the same in every channel
    stripes = torch.sin(freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)  # [n, C, 1, H, W]
    video = 0.5 * stripes.expand(n, C, T, H, W) + 0.05 * torch.randn(n, C, T, H, W, generator=g)  # [n, C, T, H, W]
    if with_object:
        video[:, 0, :, 0:32, 0:32] = 2.0
        video[:, 1:, :, 0:32, 0:32] = -1.5
        video[:, :, :, 0:32, 0:32] += 0.5 * torch.sign(torch.randn(n, 1, T, 32, 32, generator=g))
    return video


@pytest.fixture(scope="module")
def stats() -> DifferenceStats:
    """Small statistics: target clips hold a red square in the top-left quarter that the source lacks."""
    source = [_clips(8, False, s) for s in range(3)]
    target = [_clips(8, True, 10 + s) for s in range(3)]
    return fit_statistics(
        source,
        target,
        PixelEmbedder(dim=32, tubelet=TUBELET),
        num_words=16,
        num_anchors=1,
        init_tokens=256,
        progress=False,
    )


def _box_cache():
    """In-memory boxes (``objects`` masker): a person over the top-left quarter of every frame of v0..v99."""
    from videomask.detect import BoxCache

    records = []
    for i in range(100):
        records += [
            {"video": f"v{i}", "frame": f, "box": [0, 0, 32, 32], "label": "person", "score": 0.9} for f in range(T)
        ]
        records.append({"video": f"v{i}", "done": True, "num_frames": T, "stride": 1})
    return BoxCache.from_records(records)


def make_masker(name: str, stats: DifferenceStats, **options):
    """A registered masker with small-test options (``difference``: the fitted ``stats``; ``objects``: boxes)."""
    # direction "mask" unless a test asks for "keep": these tests check what the rule selects
    options = {"tubelet": TUBELET, "ratio": 0.5, **options}
    if name in ("difference", "objects"):
        options.setdefault("direction", "mask")
    if name == "difference":
        options["stats"] = stats
    if name == "objects":
        options.setdefault("boxes", _box_cache())
    return build_masker(name, **options)


def make_batch(video: torch.Tensor, prefix: str = "v") -> dict:
    """A loader-style batch dict for ``video`` (clips ``{prefix}0 ...``, frames 0..T-1, identity geometry)."""
    from videomask.patches import ClipGeometry

    n = video.shape[0]
    return {
        "video": video,
        "video_id": [f"{prefix}{i}" for i in range(n)],
        "frame_indices": torch.arange(T).expand(n, T),
        "geometry": ClipGeometry.identity(H, W).to_tensor().expand(n, 9),
        "label": torch.full((n,), -1),
        "index": torch.arange(n),
    }


# options under which a masker finds no anchor in source-like clips (cosine similarity never exceeds 1)
# (objects: the clips' videos are not in the boxes cache)
NO_ANCHOR_OPTIONS = {
    "difference": {"scorer": "tficf", "anchor_rule": "threshold", "threshold": 1.0},
    "objects": {"on_missing": "fallback"},
}


# every registered masker; `objects` gets an in-memory boxes cache and loader-style batch dicts
# (its own cache / rasteriser / option tests are in tests/test_objects.py)
ALL = available_maskers()


def test_registry_names():
    assert {"random", "tube", "difference"} <= set(ALL)
    with pytest.raises(VideomaskError, match="unknown masker"):
        build_masker("nope")
    with pytest.raises(VideomaskError, match="random"):
        build_masker("random", tubelet=TUBELET, colour="red")
    # the name fixes the mode of random (tokens) and tube (tubes): they take no mode option
    for name in ("random", "tube"):
        assert "mode" not in masker_options(MASKERS[name])
        with pytest.raises(VideomaskError, match="unknown option"):
            build_masker(name, mode="tube")
    assert "mode" in masker_options(MASKERS["difference"]) and "mode" in masker_options(MASKERS["objects"])
    # a run config's mask.mode: passed to maskers with a choice, checked against the fixed ones
    assert mode_option("difference", "token") == {"mode": "token"} and mode_option("tube", None) == {}
    assert mode_option("tube", "tube") == {} and mode_option("random", "token") == {}
    with pytest.raises(VideomaskError, match="always masks tokens"):
        mode_option("random", "tube")
    with pytest.raises(VideomaskError, match="always masks tubes"):
        mode_option("tube", "token")
    with pytest.raises(VideomaskError):
        build_masker("tube", ratio=1.5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL)
def test_contract_exact_count_dtype_device(name, device, stats):
    masker = make_masker(name, stats)
    video = _clips(B, True, 0).to(device)
    result = masker.generate(make_batch(video), torch.Generator().manual_seed(0))
    assert isinstance(result, MaskResult)
    mask = result.mask
    assert mask.dtype == torch.bool and mask.shape == (B, GRID.num_tokens) and mask.device.type == device
    expected = masker.num_masked(GRID)
    assert mask.sum(dim=1).tolist() == [expected] * B
    units = GRID.num_tubes if masker.mode == "tube" else GRID.num_tokens
    per_unit = budget(0.5, units) * (GRID.t if masker.mode == "tube" else 1)
    assert expected == per_unit
    for extra in (result.anchors, result.scores):
        if extra is not None:
            assert extra.shape == (B, GRID.num_tokens) and extra.device.type == device
    # the same batch gives the same mask through __call__
    assert torch.equal(mask, masker(make_batch(video), torch.Generator().manual_seed(0)))
    if name != "objects":  # model-free and embedding maskers also take a bare video tensor
        assert torch.equal(mask, masker(video, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", ALL)
def test_seed_reproducible_and_varies(name, stats):
    masker = make_masker(name, stats)
    video = make_batch(_clips(B, True, 1))
    a = masker(video, torch.Generator().manual_seed(123))
    b = masker(video, torch.Generator().manual_seed(123))
    c = masker(video, torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", [n for n in ALL if "tube" in MASKERS[n].modes])
def test_tube_mode_constant_over_time(name, stats):
    masker = make_masker(name, stats)
    mask = masker(make_batch(_clips(B, True, 2)), torch.Generator().manual_seed(0)).view(B, GRID.t, GRID.num_tubes)
    assert torch.equal(mask, mask[:, :1].expand_as(mask))  # the same spatial mask at every slot
    assert mask[:, 0].sum(dim=1).tolist() == [int(0.5 * GRID.num_tubes)] * B


@pytest.mark.parametrize("name", ALL)
def test_ids_round_trip(name, stats):
    mask = make_masker(name, stats)(make_batch(_clips(B, True, 3)), torch.Generator().manual_seed(0))
    ids_keep, ids_masked, ids_restore = mask_to_ids(mask)
    L = mask.shape[1]
    n_mask = int(mask[0].sum())
    assert ids_keep.shape == (B, L - n_mask) and ids_masked.shape == (B, n_mask)
    assert not mask.gather(1, ids_keep).any() and mask.gather(1, ids_masked).all()
    assert (ids_keep.diff(dim=1) > 0).all() and (ids_masked.diff(dim=1) > 0).all()  # increasing index
    x = torch.arange(L).expand(B, L)
    shuffled = torch.cat([x.gather(1, ids_keep), x.gather(1, ids_masked)], dim=1)
    assert torch.equal(shuffled.gather(1, ids_restore), x)


def _scored_names():
    return [n for n in ALL if issubclass(MASKERS[n], ScoredMasker)]


@pytest.mark.parametrize("mode", ["tube", "token"])
@pytest.mark.parametrize("name", _scored_names())
def test_alpha_one_masks_every_anchor_and_keep_direction(name, mode, stats):
    """alpha=1 masks all anchors when the budget allows; direction='keep' keeps them all visible."""
    video = make_batch(_clips(B, True, 4))
    masker = make_masker(name, stats, mode=mode, alpha=1.0, direction="mask", ratio=0.75)
    result = masker.generate(video, torch.Generator().manual_seed(0))
    anchors = result.anchors
    assert anchors is not None and anchors.any(dim=1).all(), "every clip holds the target object"
    n_anchor_units = anchors.view(B, GRID.t, -1).any(dim=1).sum(1) if mode == "tube" else anchors.sum(1)
    assert (n_anchor_units <= masker.num_masked_units(GRID)).all(), "test needs the budget to cover the anchors"
    assert result.mask[anchors].all()
    keeper = make_masker(name, stats, mode=mode, alpha=1.0, direction="keep", ratio=0.25)
    keep = keeper.generate(video, torch.Generator().manual_seed(0))
    assert not keep.mask[anchors].any()  # ratio 0.25: 12 visible units hold every anchor
    assert keep.mask.sum(1).tolist() == [keeper.num_masked(GRID)] * B


@pytest.mark.parametrize("name", _scored_names())
def test_no_anchor_falls_back_to_uniform(name, stats):
    """Clips without the target object: no anchors, and the mask is uniform over tubes."""
    masker = make_masker(name, stats, **NO_ANCHOR_OPTIONS.get(name, {}))
    video = make_batch(_clips(64, False, 6), prefix="unseen")  # source-like clips
    result = masker.generate(video, torch.Generator().manual_seed(0))
    assert result.anchors is not None and not result.anchors.any()
    freq = result.mask.view(64, GRID.t, -1)[:, 0].float().mean(0)  # [h*w] per-tube masking frequency
    assert result.mask.sum(1).tolist() == [masker.num_masked(GRID)] * 64
    assert (freq - 0.5).abs().max() < 0.25, freq


@pytest.mark.parametrize("name", _scored_names())
@pytest.mark.parametrize("selection", ["topk", "sample"])
def test_score_selections_prefer_high_scores(name, selection, stats):
    video = make_batch(_clips(B, True, 5))
    masker = make_masker(name, stats, selection=selection)
    res = masker.generate(video, torch.Generator().manual_seed(0))
    assert res.scores is not None
    tube_scores = res.scores.view(B, GRID.t, -1).mean(1)  # [B, h*w]
    tube_mask = res.mask.view(B, GRID.t, -1)[:, 0]
    assert tube_scores[tube_mask].mean() > tube_scores[~tube_mask].mean()
    keep_masker = make_masker(name, stats, selection=selection, direction="keep")
    keep = keep_masker.generate(video, torch.Generator().manual_seed(0))
    keep_mask = keep.mask.view(B, GRID.t, -1)[:, 0]
    assert tube_scores[keep_mask].mean() < tube_scores[~keep_mask].mean()


# ------------------------------------------------------------------ VideoMAE distributions


@pytest.mark.parametrize("name,units", [("random", GRID.num_tokens), ("tube", GRID.num_tubes)])
def test_random_and_tube_match_videomae_distribution(name, units):
    """Uniform k-subsets: every position masked with frequency k/N, pairs with k(k-1)/(N(N-1))."""
    n = 4000
    masker = build_masker(name, tubelet=TUBELET, ratio=0.75)
    mask = masker(torch.zeros(n, C, T, H, W), torch.Generator().manual_seed(7))
    unit_mask = mask.view(n, GRID.t, -1)[:, 0] if name == "tube" else mask  # [n, units]
    k = int(0.75 * units)
    assert unit_mask.sum(1).eq(k).all()
    freq = unit_mask.float().mean(0)
    sd = math.sqrt(k / units * (1 - k / units) / n)
    assert (freq - k / units).abs().max() < 5 * sd, freq
    pair = (unit_mask[:, 0] & unit_mask[:, 1]).float().mean()
    p_pair = k * (k - 1) / (units * (units - 1))
    assert abs(pair - p_pair) < 5 * math.sqrt(p_pair * (1 - p_pair) / n)
    if name == "tube":
        assert torch.equal(mask, unit_mask.repeat(1, GRID.t))


def test_videomae_budgets():
    """VideoMAE's defaults: 16x224x224, tubelet 2x16x16, 90%: 176 of 196 tubes, 1411 of 1568 tokens."""
    grid = grid_for((16, 224, 224), (2, 16, 16))
    assert build_masker("tube").num_masked(grid) == 176 * 8
    assert build_masker("random").num_masked(grid) == 1411


# ------------------------------------------------------------------ the selection functions


def test_select_topk_ties_and_direction():
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([[0.0, 5.0, 1.0, 4.0, 2.0, 3.0]]).repeat(3, 1)
    assert select_topk(scores, 2, g)[0].nonzero().flatten().tolist() == [1, 3]
    assert select_topk(scores, 2, g, direction="keep")[0].nonzero().flatten().tolist() == [0, 2]
    flat = torch.zeros(5000, 4)
    freq = select_topk(flat, 1, g).float().mean(0)  # ties: uniform
    assert (freq - 0.25).abs().max() < 0.03
    with pytest.raises(VideomaskError):
        select_topk(scores, 7, g)
    with pytest.raises(VideomaskError):
        select_topk(scores, 2, g, direction="sideways")


def test_select_anchor_share_counts():
    g = torch.Generator().manual_seed(0)
    N, k = 20, 8
    anchors = torch.zeros(3, N, dtype=torch.bool)
    anchors[0, :3] = True  # fewer anchors than alpha*k: all of them
    anchors[1, :15] = True  # more anchors than alpha*k
    mask = select_anchor_share(anchors, k, 0.5, g)
    assert mask.sum(1).tolist() == [k] * 3
    assert mask[0, :3].all()
    assert int((mask[1] & anchors[1]).sum()) >= round(0.5 * k)
    # alpha = 0 and a row without anchors: uniform
    many = torch.zeros(4000, N, dtype=torch.bool)
    many[:, :5] = True
    freq = select_anchor_share(many, k, 0.0, g).float().mean(0)
    assert (freq - k / N).abs().max() < 0.04
    # keep direction: the visible N-k hold all anchors of row 0
    keep = select_anchor_share(anchors, k, 1.0, g, direction="keep")
    assert keep.sum(1).tolist() == [k] * 3 and not keep[0, :3].any()
    assert not keep[1, :12].any() or int((~keep[1] & anchors[1]).sum()) == N - k


def test_select_rank_sampling_prefers_high_ranks():
    g = torch.Generator().manual_seed(0)
    N, k, n = 32, 8, 3000
    scores = torch.arange(N, dtype=torch.float32).expand(n, N)  # unit N-1 is the best
    mask = select_rank_sampling(scores, k, 0.25, 0.0, g)
    assert mask.sum(1).eq(k).all()
    freq = mask.float().mean(0)
    assert freq[-8:].mean() > 2 * freq[:8].mean()
    assert (freq[1:] >= freq[:-1] - 0.05).all()  # non-increasing in rank (up to noise)
    keep = select_rank_sampling(scores, k, 0.25, 0.0, g, direction="keep").float().mean(0)
    assert keep[:8].mean() > 2 * keep[-8:].mean()
    uniform = select_rank_sampling(scores, k, 0.25, 1.0, g).float().mean(0)
    assert (uniform - k / N).abs().max() < 0.05


def test_mask_to_ids_rejects_ragged_masks():
    mask = torch.tensor([[True, False, False], [True, True, False]])
    with pytest.raises(VideomaskError, match="same number"):
        mask_to_ids(mask)


# ------------------------------------------------------------------ difference masker scoring


@pytest.mark.parametrize("score", ["max", "mean"])
def test_difference_scores_and_anchors_equal_their_formula(score, stats):
    """TF-ICF: scores = max / mean cosine to the anchor centroids; a token is an anchor when its nearest word
    is one (the batched one-matmul scoring equals the per-token formula)."""
    video = _clips(B, True, 9)
    masker = make_masker("difference", stats, scorer="tficf", score=score)
    res = masker.generate(video, torch.Generator().manual_seed(0))
    emb = torch.nn.functional.normalize(PixelEmbedder(dim=32, tubelet=TUBELET)(video), dim=-1)  # [B, L, D]
    cents = torch.nn.functional.normalize(stats.centroids.float(), dim=1)  # [V, D]
    sims = torch.einsum("bld,vd->blv", emb, cents)  # [B, L, V]
    anchor_sims = sims[..., stats.anchors]  # [B, L, K]
    expected = anchor_sims.amax(-1) if score == "max" else anchor_sims.mean(-1)
    assert res.scores.shape == (B, GRID.num_tokens) and res.anchors.shape == (B, GRID.num_tokens)
    assert torch.allclose(res.scores, expected, atol=1e-5)
    nearest = sims.argmax(-1)  # [B, L]
    assert torch.equal(res.anchors, torch.isin(nearest, stats.anchors))


def test_distance_and_enrichment_scores_equal_their_formula(stats):
    """distance = 1 - max cosine to a source prototype, anchors above the calibrated source quantile and in
    the clip's top share; enrichment = the z-score of the token's nearest word, anchors = enriched words."""
    video = _clips(B, True, 9)
    emb = torch.nn.functional.normalize(PixelEmbedder(dim=32, tubelet=TUBELET)(video), dim=-1)  # [B, L, D]
    protos = torch.nn.functional.normalize(stats.prototypes.float(), dim=1)  # [M, D]
    dist = 1 - torch.einsum("bld,md->blm", emb, protos).amax(-1)  # [B, L]
    masker = make_masker("difference", stats)
    assert masker.scorer == "distance" and masker.anchor_rule == "calibrated"
    res = masker.generate(video)
    assert torch.allclose(res.scores, dist, atol=1e-5)
    limit = stats.source_quantile(0.99)
    top = dist >= dist.topk(round(0.1 * GRID.num_tokens), dim=1).values[:, -1:]  # [B, L] the clip's top 10%
    assert torch.equal(res.anchors, (dist > limit) & top)
    assert res.anchors.float().mean() <= 0.1 + 1e-6  # selective: never more than the top share
    thr = make_masker("difference", stats, anchor_rule="threshold", threshold=0.9).generate(video)
    assert torch.equal(thr.anchors, dist > stats.source_quantile(0.9))
    cents = torch.nn.functional.normalize(stats.centroids.float(), dim=1)
    nearest = torch.einsum("bld,vd->blv", emb, cents).argmax(-1)  # [B, L]
    enr = make_masker("difference", stats, scorer="enrichment").generate(video)
    assert torch.allclose(enr.scores, stats.enrichment[nearest], atol=1e-5)
    assert torch.equal(enr.anchors, torch.isin(nearest, stats.enriched))


def test_difference_scorers_find_the_square(stats):
    """The target-only square: the distance and enrichment scores rank its tokens above the scenery (AUC)
    and their anchors fall on it; the default distance anchors stay rare on source-like clips."""
    from videomask.bench.metrics import roc_auc

    video = _clips(16, True, 21)
    square = torch.zeros(GRID.t, GRID.h, GRID.w, dtype=torch.bool)
    square[:, :2, :2] = True  # the top-left quarter: 2 x 2 patches of 16 px
    square = square.reshape(1, -1).expand(16, -1)  # [16, L]
    for scorer in ("distance", "enrichment"):
        res = make_masker("difference", stats, scorer=scorer).generate(video)
        assert roc_auc(res.scores, square) >= 0.9, scorer
        assert res.anchors.any() and square[res.anchors].float().mean() >= 0.9, scorer
    plain = make_masker("difference", stats).generate(_clips(16, False, 22)).anchors
    assert plain.float().mean() <= 0.03


def test_masker_options_are_declared_once():
    """The shared options live in Masker / ScoredMasker: every masker takes them, and build_masker checks
    names against masker_options (unknown and missing required options are one-line errors)."""
    from videomask.masking import MASKERS, masker_options

    shared = {"tubelet", "ratio"}  # and mode, for maskers whose name does not fix it
    scored = shared | {"mode", "selection", "alpha", "direction", "reduce", "temperature", "uniform_mix"}
    for name, cls in MASKERS.items():
        assert (scored if issubclass(cls, ScoredMasker) else shared) <= set(masker_options(cls)), name
    assert set(masker_options(MASKERS["random"])) == shared == set(masker_options(MASKERS["tube"]))
    assert build_masker("random").mode == "token" and build_masker("tube").mode == "tube"
    with pytest.raises(VideomaskError, match="unknown option.*colour"):
        build_masker("tube", colour="red")
    with pytest.raises(VideomaskError, match="missing required option.*stats"):
        build_masker("difference")
