"""Difference scores that find what is new: enrichment and TF-ICF on known counts, every embedder through
fit -> save -> load -> mask, the score cache against in-loop scores, and the known-difference footage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from videomask.cli import main as cli_main
from videomask.difference import (
    CallableEmbedder,
    CNNEmbedder,
    DifferenceStats,
    ModelEmbedder,
    PixelEmbedder,
    build_embedder,
    enriched_words,
    enrichment_scores,
    fit_statistics,
    tficf_scores,
)
from videomask.errors import VideomaskError
from videomask.masking import DifferenceMasker

TUBELET = (2, 16, 16)


# ------------------------------------------------------------------ word statistics on known counts


def test_enrichment_formula_on_a_hand_example():
    """Monroe et al.'s log-odds z-score with the pooled-frequency prior, computed by hand for word 0."""
    c_t, c_s = torch.tensor([30, 10, 60]), torch.tensor([10, 30, 60])
    z = enrichment_scores(c_t, c_s)
    n_t = n_s = 100.0
    a0 = n_t + n_s
    a = a0 * 40 / 200  # word 0: pooled count 40 of 200
    delta = np.log((30 + a) / (n_t + a0 - 30 - a)) - np.log((10 + a) / (n_s + a0 - 10 - a))
    expected = delta / np.sqrt(1 / (30 + a) + 1 / (10 + a))
    assert z[0].item() == pytest.approx(expected, rel=1e-5)
    assert z[1].item() == pytest.approx(-expected, rel=1e-5)  # the mirror word
    assert z[2].item() == pytest.approx(0.0, abs=1e-6)  # equal shares


def test_a_word_more_frequent_in_the_source_is_never_an_anchor():
    """Over random counts (with unequal set sizes), every enriched word has a higher target share."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        V = int(torch.randint(4, 64, (1,), generator=g))
        c_t = torch.randint(0, 200, (V,), generator=g) * torch.randint(0, 2, (V,), generator=g)
        c_s = torch.randint(0, 2000, (V,), generator=g)
        if c_t.sum() == 0 or c_s.sum() == 0:
            continue
        z = enrichment_scores(c_t, c_s)
        words = enriched_words(c_t, c_s, z, max_words=V, z_min=0.0)
        share_t, share_s = c_t / c_t.sum(), c_s / c_s.sum()
        assert (share_t[words] > share_s[words]).all()
        assert (z[words] >= 0).all()


def test_tficf_ranks_a_frequent_shared_word_above_a_rare_new_one():
    """Why TF-ICF fails over k-means words: word 0 (shared scenery, 30% of both sets) beats word 1 (the new
    object, 3% of the target, absent from the source); enrichment ranks them the other way round."""
    c_t = torch.tensor([300, 30, 670])
    c_s = torch.tensor([300, 0, 700])
    tficf = tficf_scores(c_t, c_s)
    assert tficf[0] > tficf[1]
    z = enrichment_scores(c_t, c_s)
    assert z[1] > 1.96 and z[0] < 1.96
    assert enriched_words(c_t, c_s, z, max_words=3, z_min=1.96).tolist() == [1]


# ------------------------------------------------------------------ every embedder: fit -> save -> load -> mask


def _clips(n: int, with_object: bool, seed: int, size: int = 64) -> torch.Tensor:
    """Grey stripes; with ``with_object`` a saturated square over the top-left 32 x 32 pixels."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    angle = torch.rand(n, 1, 1, 1, 1, generator=g) * 3.14
    stripes = torch.sin(0.2 * (xx * torch.cos(angle) + yy * torch.sin(angle)))  # [n, 1, 1, H, W]
    video = (0.8 * stripes).expand(n, 3, 4, size, size) + 0.05 * torch.randn(n, 3, 4, size, size, generator=g)
    if with_object:
        video = video.clone()
        video[:, 0, :, :32, :32] = 2.0
        video[:, 1:, :, :32, :32] = -1.5
    return video


def _small_stats(source=None, target=None, embedder=None) -> DifferenceStats:
    """Statistics of a quick fit (4 words, 16 prototypes): plain stripes vs stripes with a square."""
    return fit_statistics(
        source if source is not None else [_clips(6, False, 0)],
        target if target is not None else [_clips(6, True, 1)],
        embedder if embedder is not None else PixelEmbedder(dim=16, tubelet=TUBELET),
        num_words=4,
        num_anchors=1,
        num_prototypes=16,
        init_tokens=32,
        progress=False,
    )


def _tiny_model():
    from videomask.model import build_model

    torch.manual_seed(0)
    return build_model("tiny", img_size=64, num_frames=4, depth=2, decoder_depth=1).eval()


def _embedders():
    return {
        "pixel": lambda: PixelEmbedder(dim=16, tubelet=TUBELET),
        "cnn": lambda: CNNEmbedder(tubelet=TUBELET),
        "model-patch": lambda: ModelEmbedder(_tiny_model(), layer="patch"),
        "model-block": lambda: ModelEmbedder(_tiny_model(), layer="block:2"),
        "callable": lambda: CallableEmbedder(PixelEmbedder(dim=8, seed=5, tubelet=TUBELET), {"name": "pixel8"}),
    }


@pytest.mark.parametrize("name", list(_embedders()))
def test_fit_save_load_mask_round_trip(name, tmp_path):
    embedder = _embedders()[name]()
    source = [_clips(6, False, s) for s in range(2)]
    target = [_clips(6, True, 10 + s) for s in range(2)]
    stats = fit_statistics(
        source, target, embedder, num_words=8, num_anchors=2, num_prototypes=32, init_tokens=64, progress=False
    )
    path = stats.save(tmp_path / "stats.safetensors")
    loaded = DifferenceStats.load(path)
    assert loaded.scorers == ("distance", "enrichment", "tficf")
    for key in ("centroids", "prototypes", "source_quantiles", "target_quantiles", "enrichment"):
        assert torch.equal(getattr(loaded, key), getattr(stats, key).float()), key
    assert loaded.embedder == embedder.identity
    video = _clips(3, True, 99)
    direct = DifferenceMasker(stats=stats, embedder=embedder, ratio=0.5).generate(
        video, torch.Generator().manual_seed(1)
    )
    if name in ("pixel", "cnn"):  # rebuilt from the file's identity alone
        again = DifferenceMasker.load(path, ratio=0.5).generate(video, torch.Generator().manual_seed(1))
    else:  # a model without a recorded checkpoint path, or a callable: the embedder is passed again
        again = DifferenceMasker.load(path, embedder=embedder, ratio=0.5).generate(
            video, torch.Generator().manual_seed(1)
        )
    assert torch.equal(direct.mask, again.mask) and torch.allclose(direct.scores, again.scores)
    assert direct.mask.sum(1).tolist() == [int(0.5 * 16) * 2] * 3


def test_statistics_refuse_another_embedder(tmp_path):
    source, target = [_clips(6, False, 0)], [_clips(6, True, 1)]
    stats = _small_stats(source, target)
    with pytest.raises(VideomaskError, match="embedder mismatch"):
        DifferenceMasker(stats=stats, embedder=CNNEmbedder(tubelet=TUBELET))
    with pytest.raises(VideomaskError, match="embedder mismatch"):
        DifferenceMasker(stats=stats, embedder=PixelEmbedder(dim=16, seed=1, tubelet=TUBELET))
    model_stats = _small_stats(source, target, embedder=ModelEmbedder(_tiny_model(), layer="block:1"))
    other = _tiny_model()
    with torch.no_grad():
        other.blocks[0].attn.proj.weight.add_(0.1)
    with pytest.raises(VideomaskError, match="embedder mismatch"):
        DifferenceMasker(stats=model_stats, embedder=ModelEmbedder(other, layer="block:1"))
    with pytest.raises(VideomaskError, match="embedder mismatch"):  # same weights, another layer
        DifferenceMasker(stats=model_stats, embedder=ModelEmbedder(_tiny_model(), layer="block:2"))
    with pytest.raises(VideomaskError, match="scorer"):
        DifferenceMasker(stats=stats, scorer="magic")


def test_cnn_embedder_is_imagenet_mobilenet():
    """The shipped weights load, the features lie on the 16-px patch grid and differ from a random init."""
    import torchvision

    emb = CNNEmbedder(tubelet=TUBELET)
    out = emb(torch.randn(1, 3, 4, 64, 96))
    assert out.shape == (1, 2 * 4 * 6, 96)
    random_trunk = torchvision.models.mobilenet_v2(weights=None).features[:14]
    first = dict(emb.model.named_parameters())["0.0.weight"]
    assert not torch.allclose(first, random_trunk[0][0].weight)
    assert build_embedder("cnn").identity == emb.identity
    with pytest.raises(VideomaskError, match="not found"):
        CNNEmbedder(weights="/no/such/file.pt")


# ------------------------------------------------------------------ the score cache


def _write_video(path, frames: np.ndarray) -> None:
    from videomask.bench.footage import write_clip

    write_clip(path, frames, fps=10, crf=0)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Wide videos (64 x 128) with a square, statistics from clips of them, and the masker."""
    from videomask.data import ClipTransform, VideoDataset

    root = tmp_path_factory.mktemp("scorecache")
    rng = np.random.default_rng(0)
    for which in ("source", "target"):
        (root / which).mkdir()
        for i in range(4):
            yy, xx = np.mgrid[0:64, 0:128]
            base = 128 + 80 * np.sin(0.15 * xx + 0.1 * yy * (i + 1))[None, :, :, None] * np.ones((12, 1, 1, 3))
            base = base + rng.normal(0, 4, base.shape)
            if which == "target":
                base[:, 8:40, 40 + 8 * i : 72 + 8 * i] = [230, 30, 200]
            _write_video(root / which / f"{which}{i}.mp4", np.clip(base, 0, 255).astype(np.uint8))

    def dataset(which):
        return VideoDataset.from_folder(
            root / which,
            num_frames=4,
            sampling_rate=2,
            sampling="center",
            transform=ClipTransform.for_eval(64),
            tubelet=TUBELET,
            seed=0,
        )

    stats = fit_statistics(
        dataset("source"),
        dataset("target"),
        PixelEmbedder(dim=16, tubelet=TUBELET),
        num_words=8,
        num_anchors=2,
        num_prototypes=32,
        init_tokens=64,
        progress=False,
    )
    stats_path = stats.save(root / "stats.safetensors")
    return {"root": root, "stats": stats_path, "dataset": dataset}


def test_cached_scores_equal_in_loop_scores(scored, tmp_path):
    """Clips that are patch-aligned centre crops (x = 32..96 of 128) at the cache's scale: looked-up scores
    equal the in-loop scores (to float16 storage) when the clip's slots start on cached frames, and stay
    close when they start one frame off."""
    from videomask.data import ClipTransform, collate_clips
    from videomask.difference import build_score_cache
    from videomask.video import open_video

    masker = DifferenceMasker.load(scored["stats"], ratio=0.5)
    items = [(p.name, str(p)) for p in sorted((scored["root"] / "target").glob("*.mp4"))]
    cache, skipped = build_score_cache(masker, items, size=64, num_frames=4, sampling_rate=2, progress=False)
    assert not skipped and len(cache) == 4
    path = cache.save(tmp_path / "scores.safetensors")
    cached = DifferenceMasker.load(scored["stats"], ratio=0.5, cache=path)
    assert cached.embedder is None  # the cache replaces the embedder

    ds = scored["dataset"]("target")  # the loader path: centre sampling gives frames 2, 4, 6, 8
    batch = collate_clips([ds[i] for i in range(len(ds))])
    assert batch["frame_indices"][0].tolist() == [2, 4, 6, 8]
    assert torch.allclose(cached.generate(batch).scores, masker.generate(batch["video"]).scores, atol=2e-3)

    def clips(frames):
        videos, geoms = [], []
        for _, path_ in items:
            with open_video(path_) as reader:
                video, geometry = ClipTransform.for_eval(64)(reader.read(frames))
            videos.append(video)
            geoms.append(geometry.to_tensor())
        return {
            "video": torch.stack(videos),
            "video_id": [v for v, _ in items],
            "frame_indices": torch.tensor([frames] * len(items)),
            "geometry": torch.stack(geoms),
        }

    for frames, atol in (([0, 2, 4, 6], 2e-3), ([3, 5, 7, 9], 0.1)):
        b = clips(frames)
        got, want = cached.generate(b).scores, masker.generate(b["video"]).scores
        assert (got - want).abs().max() <= atol, (frames, (got - want).abs().max())
    with pytest.raises(VideomaskError, match="not in score cache"):
        cached.generate({**b, "video_id": ["nope"] * 4})


def test_score_cache_cli_and_refusal(scored, tmp_path, capsys):
    def score_cache(out: Path, *flags: str) -> int:
        target, stats = scored["root"] / "target", scored["stats"]
        argv = f"score-cache {target} --stats {stats} -o {out} --size 64 --num-frames 4 --sampling-rate 2"
        return cli_main([*argv.split(), *flags])

    out = tmp_path / "scores.safetensors"
    assert score_cache(out) == 0 and "4 videos scored" in capsys.readouterr().out
    other = _small_stats()
    with pytest.raises(VideomaskError, match="other statistics"):
        DifferenceMasker(stats=other, cache=out)
    with pytest.raises(VideomaskError, match="other statistics or scorer"):
        DifferenceMasker.load(scored["stats"], scorer="enrichment", cache=str(out))
    words = tmp_path / "enrichment.safetensors"
    assert score_cache(words, "--scorer", "enrichment") == 0
    with pytest.raises(VideomaskError, match="visual words"):  # the word rule needs words, not cached scores
        DifferenceMasker.load(scored["stats"], scorer="enrichment", cache=str(words))
    assert (
        DifferenceMasker.load(scored["stats"], scorer="enrichment", anchor_rule="share", cache=str(words)).cache
        is not None
    )
    assert cli_main(["score-cache", str(tmp_path / "none"), "--stats", str(scored["stats"]), "-o", str(out)]) == 2


# ------------------------------------------------------------------ known-difference footage


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    from pathlib import Path

    from videomask.bench.footage import build_known_difference

    out = tmp_path_factory.mktemp("known")
    assets = Path(__file__).resolve().parents[2] / "assets"
    build_known_difference(out, assets=assets, num_source=8, num_target=8, num_frames=16, sizes=(32, 48), seed=3)
    return out


def test_footage_labels_match_the_pasted_motion(footage):
    """Boxes move in the labelled direction at the labelled speed, stay in the frame, and the boxes cache
    holds the same boxes."""
    from videomask.bench.footage import DIRECTIONS
    from videomask.detect import BoxCache

    labels = json.loads((footage / "labels.json").read_text())["clips"]
    cache = BoxCache.load(footage / "target_boxes.jsonl")
    assert len(labels) == 8 and len(list((footage / "target").glob("*.mp4"))) == 8
    for clip in labels:
        boxes = np.array(clip["boxes"])  # [T, 4]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        step = (centre[-1] - centre[0]) / (len(boxes) - 1)  # px per frame
        dx, dy = DIRECTIONS[clip["direction"]]
        assert np.allclose(step, [dx * clip["speed"], dy * clip["speed"]], atol=0.15), (step, clip)
        assert abs(boxes[0, 2] - boxes[0, 0] - clip["width"]) <= 1
        assert np.allclose(cache.boxes(clip["clip"], [0])[0].numpy(), boxes[0:1])


def test_balanced_footage_labels_carry_no_scenery_prior():
    """balance_every=3: within every (scenery, test-group) cell each direction and speed class occurs as
    evenly as the cell allows, objects are not tied to the scenery, and the same seed gives the same plan
    (the old rule tied object to scenery and drew labels independently, so a cell's mix could be far off)."""
    from collections import Counter

    from videomask.bench.footage import _balanced_plan

    rng = np.random.default_rng(0)
    plan = _balanced_plan(192, 4, 4, 3, 3, 3, rng)
    assert plan is not None and len(plan) == 192
    assert plan == _balanced_plan(192, 4, 4, 3, 3, 3, np.random.default_rng(0))
    assert _balanced_plan(10, 4, 4, 3, 3, 0, rng) is None
    for scenery in range(4):
        for test in (False, True):
            cell = [plan[i] for i in range(192) if i % 4 == scenery and (i % 3 == 2) == test]
            assert len(cell) == (16 if test else 32)
            for field, k in ((0, 4), (1, 3), (2, 3), (3, 8)):
                counts = Counter(c[field] for c in cell)
                assert len(counts) == k and max(counts.values()) - min(counts.values()) <= 1, (field, counts)


def test_balanced_footage_is_written_with_matching_labels(tmp_path):
    from pathlib import Path

    from videomask.bench.footage import DIRECTIONS, build_known_difference

    assets = Path(__file__).resolve().parents[2] / "assets"
    summary = build_known_difference(
        tmp_path, assets=assets, num_source=2, num_target=12, num_frames=8, sizes=(32,), seed=1, balance_every=3
    )
    assert summary["balance_every"] == 3
    labels = json.loads((tmp_path / "labels.json").read_text())["clips"]
    assert len(labels) == 12 and len({c["object"] for c in labels if c["scenery"] == labels[0]["scenery"]}) >= 2
    for clip in labels:
        boxes = np.array(clip["boxes"])
        step = ((boxes[-1, :2] + boxes[-1, 2:]) - (boxes[0, :2] + boxes[0, 2:])) / 2 / (len(boxes) - 1)
        dx, dy = DIRECTIONS[clip["direction"]]
        assert np.allclose(step, [dx * clip["speed"], dy * clip["speed"]], atol=0.3), (step, clip)


def test_distance_score_finds_the_pasted_objects(footage):
    """On the known-difference footage (same real scenery, real objects in the target only), the default
    distance score separates object tokens from scenery (AUC >= 0.85) and TF-ICF does not do better."""
    from videomask.bench.metrics import roc_auc, token_coverage, token_labels
    from videomask.data import ClipTransform, VideoDataset, collate_clips
    from videomask.detect import BoxCache
    from videomask.patches import ClipGeometry

    def dataset(which, seed):
        return VideoDataset.from_folder(
            footage / which,
            num_frames=8,
            sampling_rate=2,
            sampling="random",
            num_sample=2,
            transform=ClipTransform.for_eval(128),
            tubelet=TUBELET,
            seed=seed,
        )

    embedder = PixelEmbedder(tubelet=TUBELET)
    stats = fit_statistics(
        dataset("source", 0),
        dataset("target", 0),
        embedder,
        num_words=32,
        num_anchors=4,
        num_prototypes=128,
        progress=False,
    )
    ds = dataset("target", 7)
    batch = collate_clips([ds[i] for i in range(len(ds))])
    cache = BoxCache.load(footage / "target_boxes.jsonl")
    labels = [
        token_labels(
            *token_coverage(
                cache.boxes(v, batch["frame_indices"][b]), ClipGeometry.from_tensor(batch["geometry"][b]), TUBELET
            )
        )
        for b, v in enumerate(batch["video_id"])
    ]
    obj, valid = torch.stack([o for o, _ in labels]), torch.stack([v for _, v in labels])
    aucs = {}
    for scorer in ("distance", "tficf"):
        res = DifferenceMasker(stats=stats, embedder=embedder, scorer=scorer, mode="token").generate(batch)
        aucs[scorer] = roc_auc(res.scores, obj, valid)
    assert aucs["distance"] >= 0.85, aucs
    assert aucs["tficf"] < aucs["distance"], aucs


def test_version_1_statistics_still_load_with_tficf(tmp_path):
    """A file written before the distance and enrichment scorers (version 1) loads; its masker uses TF-ICF."""
    from safetensors.torch import save_file

    stats = _small_stats()
    tensors = {
        "centroids": stats.centroids,
        "anchors": stats.anchors,
        "counts_target": stats.counts_target,
        "counts_source": stats.counts_source,
        "tficf": stats.tficf,
    }
    meta = {"format": "videomask.difference_stats", "version": 1, "embedder": stats.embedder, "settings": {}}
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata={"videomask": json.dumps(meta)})
    old = DifferenceStats.load(tmp_path / "v1.safetensors")
    assert old.scorers == ("tficf",)
    masker = DifferenceMasker(stats=old)
    assert masker.scorer == "tficf" and masker.anchor_rule == "word"
    with pytest.raises(VideomaskError, match="support scorers"):
        DifferenceMasker(stats=old, scorer="distance")


def test_pixel_embedder_keeps_low_contrast_tokens_far_from_zero():
    """A bright, low-contrast clip (offset 50, texture 1e-3): the embedding equals the float64 formula; before
    the clip-mean centring, E[x^2] - E[x]^2 cancelled the variance away in float32."""
    from videomask.patches import patchify

    g = torch.Generator().manual_seed(0)
    video = 50.0 + 1e-3 * torch.randn(2, 3, 4, 32, 32, generator=g)  # [B, C, T, H, W]
    emb = PixelEmbedder(dim=16, tubelet=TUBELET, pool=1)
    got = emb(video)  # [B, L, D]
    x = patchify(video.double() - 50.0, TUBELET)  # [B, L, P] (the shift does not change standardisation)
    z = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6)
    want = z @ emb.projection(x.shape[-1]).double()
    assert torch.allclose(got.double(), want, atol=2e-2, rtol=1e-2), (got.double() - want).abs().max()


def test_score_cache_uses_the_training_normalisation(scored):
    """A cache built with the training clips' mean/std matches in-step scores on those clips; one built with
    ImageNet's does not (per-channel normalisation changes a token's pattern)."""
    from videomask.data import ClipTransform
    from videomask.difference import build_score_cache
    from videomask.video import open_video

    mean, std = (0.2, 0.5, 0.8), (0.3, 0.2, 0.1)
    masker = DifferenceMasker.load(scored["stats"], ratio=0.5)
    items = [(p.name, str(p)) for p in sorted((scored["root"] / "target").glob("*.mp4"))][:2]
    videos, geoms = [], []
    for _, path in items:
        with open_video(path) as reader:
            video, geometry = ClipTransform.for_eval(64, mean=mean, std=std)(reader.read([0, 2, 4, 6]))
        videos.append(video)
        geoms.append(geometry.to_tensor())
    batch = {
        "video": torch.stack(videos),
        "video_id": [v for v, _ in items],
        "frame_indices": torch.tensor([[0, 2, 4, 6]] * 2),
        "geometry": torch.stack(geoms),
    }
    want = masker.generate(batch["video"]).scores
    errors = []
    for m, s in ((mean, std), (None, None)):
        cache, _ = build_score_cache(
            masker, items, size=64, num_frames=4, sampling_rate=2, progress=False, mean=m, std=s
        )
        got = DifferenceMasker.load(scored["stats"], ratio=0.5, cache=cache).generate(batch).scores
        errors.append(float((got - want).abs().max()))
    assert errors[0] <= 2e-3 < errors[1], errors
