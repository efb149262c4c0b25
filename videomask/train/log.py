"""What a run reports: ``metrics.jsonl`` and TensorBoard (rank 0), per-interval sums, the start banner."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from videomask.config import RunConfig, config_to_dict
from videomask.errors import VideomaskError
from videomask.io import write_bytes_atomic
from videomask.train.distributed import DistInfo
from videomask.train.parts import Parts
from videomask.train.schedule import effective_batch
from videomask.train.step import StepStats


class MetricsLog:
    """Rank 0: ``metrics.jsonl`` (appended; lines past the resume step dropped), TensorBoard events, and the
    same numbers in a Weights & Biases run when given one (:func:`wandb_run`)."""

    def __init__(self, out_dir: Path, start_step: int, tensorboard: bool, wandb: Any = None) -> None:
        self.wandb = wandb
        self.path = out_dir / "metrics.jsonl"
        if self.path.exists():  # after a crash, lines beyond the checkpoint we resume from are replayed
            kept = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= start_step
            ]
            write_bytes_atomic(self.path, "".join(ln + "\n" for ln in kept).encode())
        self.fh = open(self.path, "a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow to import; only with train.tensorboard

            self.writer = SummaryWriter(log_dir=str(out_dir / "tb"), purge_step=start_step + 1 if start_step else None)

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self.writer.add_scalar(f"train/{key}", value, record["step"])
        if self.wandb is not None:
            numbers = {f"train/{k}": v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
            self.wandb.log(numbers, step=record["step"])

    def close(self) -> None:
        self.fh.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def wandb_run(cfg: RunConfig, start_step: int) -> Any:
    """Rank 0: the Weights & Biases run of ``train.wandb`` (None when it is empty), resumed with the run folder.

    Its id is kept in ``run.out_dir/wandb_id.txt``, so a resumed run continues the same W&B run; its files go to
    ``train.wandb.dir`` (default: the run folder). Records are logged under ``train/<key>`` at their step.
    """
    options = dict(cfg.train.wandb)
    if not options:
        return None
    try:
        import wandb  # optional dependency (videomask[wandb]), and slow to import
    except ImportError:
        raise VideomaskError("train.wandb needs the wandb package: pip install 'videomask[wandb]'") from None
    out_dir = Path(cfg.run.out_dir)
    id_file = out_dir / "wandb_id.txt"
    run_id = id_file.read_text().strip() if start_step and id_file.is_file() else secrets.token_hex(4)
    write_bytes_atomic(id_file, run_id.encode())
    return wandb.init(
        project=options["project"],
        name=options.get("name") or cfg.run.name,
        entity=options.get("entity"),
        group=options.get("group"),
        tags=options.get("tags"),
        mode=options.get("mode", "online"),
        dir=str(options.get("dir") or out_dir),
        config=config_to_dict(cfg),
        id=run_id,
        resume="allow",
    )


@dataclass
class LogWindow:
    """Sums over one logging interval, on the training device; read back (and summed over ranks) per record."""

    loss: torch.Tensor  # float64 scalars: summed step losses of the good steps ...
    good_steps: torch.Tensor  # ... and their number
    split: torch.Tensor  # [4] float64: summed StepStats.split of the good steps
    clips: torch.Tensor  # float64 scalar: clips seen (skipped steps included)
    anchor_steps: torch.Tensor  # float64 scalar: good steps whose masker reported anchors
    started: float = field(default_factory=time.perf_counter)
    grad_norm: Any = None  # the last step's gradient norm (a float or a device tensor)

    @classmethod
    def empty(cls, device: torch.device) -> LogWindow:
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(), z(), torch.zeros(4, dtype=torch.float64, device=device), z(), z())

    def add(self, stats: StepStats) -> None:
        self.grad_norm = stats.grad_norm
        if not stats.skipped:
            self.loss += stats.loss
            self.good_steps += 1
            self.split += stats.split
            self.anchor_steps += float(stats.has_anchors)
        self.clips += stats.clips

    def record(self, info: DistInfo, **fields: Any) -> dict[str, Any]:
        """The ``metrics.jsonl`` record of this window (``fields``: step, epoch, lr, skipped_steps)."""
        sums = torch.cat([self.loss.view(1), self.good_steps.view(1), self.split, self.clips.view(1)])
        sums = torch.cat([sums, self.anchor_steps.view(1)])
        if info.enabled:
            dist.all_reduce(sums)  # one collective for the whole window
        loss, good, a_sum, a_n, o_sum, o_n, clips, anchor_steps = sums.tolist()
        elapsed = time.perf_counter() - self.started
        return {
            "step": fields["step"],
            "epoch": fields["epoch"],
            "loss": loss / good if good else None,  # mean over ranks and finite steps of the interval
            "loss_anchor": a_sum / a_n if a_n else None,
            "loss_other": o_sum / o_n if o_n else None,
            # share of the reconstructed (masked) tokens that are anchor patches
            "anchor_share": a_n / (a_n + o_n) if anchor_steps and a_n + o_n else None,
            "lr": fields["lr"],
            "grad_norm": None if self.grad_norm is None else float(self.grad_norm),
            "clips_per_s": clips / elapsed if elapsed > 0 else None,
            "skipped_steps": fields["skipped_steps"],
        }


def run_banner(parts: Parts, cfg: RunConfig, info: DistInfo, device: torch.device) -> str:
    """The one line a run prints when it starts."""
    n_params = sum(p.numel() for p in parts.model.parameters())
    ranks = f" x {info.world_size} ranks" if info.enabled else ""
    precision = "fp32" if parts.amp_dtype is None else str(parts.amp_dtype).split(".")[-1]
    return (
        f"videomask pretrain: {n_params / 1e6:.2f}M params ({parts.source}), device {device}{ranks}, precision "
        f"{precision}, masker {parts.masker!r}, {len(parts.dataset)} videos, {parts.total_steps} steps of "
        f"{effective_batch(cfg, info.world_size)} clips, peak lr {parts.lr_peak:.3g}, run folder {parts.out_dir}"
    )
