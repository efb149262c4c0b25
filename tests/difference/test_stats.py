"""Difference statistics: embedders, streaming k-means, TF-ICF, the statistics file, ``videomask fit``,
and an honest quality check (do the anchors find an object only the target domain shows?)."""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from videomask.cli import main as cli_main
from videomask.difference import (
    CallableEmbedder,
    DifferenceStats,
    ModelEmbedder,
    PixelEmbedder,
    StreamingKMeans,
    fit_statistics,
    tficf_scores,
)
from videomask.errors import VideomaskError
from videomask.masking import DifferenceMasker, build_masker

SIZE, FRAMES, OBJ = 96, 8, 32  # frame side, frames per video, object side (pixels)
TUBELET = (2, 16, 16)


# ------------------------------------------------------------------ generated footage


def _frame(k: int, rng_params: dict, obj: tuple[int, int] | None) -> np.ndarray:
    """Grey moving stripes (both domains) and, in the target, a magenta/green checkerboard square."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    a, f, phase = rng_params["angle"], rng_params["freq"], rng_params["phase"]
    stripes = 128 + 60 * np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + phase + 0.4 * k)
    frame = np.repeat(stripes[..., None], 3, axis=2)
    frame += rng_params["noise"].standard_normal((SIZE, SIZE, 1)) * 6
    if obj is not None:
        y0, x0 = obj
        cells = ((yy[y0 : y0 + OBJ, x0 : x0 + OBJ] // 4 + xx[y0 : y0 + OBJ, x0 : x0 + OBJ] // 4) % 2).astype(bool)
        patch = np.where(cells[..., None], np.array([230, 30, 220]), np.array([30, 220, 40]))
        frame[y0 : y0 + OBJ, x0 : x0 + OBJ] = patch
    return np.clip(frame, 0, 255).astype(np.uint8)


def _write(path: Path, seed: int, obj: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(seed)
    params = {"angle": rng.uniform(0, np.pi), "freq": rng.uniform(0.15, 0.5), "phase": rng.uniform(0, 6), "noise": rng}
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv444p"
        stream.codec_context.options = {"crf": "10", "preset": "ultrafast"}
        for k in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(_frame(k, params, obj), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> dict:
    """12 source videos (stripes) and 12 target videos (stripes + the object at a known place)."""
    root = tmp_path_factory.mktemp("domains")
    (root / "source").mkdir()
    (root / "target").mkdir()
    rng = np.random.default_rng(0)
    objects = {}
    for i in range(12):
        _write(root / "source" / f"s{i:02d}.mp4", 100 + i, None)
        obj = (int(rng.integers(0, (SIZE - OBJ) // 8 + 1)) * 8, int(rng.integers(0, (SIZE - OBJ) // 8 + 1)) * 8)
        _write(root / "target" / f"t{i:02d}.mp4", 200 + i, obj)
        objects[f"t{i:02d}.mp4"] = obj
    return {"root": root, "objects": objects}


def _object_cover(obj: tuple[int, int]) -> torch.Tensor:
    """Share of each ``16 x 16`` patch covered by the object -> float ``[h*w]`` (token order within a slot)."""
    cover = torch.zeros(SIZE, SIZE)
    y0, x0 = obj
    cover[y0 : y0 + OBJ, x0 : x0 + OBJ] = 1
    return cover.view(SIZE // 16, 16, SIZE // 16, 16).mean(dim=(1, 3)).reshape(-1)


# ------------------------------------------------------------------ embedders


def test_pixel_embedder_deterministic_and_identity():
    video = torch.randn(2, 3, 4, 32, 48)
    a = PixelEmbedder(dim=16, seed=3)(video)
    assert a.shape == (2, 2 * 2 * 3, 16)
    assert torch.equal(a, PixelEmbedder(dim=16, seed=3)(video))
    assert not torch.allclose(a, PixelEmbedder(dim=16, seed=4)(video))
    assert PixelEmbedder(dim=16, seed=3).identity == {
        "kind": "pixel",
        "seed": 3,
        "dim": 16,
        "tubelet": [2, 16, 16],
        "pool": 2,
    }
    # per-token normalisation: brightness and contrast do not change the embedding
    assert torch.allclose(PixelEmbedder(dim=16, seed=3)(3 * video + 1), a, atol=1e-4)
    with pytest.raises(VideomaskError, match="pool"):
        PixelEmbedder(pool=3)


@pytest.mark.parametrize("pool", [1, 2, 4])
def test_pixel_embedder_equals_its_formula(pool):
    """The conv implementation equals standardise(patchify(pooled video)) @ projection."""
    from videomask.patches import patchify

    video = torch.randn(2, 3, 4, 32, 48) * 2 + 1
    emb = PixelEmbedder(dim=8, seed=1, pool=pool)
    pooled = torch.nn.functional.avg_pool3d(video, (1, pool, pool))
    tokens = patchify(pooled, (2, 16 // pool, 16 // pool))  # [B, L, P]
    tokens = (tokens - tokens.mean(-1, keepdim=True)) / (tokens.std(-1, keepdim=True) + 1e-6)
    assert torch.allclose(emb(video), tokens @ emb.projection(tokens.shape[-1]), atol=1e-4)


def test_pixel_embedder_input_layout_and_dtype():
    """Strided / permuted input (e.g. from a Hugging Face ``[B, T, C, H, W]`` tensor) and half precision
    embed like the contiguous float clip; the output is a contiguous ``[B, L, D]`` tensor."""
    video = torch.randn(2, 3, 4, 32, 48)
    emb = PixelEmbedder(dim=8, seed=2)
    ref = emb(video)
    assert ref.is_contiguous() and ref.dtype == torch.float32
    permuted = video.permute(0, 2, 1, 3, 4).contiguous().permute(0, 2, 1, 3, 4)  # same values, HF strides
    assert not permuted.is_contiguous()
    assert torch.allclose(emb(permuted), ref, atol=1e-5)
    wide = torch.randn(2, 3, 4, 32, 64)
    wide[..., :48] = video
    assert torch.allclose(emb(wide[..., :48]), ref, atol=1e-5)  # a strided slice
    assert torch.allclose(emb(video.half()), emb(video.half().float()), atol=1e-5)


class _StandIn(torch.nn.Module):
    """A tiny model with the ``embed_patches`` contract (a tubelet linear map)."""

    tubelet = (2, 16, 16)

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(2 * 16 * 16 * 3, 8)

    def embed_patches(self, video):
        from videomask.patches import patchify

        return self.proj(patchify(video, self.tubelet))  # [B, L, 8]


def _models():
    models = [("stand-in", _StandIn)]
    try:
        from videomask.model import build_model

        models.append(("videomask", lambda: build_model("tiny", img_size=32, num_frames=4, depth=1, decoder_depth=1)))
    except ImportError:
        pass
    return models


@pytest.mark.parametrize("label,factory", _models())
def test_model_embedder_identity_follows_weights(label, factory):
    torch.manual_seed(0)
    model = factory()
    emb = ModelEmbedder(model)
    video = torch.randn(2, 3, 4, 32, 32)
    out = emb(video)
    assert out.shape[:2] == (2, 2 * 2 * 2) and out.dim() == 3
    assert emb.tubelet == (2, 16, 16)
    same = ModelEmbedder(model)
    assert same.identity == emb.identity
    first = model.patch_embed.proj.weight if hasattr(model, "patch_embed") else next(model.parameters())
    with torch.no_grad():
        first.add_(0.01)
    assert ModelEmbedder(model).identity["fingerprint"] != emb.identity["fingerprint"]


def test_model_embedder_copies_only_what_it_runs():
    """layer 'patch' holds the patch embedding alone; 'block:N' the first N blocks; the copy is frozen."""
    from videomask.model import build_model

    model = build_model("tiny", img_size=32, num_frames=4, depth=3, decoder_depth=1)
    patch = ModelEmbedder(model, layer="patch")
    n_patch = sum(p.numel() for p in model.patch_embed.parameters())
    assert sum(p.numel() for p in patch.model.parameters()) == n_patch
    two = ModelEmbedder(model, layer="block:2")
    n_two = n_patch + sum(p.numel() for blk in model.blocks[:2] for p in blk.parameters())
    assert sum(p.numel() for p in two.model.parameters()) == n_two
    assert not any(p.requires_grad for p in two.model.parameters())
    video = torch.randn(2, 3, 4, 32, 32)
    model.eval()
    with torch.no_grad():  # block:2 equals the encoder run by hand over all tokens
        x = model.embed_patches(video) + model.pos_table(8, model.config.embed_dim, video.device)[None]
        for blk in model.blocks[:2]:
            x = blk(x)
    assert torch.allclose(two(video), x, atol=1e-5)
    # training the original afterwards leaves the copy's embedding unchanged
    before = two(video)
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.add_(1.0)
    assert torch.equal(two(video), before)
    assert ModelEmbedder(model, layer="block:2").identity["fingerprint"] != two.identity["fingerprint"]
    with pytest.raises(VideomaskError, match="block:N"):
        ModelEmbedder(model, layer="block:4")


def test_embedder_mismatch_and_callable_embedder():
    source = [torch.randn(4, 3, 4, 32, 32) for _ in range(2)]
    target = [torch.randn(4, 3, 4, 32, 32) + 1 for _ in range(2)]
    stats = fit_statistics(
        source, target, PixelEmbedder(dim=8, seed=0), num_words=4, num_anchors=1, init_tokens=16, progress=False
    )
    with pytest.raises(VideomaskError, match="embedder mismatch"):
        DifferenceMasker(stats=stats, embedder=PixelEmbedder(dim=8, seed=1))
    fn = CallableEmbedder(lambda v: PixelEmbedder(dim=8, seed=0)(v) * 2, {"name": "double"})
    stats_fn = fit_statistics(source, target, fn, num_words=4, num_anchors=1, init_tokens=16, progress=False)
    assert stats_fn.embedder == {"kind": "callable", "name": "double"}
    with pytest.raises(VideomaskError, match="pass the same embedder"):
        DifferenceMasker(stats=stats_fn)
    masker = DifferenceMasker(stats=stats_fn, embedder=fn, tubelet=(2, 16, 16), ratio=0.5)
    assert masker(source[0]).sum(1).tolist() == [2 * 2] * 4  # 2 of 4 tubes x 2 slots
    with pytest.raises(VideomaskError, match="tubelet"):
        DifferenceMasker(stats=stats, tubelet=(2, 8, 8))


# ------------------------------------------------------------------ k-means and TF-ICF


def test_streaming_kmeans_recovers_clusters_with_flat_memory():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    km = StreamingKMeans(5, init_tokens=200, seed=0)
    for _ in range(30):
        labels = torch.randint(5, (100,), generator=g)
        km.partial_fit(centres[labels] + 0.05 * torch.randn(100, 16, generator=g))
        assert km._buffered < 200  # nothing accumulates after the first chunk
    found = km.finalize()
    best = (found @ centres.T).amax(dim=0)  # each true centre's closest centroid
    assert (best > 0.98).all(), best


def test_tficf_formula():
    c_t = torch.tensor([50, 30, 20, 0])
    c_s = torch.tensor([500, 10, 0, 490])
    got = tficf_scores(c_t, c_s)
    n_t, n_s, V = 100, 1000, 4
    want = [c / n_t * math.log((n_s + V) / (s + 1)) for c, s in zip(c_t.tolist(), c_s.tolist())]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    assert got.argmax() == 2  # target-only word wins over the word frequent in both


# ------------------------------------------------------------------ the statistics file


def test_stats_round_trip_and_bad_files(tmp_path):
    source = [torch.randn(4, 3, 4, 32, 32) for _ in range(2)]
    target = [torch.randn(4, 3, 4, 32, 32) * 2 for _ in range(2)]
    stats = fit_statistics(
        source, target, PixelEmbedder(dim=8), num_words=6, num_anchors=2, init_tokens=16, progress=False
    )
    assert int(stats.counts_target.sum()) == 8 * 8 and int(stats.counts_source.sum()) == 8 * 8
    path = stats.save(tmp_path / "s.safetensors")
    back = DifferenceStats.load(path)
    for name in ("centroids", "anchors", "counts_target", "counts_source", "tficf"):
        assert torch.equal(getattr(back, name), getattr(stats, name)), name
    assert back.embedder == stats.embedder and back.settings == json.loads(json.dumps(stats.settings))
    video = torch.randn(3, 3, 4, 32, 32)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(DifferenceMasker.load(path)(video, g()), DifferenceMasker(stats=stats)(video, g()))
    assert torch.equal(
        build_masker("difference", stats=str(path))(video, g()), DifferenceMasker(stats=stats)(video, g())
    )
    with pytest.raises(VideomaskError, match="does not exist"):
        DifferenceStats.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VideomaskError):
        DifferenceStats.load(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(VideomaskError, match="not videomask"):
        DifferenceStats.load(tmp_path / "other.safetensors")


def test_fit_statistics_is_deterministic():
    source = [torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    target = [torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(9 + i)) for i in range(2)]
    a = fit_statistics(source, target, PixelEmbedder(dim=8), num_words=4, num_anchors=2, init_tokens=16, progress=False)
    b = fit_statistics(source, target, PixelEmbedder(dim=8), num_words=4, num_anchors=2, init_tokens=16, progress=False)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.anchors, b.anchors)
    with pytest.raises(VideomaskError, match="num_anchors"):
        fit_statistics(source, target, PixelEmbedder(dim=8), num_words=4, num_anchors=5, progress=False)
    with pytest.raises(VideomaskError, match="re-iterable"):
        fit_statistics(iter(source), target, PixelEmbedder(dim=8), num_words=4, num_anchors=1, progress=False)


class _Batches:
    """A re-iterable of fresh video batches that records, each time it makes one, how many batches it made
    before (in any pass, of this set or the other) are still alive somewhere."""

    def __init__(self, seed: int, count: int, made: list) -> None:
        self.seed, self.count, self.made = seed, count, made
        self.alive_at_load: list[int] = []

    def __iter__(self):
        import weakref

        for i in range(self.count):
            gc.collect()
            self.alive_at_load.append(sum(ref() is not None for ref in self.made))
            batch = torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(self.seed + i))
            self.made.append(weakref.ref(batch))
            box = [batch]
            del batch
            yield box.pop()  # keep no reference here


def test_fit_statistics_drops_each_batch_before_loading_the_next():
    """Peak memory flat in the number of clips: while a batch is loaded, no earlier batch is still held."""
    made: list = []
    source, target = _Batches(0, 5, made), _Batches(100, 3, made)  # sets of different lengths
    stats = fit_statistics(
        source, target, PixelEmbedder(dim=8), num_words=4, num_anchors=2, init_tokens=16, progress=False
    )
    assert stats.settings["source_clips"] == 20 and stats.settings["target_clips"] == 12
    assert len(source.alive_at_load) == 2 * 5 and len(target.alive_at_load) == 2 * 3  # two passes each
    assert max(source.alive_at_load + target.alive_at_load) == 0


# ------------------------------------------------------------------ videomask fit + quality


def _fit_cli(domains, out: Path) -> int:
    root = domains["root"]
    return cli_main(
        [
            "fit",
            "--source",
            str(root / "source"),
            "--target",
            str(root / "target"),
            "-o",
            str(out),
            "--size",
            str(SIZE),
            "--num-frames",
            "4",
            "--sampling-rate",
            "2",
            "--clips-per-video",
            "2",
            "--num-words",
            "16",
            "--num-anchors",
            "2",
            "--dim",
            "32",
            "--tokens-per-clip",
            "72",
        ]
    )


def test_fit_cli_errors(tmp_path, domains, capsys):
    assert (
        cli_main(
            [
                "fit",
                "--source",
                str(tmp_path / "nope"),
                "--target",
                str(domains["root"] / "target"),
                "-o",
                str(tmp_path / "s.st"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        cli_main(
            [
                "fit",
                "--source",
                str(tmp_path / "empty"),
                "--target",
                str(domains["root"] / "target"),
                "-o",
                str(tmp_path / "s.st"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no videos" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["fit", "--source", "a", "--target", "b", "-o", "c", "--embedder", "magic"]) == 2


def test_anchor_patches_find_the_target_only_object(tmp_path, domains, capsys):
    """Fit with ``videomask fit``; the default (distance) score ranks the object the source never shows above
    the scenery, its anchors land on it and stay rare on source clips; TF-ICF is measured beside it."""
    from videomask.bench.metrics import roc_auc
    from videomask.data import ClipTransform, VideoDataset, collate_clips

    out = tmp_path / "stats.safetensors"
    assert _fit_cli(domains, out) == 0
    printed = capsys.readouterr().out
    assert "distance (default)" in printed and "enrichment" in printed and "tficf" in printed
    stats = DifferenceStats.load(out)
    assert stats.settings["source_clips"] == 24 and stats.settings["target_clips"] == 24

    def batch(which):
        ds = VideoDataset.from_folder(
            domains["root"] / which,
            num_frames=4,
            sampling_rate=2,
            sampling="center",
            transform=ClipTransform.for_eval(SIZE),
            seed=1,
        )
        return collate_clips([ds[i] for i in range(len(ds))])

    masker = DifferenceMasker.load(out, ratio=0.5, direction="mask")
    assert masker.scorer == "distance"
    tgt, src = batch("target"), batch("source")
    res = masker.generate(tgt, torch.Generator().manual_seed(0))
    t_slots = res.anchors.shape[1] // (SIZE // 16) ** 2
    cover = torch.stack([_object_cover(domains["objects"][v]) for v in tgt["video_id"]]).repeat(1, t_slots)  # [B, L]
    anchors = res.anchors
    touches, mostly = cover > 0, cover >= 0.5
    auc = roc_auc(res.scores, mostly, mostly | ~touches)  # object tokens vs untouched scenery
    chance = touches.float().mean().item()  # share of tokens that touch the object
    precision = touches[anchors].float().mean().item()  # share of anchor tokens that touch it
    recall = (
        DifferenceMasker.load(out, ratio=0.5, anchor_rule="threshold")
        .generate(tgt)
        .anchors[mostly]
        .float()
        .mean()
        .item()
    )
    src_rate = masker.generate(src).anchors.float().mean().item()
    masked_obj = res.mask[mostly].float().mean().item()  # ratio 0.5, alpha 1: object tubes masked first
    tficf = DifferenceMasker.load(out, ratio=0.5, scorer="tficf").generate(tgt)
    tficf_auc = roc_auc(tficf.scores, mostly, mostly | ~touches)
    with capsys.disabled():
        print(
            f"\n[anchor coverage] distance AUC {auc:.3f} (tficf {tficf_auc:.3f}); "
            f"anchor precision {precision:.3f} vs chance "
            f"{chance:.3f} ({precision / chance:.1f}x); threshold-rule recall on >=50%-object tokens {recall:.3f}; "
            f"anchor rate target {anchors.float().mean().item():.3f} vs source {src_rate:.3f}; "
            f"object tokens masked {masked_obj:.3f} at ratio 0.5"
        )
    assert auc >= 0.9
    assert precision >= 3 * chance
    assert recall >= 0.7
    assert src_rate <= 0.5 * anchors.float().mean().item()
    assert masked_obj >= 0.9


def test_fit_cli_with_checkpoint_embedder(tmp_path, domains):
    """``--embedder checkpoint:PATH``: the statistics record the checkpoint, and the masker rebuilds it."""
    from videomask.io import save_model_weights
    from videomask.model import build_model
    from videomask.train import model_meta

    torch.manual_seed(0)
    model = build_model("tiny", img_size=SIZE, num_frames=4, depth=1, decoder_depth=1)
    weights = tmp_path / "model.safetensors"
    save_model_weights(model, weights, model_meta(model))
    out = tmp_path / "stats.safetensors"
    root = domains["root"]
    assert (
        cli_main(
            [
                "fit",
                "--source",
                str(root / "source"),
                "--target",
                str(root / "target"),
                "-o",
                str(out),
                "--embedder",
                f"checkpoint:{weights}",
                "--size",
                str(SIZE),
                "--num-frames",
                "4",
                "--sampling-rate",
                "2",
                "--num-words",
                "8",
                "--num-anchors",
                "2",
                "--max-clips",
                "6",
            ]
        )
        == 0
    )
    stats = DifferenceStats.load(out)
    assert stats.embedder["kind"] == "model" and stats.embedder["source"] == str(weights)
    assert stats.centroids.shape == (8, model.config.embed_dim)
    masker = DifferenceMasker.load(out, ratio=0.5)  # rebuilds the embedder from the recorded checkpoint
    video = torch.randn(2, 3, 4, SIZE, SIZE)
    assert masker(video).sum(1).tolist() == [18 * 2] * 2
    other = build_model("tiny", img_size=SIZE, num_frames=4, depth=1, decoder_depth=1)  # other weights
    with pytest.raises(VideomaskError, match="embedder mismatch"):
        DifferenceMasker.load(out, embedder=ModelEmbedder(other))
    assert torch.equal(
        DifferenceMasker.load(out, embedder=ModelEmbedder(model), ratio=0.5)(video, torch.Generator().manual_seed(1)),
        masker(video, torch.Generator().manual_seed(1)),
    )
