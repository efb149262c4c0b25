"""VideoMAE masked video autoencoder on timm transformer blocks.

The layout follows facebookresearch/mae ``models_mae.py`` (patchify / forward_encoder /
forward_decoder / forward_loss) and is numerically the same model as Hugging Face
``transformers.VideoMAEForPreTraining`` (see :mod:`videomask.io.hf` for weight import/export):

* a tubelet ``Conv3d`` embedding (computed as the equivalent linear map on the *visible* tubelets only);
* a fixed 1-D sine-cosine position table over the flattened token index (built in torch, any ``L``);
* an encoder of timm ``Block``\\ s that runs on the visible tokens only; its attention has q and v biases
  and a k bias that is a constant zero (not a parameter), as in the original VideoMAE;
* ``encoder_to_decoder``, a learned mask token and a narrower decoder that predicts the pixels of the
  masked tubelets; optional VideoMAE V2 decoder masking (the decoder reconstructs only part of the
  masked tokens);
* the normalised-pixel loss: unnormalise with mean/std, normalise each token's pixels per channel
  (unbiased variance, ``+1e-6`` on the std), mean squared error over the reconstructed tokens.

Video inside the library is ``[B, C, T, H, W]``; tokens are ordered ``i_t*(h*w) + i_h*w + i_w``;
masks are bool ``[B, L]`` with True = masked and the same count in every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from videomask.constants import IMAGENET_MEAN, IMAGENET_STD
from videomask.errors import VideomaskError
from videomask.patches import Grid, Tubelet, grid_for, mask_to_ids, patchify

DECODER_MASK_TYPES = ("run_cell", "random")
# the objective heads (videomask.objectives): videomask weights keep them; a Hugging Face folder has no place for them
OBJECTIVE_HEADS = ("feature_head", "distill_head", "contrast_head")


@dataclass
class VideoMAEConfig:
    """Hyper-parameters of a :class:`VideoMAE` model.

    Sizes:
        img_size: default frame height and width (the model accepts any multiple of ``patch_size``).
        num_frames: default clip length (any multiple of ``tubelet_size`` works).
        tubelet_size: frames per tubelet ``t``.
        patch_size: tubelet side ``p`` in pixels.
        in_chans: input channels ``C``.
        pos_grid: the token grid ``(t', h, w)`` the weights learned their sine-cosine positions on, set when
            a checkpoint continues on clips of another grid (:func:`videomask.io.match_positions`): a clip
            whose grid differs gets that grid's table resampled trilinearly (:func:`resample_pos_table`).
            None: each clip's own grid's table (VideoMAE).
    Encoder:
        embed_dim, depth, num_heads, mlp_ratio: width, blocks, heads, MLP hidden = ``int(embed_dim*mlp_ratio)``.
        qkv_bias: learn q and v biases (VideoMAE; the k bias is always exactly zero).
        layer_norm_eps: epsilon of the block norms and the encoder's final norm.
        use_mean_pooling: Hugging Face semantics. False (VideoMAE pretraining): the encoder ends with a
            LayerNorm ``norm``. True: no final norm; :meth:`VideoMAE.features` applies ``fc_norm`` to the mean.
        drop_path: stochastic depth rate of the last encoder block (linear from 0).
        grad_checkpointing: recompute block activations in the backward pass (saves memory).
    Decoder:
        decoder_embed_dim, decoder_depth, decoder_num_heads, decoder_mlp_ratio: decoder size.
        decoder_norm_eps: epsilon of the decoder's final norm (Hugging Face: 1e-5, original VideoMAE: 1e-6).
        decoder_mask_ratio: VideoMAE V2 decoder masking; share of the masked tokens the decoder does NOT
            reconstruct (0 = reconstruct all masked tokens).
        decoder_mask_type: ``run_cell`` (a 2x2 running cell pattern shifted one step per time slot) or ``random``.
    Loss:
        norm_pix_loss: normalise each target token's pixels (per channel) before the MSE.
        mean, std: the input normalisation, undone to build the pixel target (only for 3 channels,
            as in Hugging Face; other channel counts use the input as is).
    Heads of the feature objectives (:mod:`videomask.objectives`; 0 = no head, the VideoMAE model):
        feature_dim: width of a teacher's per-token features. Adds ``feature_head`` (decoder -> teacher
            features of masked tokens) and ``distill_head`` (encoder token -> its teacher features).
        contrast_dim: adds ``contrast_head`` (decoder -> ``contrast_dim``, the encoder width the clean branch
            of the contrastive objective gives as targets).
    """

    img_size: int = 224
    num_frames: int = 16
    tubelet_size: int = 2
    patch_size: int = 16
    in_chans: int = 3
    pos_grid: tuple[int, int, int] | None = None
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    use_mean_pooling: bool = False
    drop_path: float = 0.0
    grad_checkpointing: bool = False
    decoder_embed_dim: int = 384
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    decoder_mlp_ratio: float = 4.0
    decoder_norm_eps: float = 1e-6
    decoder_mask_ratio: float = 0.0
    decoder_mask_type: str = "run_cell"
    norm_pix_loss: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    feature_dim: int = 0
    contrast_dim: int = 0

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if self.pos_grid is not None:
            self.pos_grid = tuple(int(v) for v in self.pos_grid)  # type: ignore[assignment]
            if len(self.pos_grid) != 3 or min(self.pos_grid) <= 0:
                raise VideomaskError(f"model config: pos_grid must be 3 positive ints (t', h, w), got {self.pos_grid}")
        for name in (
            "img_size",
            "num_frames",
            "tubelet_size",
            "patch_size",
            "in_chans",
            "embed_dim",
            "depth",
            "num_heads",
            "decoder_embed_dim",
            "decoder_num_heads",
        ):
            if int(getattr(self, name)) <= 0:
                raise VideomaskError(f"model config: {name} must be positive, got {getattr(self, name)!r}")
        if self.decoder_depth < 0:
            raise VideomaskError(f"model config: decoder_depth must be >= 0, got {self.decoder_depth}")
        if self.embed_dim % self.num_heads:
            raise VideomaskError(
                f"model config: embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}"
            )
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise VideomaskError(
                f"model config: decoder_embed_dim={self.decoder_embed_dim} is not divisible by "
                f"decoder_num_heads={self.decoder_num_heads}"
            )
        if not 0.0 <= self.decoder_mask_ratio < 1.0:
            raise VideomaskError(f"model config: decoder_mask_ratio must be in [0, 1), got {self.decoder_mask_ratio}")
        if self.decoder_mask_type not in DECODER_MASK_TYPES:
            raise VideomaskError(
                f"model config: decoder_mask_type must be one of {', '.join(DECODER_MASK_TYPES)}, "
                f"got {self.decoder_mask_type!r}"
            )
        if not 0.0 <= self.drop_path < 1.0:
            raise VideomaskError(f"model config: drop_path must be in [0, 1), got {self.drop_path}")
        if self.feature_dim < 0 or self.contrast_dim < 0:
            raise VideomaskError("model config: feature_dim and contrast_dim must be >= 0 (0 = no head)")
        if self.in_chans == 3 and (len(self.mean) != 3 or len(self.std) != 3):
            raise VideomaskError("model config: mean and std need 3 values for 3 input channels")

    @property
    def tubelet(self) -> Tubelet:
        """The tubelet ``(t, p, p)``."""
        return (self.tubelet_size, self.patch_size, self.patch_size)

    @property
    def patch_dim(self) -> int:
        """Pixels per token ``t*p*p*C`` (the decoder's output width)."""
        return self.tubelet_size * self.patch_size * self.patch_size * self.in_chans

    def grid(self, size: tuple[int, int, int] | None = None) -> Grid:
        """Token grid of a clip of ``size = (T, H, W)`` (default: the configured size)."""
        return grid_for(size or (self.num_frames, self.img_size, self.img_size), self.tubelet)


MODEL_SIZES: dict[str, VideoMAEConfig] = {
    # tests and the demo: 16x112x112 clips -> 8*7*7 = 392 tokens
    "tiny": VideoMAEConfig(
        img_size=112,
        num_frames=16,
        embed_dim=192,
        depth=4,
        num_heads=3,
        decoder_embed_dim=96,
        decoder_depth=2,
        decoder_num_heads=3,
    ),
    # ViT-S/16 (VideoMAE small: decoder 192 x 4)
    "small": VideoMAEConfig(
        img_size=224,
        num_frames=16,
        embed_dim=384,
        depth=12,
        num_heads=6,
        decoder_embed_dim=192,
        decoder_depth=4,
        decoder_num_heads=3,
    ),
    # VideoMAE ViT-B/16 at 16x224, decoder 384 x 4
    "base": VideoMAEConfig(
        img_size=224,
        num_frames=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=384,
        decoder_depth=4,
        decoder_num_heads=6,
    ),
}


def make_config(name: str, **overrides: Any) -> VideoMAEConfig:
    """The named size from :data:`MODEL_SIZES` with ``overrides`` applied (unknown name/field -> error)."""
    if name not in MODEL_SIZES:
        raise VideomaskError(f"unknown model size {name!r} (choose from {', '.join(MODEL_SIZES)})")
    known = {f.name for f in fields(VideoMAEConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise VideomaskError(f"unknown model config field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return replace(MODEL_SIZES[name], **overrides)


def build_model(name: str, **overrides: Any) -> "VideoMAE":
    """Build a freshly initialised :class:`VideoMAE` of a named size, e.g. ``build_model("tiny", depth=2)``."""
    return VideoMAE(make_config(name, **overrides))


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """The fixed 1-D sine-cosine table ``[num_positions, dim]`` of VideoMAE / Hugging Face (float32).

    ``angle[pos, j] = pos / 10000^(2*(j//2)/dim)``; even columns take the sine, odd columns the cosine.
    Computed in float64 and rounded once, like the reference NumPy code.
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]  # [N, 1]
    j = torch.arange(dim)
    inv = torch.pow(torch.tensor(10000.0, dtype=torch.float64), (2 * (j // 2)).to(torch.float64) / dim)  # [dim]
    angles = pos / inv  # [N, dim]
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.to(torch.float32)


def resample_pos_table(table: Tensor, src: Grid, dst: Grid) -> Tensor:
    """A position table ``[src.num_tokens, D]`` on grid ``src`` resampled to grid ``dst`` -> ``[dst.num_tokens, D]``.

    The table is reshaped to ``[t', h, w, D]`` (token order ``i_t*(h*w) + i_h*w + i_w``), interpolated
    trilinearly with ``align_corners=False`` (a token at relative position ``((i+0.5)/n, ...)`` gets the
    table's value at that relative position in ``src``) and flattened in the same order.
    """
    D = table.shape[1]
    grid = table.reshape(src.t, src.h, src.w, D).permute(3, 0, 1, 2)[None]  # [1, D, t', h, w]
    out = F.interpolate(grid.float(), size=(dst.t, dst.h, dst.w), mode="trilinear", align_corners=False)
    return out[0].permute(1, 2, 3, 0).reshape(dst.num_tokens, D).to(table.dtype)  # [L_dst, D]


class QVBiasAttention(Attention):
    """timm ``Attention`` (fused qkv, SDPA) with VideoMAE's biases: learned q and v biases, k bias = 0.

    The k bias is not a parameter: it is a zero block spliced between ``q_bias`` and ``v_bias``, so it is
    exactly zero whatever the optimiser does. State-dict keys match the original VideoMAE
    (``attn.qkv.weight``, ``attn.q_bias``, ``attn.v_bias``, ``attn.proj.*``).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, **kwargs: Any) -> None:
        super().__init__(dim, num_heads=num_heads, qkv_bias=False, **kwargs)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(self.attn_dim))
            self.v_bias = nn.Parameter(torch.zeros(self.attn_dim))
        else:
            self.q_bias = None
            self.v_bias = None

    def qkv_bias(self) -> Tensor | None:
        """The effective fused bias ``[3*attn_dim]`` = ``(q_bias, 0, v_bias)`` (None without biases)."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    # A marked copy of ``timm.layers.Attention.forward`` (timm 1.0.31): the one change is the qkv projection,
    # ``F.linear(x, qkv.weight, self.qkv_bias())`` in place of ``self.qkv(x)``. timm's forward calls
    # ``self.qkv`` directly, so the spliced bias cannot be added without copying it.
    # tests/test_model.py::test_qv_bias_attention_matches_timm compares the two on the fused and the
    # non-fused paths, with and without ``is_causal`` and an ``attn_mask``: rerun it when timm is upgraded.
    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None  # timm's gated option
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())  # [B, N, 3*A]
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [3, B, heads, N, hd]
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=self.attn_drop.p if self.training else 0.0,
                is_causal=is_causal,
            )  # [B, heads, N, hd]
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # [B, heads, N, N]
            bias = _attn_bias(N, attn, attn_mask, is_causal)
            if bias is not None:
                attn = attn + bias
            x = self.attn_drop(attn.softmax(dim=-1)) @ v  # [B, heads, N, hd]
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)  # [B, N, A]
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))  # [B, N, dim]


def _attn_bias(n: int, attn: Tensor, attn_mask: Tensor | None, is_causal: bool) -> Tensor | None:
    """The additive attention bias of the non-fused path, with SDPA's semantics (timm's ``resolve_self_attn_mask``).

    ``is_causal`` wins over ``attn_mask``; a bool mask is True where attention is allowed.
    """
    if is_causal:
        return attn.new_full((n, n), float("-inf")).triu_(1)  # [N, N]
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        return torch.zeros_like(attn_mask, dtype=attn.dtype).masked_fill_(~attn_mask, float("-inf"))
    return attn_mask


def _blocks(
    dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float, drop_path: float
) -> nn.ModuleList:
    norm = lambda d, **kw: nn.LayerNorm(d, eps=eps, **kw)  # noqa: E731
    rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList(
        Block(
            dim,
            num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_path=rate,
            norm_layer=norm,
            attn_layer=QVBiasAttention,
        )
        for rate in rates
    )


@dataclass
class VideoMAEOutput:
    """What :meth:`VideoMAE.forward` returns.

    ``pred``/``target``/``token_loss`` cover the reconstructed tokens (``decoder_mask``) in increasing
    token index. Without decoder masking ``decoder_mask`` equals the input mask, so
    ``anchors[mask].view(B, -1)`` lines up with ``token_loss``; with it use ``anchors[out.decoder_mask]``.
    """

    loss: Tensor  # [] mean of token_loss
    pred: Tensor  # [B, L_dec, t*p*p*C]
    target: Tensor  # [B, L_dec, t*p*p*C] (float32, no grad)
    token_loss: Tensor  # [B, L_dec] per-token MSE (float32)
    decoder_mask: Tensor = field(repr=False)  # [B, L] bool, the reconstructed tokens


class VideoMAE(nn.Module):
    """VideoMAE encoder-decoder; see the module docstring. Build with :func:`build_model` or ``VideoMAE(config)``."""

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.config = c = replace(config)  # a private copy: set_grad_checkpointing must not touch MODEL_SIZES
        # tubelet embedding: [B, C, T, H, W] -> [B, D, t', h, w]
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(c.in_chans, c.embed_dim, kernel_size=c.tubelet, stride=c.tubelet)
        self.blocks = _blocks(c.embed_dim, c.depth, c.num_heads, c.mlp_ratio, c.qkv_bias, c.layer_norm_eps, c.drop_path)
        self.norm = nn.Identity() if c.use_mean_pooling else nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps)
        self.fc_norm = nn.LayerNorm(c.embed_dim) if c.use_mean_pooling else None

        self.encoder_to_decoder = nn.Linear(c.embed_dim, c.decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.decoder_blocks = _blocks(
            c.decoder_embed_dim,
            c.decoder_depth,
            c.decoder_num_heads,
            c.decoder_mlp_ratio,
            c.qkv_bias,
            c.layer_norm_eps,
            0.0,
        )
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim, eps=c.decoder_norm_eps)
        self.decoder_head = nn.Linear(c.decoder_embed_dim, c.patch_dim)
        self.feature_head: nn.Linear | None = None
        self.distill_head: nn.Linear | None = None
        self.contrast_head: nn.Linear | None = None
        self._make_heads()

        self.register_buffer("pix_mean", torch.tensor(c.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pix_std", torch.tensor(c.std, dtype=torch.float32), persistent=False)
        self._pos_cache: dict[tuple[Any, ...], Tensor] = {}
        self.init_weights()

    # ------------------------------------------------------------------ setup
    def init_weights(self) -> None:
        """MAE/VideoMAE init: xavier-uniform linears (and the flattened tubelet conv), zero biases, unit norms."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def _make_heads(self) -> None:
        """Create the objective heads the config asks for and the model lacks (xavier init, zero bias)."""
        c = self.config
        made = []
        if c.feature_dim and self.feature_head is None:
            self.feature_head = nn.Linear(c.decoder_embed_dim, c.feature_dim)
            self.distill_head = nn.Linear(c.embed_dim, c.feature_dim)
            made += [self.feature_head, self.distill_head]
        if c.contrast_dim and self.contrast_head is None:
            self.contrast_head = nn.Linear(c.decoder_embed_dim, c.contrast_dim)
            made.append(self.contrast_head)
        for m in made:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def add_heads(self, *, feature_dim: int = 0, contrast_dim: int = 0) -> list[str]:
        """Give the model the objective heads it lacks (e.g. a pixel checkpoint continued with the teacher
        objective); returns the names of the new heads. A head of another width than asked is an error."""
        c = self.config
        for name, want in (("feature_dim", feature_dim), ("contrast_dim", contrast_dim)):
            have = getattr(c, name)
            if want and have and have != want:
                raise VideomaskError(f"the model's {name} is {have}, the objective needs {want}")
        before = {n for n, _ in self.named_children()}
        c.feature_dim = feature_dim or c.feature_dim
        c.contrast_dim = contrast_dim or c.contrast_dim
        device = self.decoder_head.weight.device
        self._make_heads()
        self.to(device)
        return sorted({n for n, _ in self.named_children()} - before)

    def no_weight_decay(self) -> set[str]:
        """Parameter names to keep out of weight decay (with every 1-D parameter, see :meth:`param_groups`)."""
        return {"mask_token"}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: weight decay on matrices, none on biases, norms and the mask token."""
        decay, no_decay = [], []
        skip = self.no_weight_decay()
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn gradient checkpointing over the encoder and decoder blocks on or off."""
        self.config.grad_checkpointing = bool(enable)

    @property
    def tubelet(self) -> Tubelet:
        return self.config.tubelet

    # ------------------------------------------------------------------ helpers
    def grid_of(self, video: Tensor) -> Grid:
        """The token grid of ``video [B, C, T, H, W]`` (clear error on a bad shape)."""
        if video.dim() != 5:
            raise VideomaskError(f"the model expects video [B, C, T, H, W], got shape {tuple(video.shape)}")
        if video.shape[1] != self.config.in_chans:
            raise VideomaskError(
                f"the model expects {self.config.in_chans} channels in video [B, C, T, H, W], got shape "
                f"{tuple(video.shape)} (Hugging Face [B, T, C, H, W] must be permuted)"
            )
        return grid_for(video.shape[2:], self.tubelet)

    def pos_table(self, num_tokens: int, dim: int, device: torch.device, grid: Grid | None = None) -> Tensor:
        """The cached sine-cosine table ``[num_tokens, dim]`` on ``device`` (float32).

        With ``config.pos_grid`` set and a clip ``grid`` that differs from it, the ``pos_grid`` table
        resampled to ``grid`` (:func:`resample_pos_table`).
        """
        learned = None if self.config.pos_grid is None else Grid(*self.config.pos_grid)
        resample = grid is not None and learned is not None and learned != grid
        key = (num_tokens, dim, str(device), learned, grid) if resample else (num_tokens, dim, str(device))
        table = self._pos_cache.get(key)
        if table is None:
            if resample:
                assert learned is not None and grid is not None and grid.num_tokens == num_tokens
                table = resample_pos_table(sinusoid_table(learned.num_tokens, dim), learned, grid).to(device)
            else:
                table = sinusoid_table(num_tokens, dim).to(device)
            self._pos_cache[key] = table
        return table

    def _check_mask(self, mask: Tensor, batch: int, num_tokens: int) -> int:
        """Validate ``mask [B, L]`` and return the masked count per row."""
        if mask.dtype != torch.bool:
            raise VideomaskError(f"mask must be a bool tensor (True = masked), got {mask.dtype}")
        if tuple(mask.shape) != (batch, num_tokens):
            raise VideomaskError(
                f"mask shape {tuple(mask.shape)} does not match the video's [B, L] = [{batch}, {num_tokens}]"
            )
        lo, hi = torch.aminmax(mask.sum(dim=1))
        lo, hi = int(lo), int(hi)  # one host sync per step
        if lo != hi:
            raise VideomaskError(f"every mask row must mask the same number of tokens, got between {lo} and {hi}")
        if lo == num_tokens:
            raise VideomaskError("the mask hides every token; at least one must stay visible")
        return lo

    @staticmethod
    def _gather(x: Tensor, ids: Tensor) -> Tensor:
        """Rows of ``x [B, L, D]`` at ``ids [B, N]`` -> ``[B, N, D]``."""
        return torch.gather(x, 1, ids[:, :, None].expand(-1, -1, x.shape[-1]))

    def _run(self, blocks: nn.ModuleList, x: Tensor) -> Tensor:
        use_ckpt = self.config.grad_checkpointing and self.training and torch.is_grad_enabled()
        for blk in blocks:
            x = checkpoint(blk, x, use_reentrant=False) if use_ckpt else blk(x)
        return x

    # ------------------------------------------------------------------ patchify / embedding
    def _embed_tokens(self, video: Tensor, ids: Tensor | None) -> Tensor:
        """Tubelet embedding of the tokens ``ids [B, N]`` (all when None) -> ``[B, N, D]``.

        Equal to the ``Conv3d`` (stride = kernel) followed by flattening, computed as one linear map on
        the gathered tubelets so hidden tokens cost nothing.
        """
        t, p, _ = self.tubelet
        w = self.patch_embed.proj.weight  # [D, C, t, p, p]
        # [B, L, C*t*p*p]
        tubes = rearrange(video, "b c (gt t) (gh ph) (gw pw) -> b (gt gh gw) (c t ph pw)", t=t, ph=p, pw=p)
        if ids is not None:
            tubes = self._gather(tubes, ids)  # [B, N, C*t*p*p]
        return F.linear(tubes, w.reshape(w.shape[0], -1), self.patch_embed.proj.bias)  # [B, N, D]

    def embed_patches(self, video: Tensor) -> Tensor:
        """Tubelet embedding of every token, without position: ``[B, C, T, H, W]`` -> ``[B, L, D]``."""
        self.grid_of(video)
        return self._embed_tokens(video, None)

    def patchify_target(self, video: Tensor, ids: Tensor | None = None) -> Tensor:
        """The pixel target of tokens ``ids [B, N]`` (all when None) -> float32 ``[B, N, t*p*p*C]``.

        Unnormalises with ``mean``/``std`` (3 channels), then with ``norm_pix_loss`` normalises each token's
        ``t*p*p`` pixels per channel (unbiased variance, ``std + 1e-6``), as Hugging Face / VideoMAE do.
        """
        c = self.config
        with torch.no_grad():
            tokens = patchify(video.float(), self.tubelet)  # [B, L, t*p*p*C]
            if ids is not None:
                tokens = self._gather(tokens, ids)  # [B, N, t*p*p*C]
            px = tokens.unflatten(-1, (-1, c.in_chans))  # [B, N, t*p*p, C]
            if c.in_chans == 3:
                px = px * self.pix_std + self.pix_mean  # in [0, 1]; only the tokens kept
            if c.norm_pix_loss:
                # two-pass variance (as exact as torch.var, several times faster on the CPU for this layout)
                centred = px - px.mean(dim=-2, keepdim=True)  # [B, N, t*p*p, C]
                var = centred.square().sum(dim=-2, keepdim=True) / (px.shape[-2] - 1)  # unbiased
                px = centred / (var.sqrt() + 1e-6)
            tokens = px.flatten(-2)  # [B, N, t*p*p*C]
        return tokens

    # ------------------------------------------------------------------ encoder
    def forward_encoder(self, video: Tensor, ids_keep: Tensor | None) -> Tensor:
        """Embed the visible tokens ``ids_keep [B, L_vis]`` (all when None), add position, run the encoder.

        ``[B, C, T, H, W]`` -> ``[B, L_vis, D]`` (after the final norm, or none with ``use_mean_pooling``).
        """
        grid = self.grid_of(video)
        x = self._embed_tokens(video, ids_keep)  # [B, L_vis, D]
        pos = self.pos_table(grid.num_tokens, self.config.embed_dim, video.device, grid)  # [L, D]
        pos = pos[None].expand(video.shape[0], -1, -1) if ids_keep is None else pos[ids_keep]  # [B, L_vis, D]
        x = x + pos.to(x.dtype)
        x = self._run(self.blocks, x)  # [B, L_vis, D]
        return self.norm(x)

    def encode(self, video: Tensor, mask: Tensor | None = None) -> Tensor:
        """Encoder output of the visible tokens: ``[B, C, T, H, W]``, mask ``[B, L]`` -> ``[B, L_vis, D]``."""
        grid = self.grid_of(video)
        if mask is None:
            return self.forward_encoder(video, None)
        mask = mask.to(video.device)
        num_masked = self._check_mask(mask, video.shape[0], grid.num_tokens)
        ids_keep, _, _ = mask_to_ids(mask, num_masked)
        return self.forward_encoder(video, ids_keep)

    def features(self, video: Tensor) -> Tensor:
        """Pooled clip features ``[B, D]``: mean over all tokens (then ``fc_norm`` with ``use_mean_pooling``)."""
        x = self.encode(video).mean(dim=1)  # [B, D]
        return self.fc_norm(x) if self.fc_norm is not None else x

    # ------------------------------------------------------------------ decoder
    def decoder_count(self, num_masked: int, ratio: float | None = None) -> int:
        """Tokens per row the decoder reconstructs out of ``num_masked``.

        ``max(1, round(num_masked * (1 - ratio)))``.
        """
        ratio = self.config.decoder_mask_ratio if ratio is None else ratio
        return max(1, int(round(num_masked * (1.0 - ratio))))

    def make_decoder_mask(
        self,
        mask: Tensor,
        grid: Grid,
        ratio: float | None = None,
        kind: str | None = None,
        generator: torch.Generator | None = None,
        num_masked: int | None = None,
    ) -> Tensor:
        """VideoMAE V2 decoder masking: choose the masked tokens the decoder reconstructs.

        Keeps ``round(L_mask * (1 - ratio))`` of the ``L_mask`` masked tokens of every row (``[B, L]`` bool,
        a subset of ``mask``). ``run_cell`` prefers a 2x2 running cell (cell position ``(i_h%2)*2 + i_w%2``,
        shifted by one per time slot; ties broken at random), ``random`` picks uniformly. Random numbers are
        drawn on the generator's device and moved (a CPU generator seeds a CUDA mask, as in the maskers).
        ``num_masked`` (``L_mask``, when the caller knows it) saves reading it from the mask (a host sync).
        """
        kind = kind or self.config.decoder_mask_type
        if kind not in DECODER_MASK_TYPES:
            raise VideomaskError(f"decoder mask type must be one of {', '.join(DECODER_MASK_TYPES)}, got {kind!r}")
        B, L = mask.shape
        if num_masked is None:
            num_masked = int(mask[0].sum())
        keep = self.decoder_count(num_masked, ratio)
        if generator is None:
            score = torch.rand(B, L, device=mask.device)  # [B, L] random tie-break in [0, 1)
        else:
            score = torch.rand(B, L, device=generator.device, generator=generator).to(mask.device, non_blocking=True)
        if kind == "run_cell":
            it = torch.arange(grid.t, device=mask.device).view(-1, 1, 1)
            ih = torch.arange(grid.h, device=mask.device).view(1, -1, 1)
            iw = torch.arange(grid.w, device=mask.device).view(1, 1, -1)
            rank = ((ih % 2) * 2 + (iw % 2) + it) % 4  # [t', h, w] running cell order
            score = score + rank.reshape(1, L).to(score.dtype)  # [B, L]
        score = score.masked_fill(~mask, float("inf"))
        chosen = score.topk(keep, dim=1, largest=False).indices  # [B, keep]
        return torch.zeros_like(mask).scatter_(1, chosen, True)  # [B, L]

    def forward_decoder(
        self, latent: Tensor, ids_keep: Tensor, ids_dec: Tensor, num_tokens: int, grid: Grid | None = None
    ) -> Tensor:
        """Decode visible latents ``[B, L_vis, D]`` + mask tokens at ``ids_dec [B, L_dec]``.

        Returns ``[B, L_dec, t*p*p*C]``. ``grid``: the clip's token grid (for ``config.pos_grid``).
        """
        return self.decoder_head(self.decode(latent, ids_keep, ids_dec, num_tokens, grid))  # [B, L_dec, t*p*p*C]

    def decode(
        self, latent: Tensor, ids_keep: Tensor, ids_dec: Tensor, num_tokens: int, grid: Grid | None = None
    ) -> Tensor:
        """The decoder's normed output at the tokens ``ids_dec`` before any head: ``[B, L_dec, Dd]``."""
        x_vis = self.encoder_to_decoder(latent)  # [B, L_vis, Dd]
        B, _, Dd = x_vis.shape
        pos = self.pos_table(num_tokens, Dd, latent.device, grid).to(x_vis.dtype)  # [L, Dd]
        # [B, L_vis+L_dec, Dd]
        x = torch.cat([x_vis + pos[ids_keep], self.mask_token.to(x_vis.dtype) + pos[ids_dec]], dim=1)
        x = self._run(self.decoder_blocks, x)  # [B, L_vis+L_dec, Dd]
        return self.decoder_norm(x[:, -ids_dec.shape[1] :])  # [B, L_dec, Dd]

    @staticmethod
    def forward_loss(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token MSE ``[B, L_dec]`` (float32) and its mean (the MSE over every reconstructed value)."""
        token_loss = (pred.float() - target).pow(2).mean(dim=-1)  # [B, L_dec]
        return token_loss.mean(), token_loss

    def prepare_masks(
        self,
        video: Tensor,
        mask: Tensor,
        decoder_mask: Tensor | None = None,
        *,
        num_masked: int | None = None,
        num_decoded: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Grid, Tensor, Tensor, Tensor]:
        """Check the masks of :meth:`forward` and index them -> ``(grid, ids_keep, ids_dec, decoder_mask)``.

        ``ids_keep [B, L_vis]``: the visible tokens; ``ids_dec [B, L_dec]``: the tokens the decoder
        reconstructs (``decoder_mask [B, L]``; the masked tokens without decoder masking). The one place
        the decoder mask is drawn when the caller gives none (``config.decoder_mask_ratio > 0``).
        Trusted counts (``num_masked`` / ``num_decoded``) skip the checks that read the masks back to the host.
        """
        grid = self.grid_of(video)
        B, L = video.shape[0], grid.num_tokens
        if mask is None:
            raise VideomaskError("VideoMAE.forward needs a mask [B, L] (True = masked)")
        mask = mask.to(video.device)
        if num_masked is None:
            num_masked = self._check_mask(mask, B, L)
        elif mask.dtype != torch.bool or tuple(mask.shape) != (B, L):
            self._check_mask(mask, B, L)  # raises the shape / dtype error
        if num_masked == 0:
            raise VideomaskError("the mask hides no token; there is nothing to reconstruct")
        ids_keep, ids_masked, _ = mask_to_ids(mask, num_masked)  # [B, L_vis], [B, L_mask]
        if decoder_mask is None and self.config.decoder_mask_ratio > 0:
            decoder_mask = self.make_decoder_mask(mask, grid, generator=generator, num_masked=num_masked)
            num_decoded = self.decoder_count(num_masked)
        if decoder_mask is None:
            return grid, ids_keep, ids_masked, mask
        decoder_mask = decoder_mask.to(video.device)
        if num_decoded is None:
            num_decoded = self._check_mask(decoder_mask, B, L)
            if num_decoded == 0 or bool((decoder_mask & ~mask).any()):
                raise VideomaskError("decoder_mask must select at least one token, and only masked tokens")
        _, ids_dec, _ = mask_to_ids(decoder_mask, num_decoded)  # [B, L_dec]
        return grid, ids_keep, ids_dec, decoder_mask

    def forward(
        self,
        video: Tensor,
        mask: Tensor,
        decoder_mask: Tensor | None = None,
        *,
        num_masked: int | None = None,
        num_decoded: int | None = None,
        generator: torch.Generator | None = None,
    ) -> VideoMAEOutput:
        """Reconstruct the masked tubelets of ``video [B, C, T, H, W]`` hidden by ``mask [B, L]`` (True = masked).

        ``decoder_mask [B, L]`` (a subset of ``mask``, same count per row) restricts the reconstruction and
        the loss; when None and ``config.decoder_mask_ratio > 0`` one is drawn with :meth:`make_decoder_mask`
        from ``generator``. ``num_masked`` / ``num_decoded``: the per-row counts of ``mask`` / ``decoder_mask``
        when the caller knows them (the training loop takes them from the masker); the mask checks, which
        read the counts back to the host (a GPU sync), are then skipped, so they must be right.
        """
        grid, ids_keep, ids_dec, decoder_mask = self.prepare_masks(
            video, mask, decoder_mask, num_masked=num_masked, num_decoded=num_decoded, generator=generator
        )
        latent = self.forward_encoder(video, ids_keep)  # [B, L_vis, D]
        pred = self.forward_decoder(latent, ids_keep, ids_dec, grid.num_tokens, grid)  # [B, L_dec, t*p*p*C]
        target = self.patchify_target(video, ids_dec)  # [B, L_dec, t*p*p*C]
        loss, token_loss = self.forward_loss(pred, target)
        return VideoMAEOutput(loss=loss, pred=pred, target=target, token_loss=token_loss, decoder_mask=decoder_mask)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_SIZES",
    "QVBiasAttention",
    "VideoMAE",
    "VideoMAEConfig",
    "VideoMAEOutput",
    "build_model",
    "make_config",
    "resample_pos_table",
    "sinusoid_table",
]
