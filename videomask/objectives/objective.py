"""Objectives: what the model learns from one masked batch. All share the masks and the loop.

* ``pixels``: VideoMAE's normalised-pixel reconstruction of the masked tubelets (the model's own loss).
* ``teacher``: the decoder predicts a frozen teacher's features at the masked tubelets (MaskFeat / MVD
  style, ``feature_head``); with ``distill_weight > 0`` the encoder's visible tokens also regress their
  own teacher features through ``distill_head``, so continued pretraining keeps what a distilled source
  model knows.
* ``contrastive``: the paper's mechanism carried to VideoMAE. A clean branch encodes *every* token of the
  clip (so a masked anchor is still seen by the encoder); the masked branch's decoder predicts the clean
  features at the masked tokens (``contrast_head``), scored with InfoNCE against every other masked token
  of the batch (in-batch negatives). The clean branch is a stop-gradient pass of the same encoder
  (``clean: stopgrad``) or an EMA copy (``clean: ema``). ``teacher_weight`` / ``distill_weight`` add the
  teacher terms when a teacher is configured.
* ``distill``: feature distillation, the source-model mode: every token (no mask) regressed on its
  teacher features through ``distill_head``.

:class:`Objective` is an ``nn.Module`` holding the model, so DDP wraps it and every term's gradient is
reduced; ``forward`` returns an :class:`ObjectiveOutput` the training step reads like the model's output.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videomask.errors import VideomaskError
from videomask.model import VideoMAE

OBJECTIVES = ("pixels", "teacher", "contrastive", "distill")
CLEAN_BRANCHES = ("stopgrad", "ema")

__all__ = ["CLEAN_BRANCHES", "OBJECTIVES", "Objective", "ObjectiveOutput", "info_nce"]


@dataclass
class ObjectiveOutput:
    """One batch's loss. ``token_loss [B, L_dec]`` is the main term per reconstructed token (the tokens of
    ``decoder_mask`` in increasing index), so the step splits it into anchor and other tokens."""

    loss: Tensor  # [] the total
    token_loss: Tensor  # [B, L_dec] float32
    decoder_mask: Tensor = field(repr=False)  # [B, L] bool
    terms: dict[str, Tensor] = field(default_factory=dict)  # named parts of the loss (detached)


def info_nce(pred: Tensor, target: Tensor, temperature: float, group: int = 4096) -> Tensor:
    """InfoNCE of ``pred [N, D]`` against ``target [N, D]``: row ``i``'s positive is ``target[i]``, its
    negatives the other rows of its group (consecutive runs of ``group`` rows: the batch's other masked
    tokens, capped so memory stays ``N * group``). -> per-row loss ``[N]`` (float32)."""
    p = F.normalize(pred.float(), dim=-1)
    q = F.normalize(target.float(), dim=-1)
    out = []
    for lo in range(0, p.shape[0], group):
        logits = p[lo : lo + group] @ q[lo : lo + group].t() / temperature  # [g, g]
        labels = torch.arange(logits.shape[0], device=p.device)
        out.append(F.cross_entropy(logits, labels, reduction="none"))  # [g]
    return torch.cat(out)  # [N]


class Objective(nn.Module):
    """The model plus what its objective needs (a teacher, an EMA copy); see the module docstring.

    ``teacher``: a callable ``video -> [B, L, D]`` (targets computed in the step when the batch brings
    none). Heads the objective does not use are frozen (no gradient, no weight decay, nothing for DDP to
    wait for); heads it needs and the model lacks are added.
    """

    def __init__(
        self,
        model: VideoMAE,
        name: str = "pixels",
        *,
        teacher=None,
        teacher_dim: int = 0,
        distill_weight: float = 1.0,
        teacher_weight: float = 1.0,
        temperature: float = 0.1,
        clean: str = "stopgrad",
        ema_decay: float = 0.996,
    ) -> None:
        super().__init__()
        if name not in OBJECTIVES:
            raise VideomaskError(f"objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
        if clean not in CLEAN_BRANCHES:
            raise VideomaskError(f"objective.clean must be one of {', '.join(CLEAN_BRANCHES)}, got {clean!r}")
        if name in ("teacher", "distill") and teacher is None:
            raise VideomaskError(f"the {name} objective needs a teacher (objective.teacher)")
        if temperature <= 0 or not 0 <= ema_decay < 1:
            raise VideomaskError("objective.temperature must be > 0 and objective.ema_decay in [0, 1)")
        self.model = model
        self.name = name
        self.teacher = teacher
        self.distill_weight = float(distill_weight) if teacher is not None else 0.0
        self.teacher_weight = float(teacher_weight) if teacher is not None else 0.0
        self.temperature = float(temperature)
        self.clean = clean
        self.ema_decay = float(ema_decay)
        self.added = model.add_heads(
            feature_dim=teacher_dim if teacher is not None else 0,
            contrast_dim=model.config.embed_dim if name == "contrastive" else 0,
        )
        self._freeze_unused()
        self.ema: VideoMAE | None = None
        if name == "contrastive" and clean == "ema":
            self.ema = copy.deepcopy(model).requires_grad_(False).eval()

    def _freeze_unused(self) -> None:
        m = self.model
        use = {
            "decoder_head": self.name == "pixels",
            "feature_head": self.name == "teacher" or (self.name == "contrastive" and self.teacher_weight > 0),
            "distill_head": self.name == "distill" or (self.name != "pixels" and self.distill_weight > 0),
            "contrast_head": self.name == "contrastive",
        }
        if self.name == "distill":  # no decoder at all: only the encoder and the distillation head learn
            for part in (m.encoder_to_decoder, m.decoder_blocks, m.decoder_norm):
                part.requires_grad_(False)
            m.mask_token.requires_grad_(False)
        for head, used in use.items():
            module = getattr(m, head)
            if module is not None:
                module.requires_grad_(used)

    @property
    def needs_targets(self) -> bool:
        """Whether a batch needs teacher targets."""
        return self.teacher is not None and (
            self.name in ("teacher", "distill") or self.teacher_weight > 0 or self.distill_weight > 0
        )

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the EMA copy toward the model (after each optimizer step)."""
        if self.ema is None:
            return
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p.detach(), 1.0 - self.ema_decay)

    def forward(
        self,
        video: Tensor,
        mask: Tensor,
        decoder_mask: Tensor | None = None,
        *,
        targets: Tensor | None = None,
        num_masked: int | None = None,
        num_decoded: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ObjectiveOutput:
        """One batch: ``video [B, C, T, H, W]``, ``mask [B, L]`` (True = masked), ``targets [B, L, D]`` the
        teacher's features (computed here from ``video`` when None and the objective needs them)."""
        m = self.model
        if self.name == "pixels":
            out = m(video, mask, decoder_mask, num_masked=num_masked, num_decoded=num_decoded, generator=generator)
            return ObjectiveOutput(out.loss, out.token_loss, out.decoder_mask, {"pixels": out.loss.detach()})
        if self.needs_targets and targets is None:
            targets = self.teacher(video)  # [B, L, D]
        if targets is not None:
            targets = targets.to(video.device, torch.float32)
        if self.name == "distill":
            tokens = m.encode(video)  # [B, L, D_enc]
            loss, token_loss = m.forward_loss(m.distill_head(tokens), targets)  # [], [B, L]
            full = torch.ones(token_loss.shape, dtype=torch.bool, device=video.device)
            return ObjectiveOutput(loss, token_loss, full, {"distill": loss.detach()})

        grid, ids_keep, ids_dec, dec_mask = m.prepare_masks(
            video, mask, decoder_mask, num_masked=num_masked, num_decoded=num_decoded, generator=generator
        )
        latent = m.forward_encoder(video, ids_keep)  # [B, L_vis, D_enc]
        hidden = m.decode(latent, ids_keep, ids_dec, grid.num_tokens, grid)  # [B, L_dec, Dd]
        terms: dict[str, Tensor] = {}
        loss = latent.new_zeros((), dtype=torch.float32)
        token_loss = None
        if self.name == "contrastive":
            with torch.no_grad():  # the EMA copy, or the same encoder without gradient
                clean = (self.ema if self.ema is not None else m).encode(video)  # [B, L, D_enc]
            pred = m.contrast_head(hidden)  # [B, L_dec, D_enc]
            positives = m._gather(clean, ids_dec)  # [B, L_dec, D_enc]
            B, n_dec, D = pred.shape
            nce = info_nce(pred.reshape(B * n_dec, D), positives.reshape(B * n_dec, D), self.temperature)
            token_loss = nce.view(B, n_dec)  # [B, L_dec]
            loss = loss + token_loss.mean()
            terms["contrastive"] = token_loss.mean().detach()
        use_feature = self.name == "teacher" or self.teacher_weight > 0
        if targets is not None and use_feature:
            feat_mean, feat_loss = m.forward_loss(m.feature_head(hidden), m._gather(targets, ids_dec))  # [B, L_dec]
            weight = 1.0 if self.name == "teacher" else self.teacher_weight
            loss = loss + weight * feat_mean
            terms["teacher"] = feat_mean.detach()
            if token_loss is None:
                token_loss = feat_loss
        if targets is not None and self.distill_weight > 0:
            dist, _ = m.forward_loss(m.distill_head(latent), m._gather(targets, ids_keep))  # visible tokens
            loss = loss + self.distill_weight * dist
            terms["distill"] = dist.detach()
        if token_loss is None:
            raise VideomaskError(f"the {self.name} objective has nothing to learn from (no teacher targets)")
        return ObjectiveOutput(loss, token_loss, dec_mask, terms)
