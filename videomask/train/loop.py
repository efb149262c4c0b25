"""The continued-pretraining loop: ``train(cfg) -> RunResult``, single process or under ``torchrun``.

    from videomask.config import load_config
    result = train(load_config("configs/pretrain_base.yaml", ["data.path=videos/my_domain"]))

How the loop stays deterministic across resumes, ranks and devices is described in docs/training.md.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from videomask.config import RunConfig, save_config
from videomask.data.skiplog import remove_skip_log
from videomask.errors import VideomaskError
from videomask.io import MODEL_FILE, model_meta, save_hf_checkpoint, save_model_weights
from videomask.train.checkpoint import (
    capture_rng_state,
    checkpoint_dir,
    find_latest_checkpoint,
    is_sharded,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from videomask.train.distributed import DistInfo, barrier, is_timeout, say, setup_distributed, timeout_error, wrap_ddp
from videomask.train.fsdp import full_model, is_fsdp, load_shards, save_shards
from videomask.train.log import LogWindow, MetricsLog, run_banner, wandb_run
from videomask.train.parts import SKIP_LOG, Parts, build_parts, check_mask_section
from videomask.train.schedule import lr_at
from videomask.train.step import train_step
from videomask.viz import ReconLogger


@dataclass
class RunResult:
    """What :func:`train` returns (on every rank; metrics are global means)."""

    out_dir: Path
    steps: int  # optimizer steps done (including skipped ones)
    total_steps: int
    skipped_steps: int  # steps skipped for a non-finite loss or gradient
    stopped: str | None = None  # None when the run finished; else why it stopped early
    last_checkpoint: Path | None = None
    final_dir: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # logged records of this process's session

    @property
    def ok(self) -> bool:
        return self.stopped is None


def train(cfg: RunConfig) -> RunResult:
    """Run (or resume) continued pretraining as configured (see docs/training.md)."""
    info, device = setup_distributed(cfg.run.device, cfg.run.dist_timeout_s)
    out_dir = Path(cfg.run.out_dir)
    had_config = (out_dir / "config.yaml").exists()  # a file this run did not write is never removed
    try:
        return _train(cfg, info, device)
    except BaseException as err:
        if info.is_main and not had_config:
            forget_failed_start(out_dir)
        if info.enabled and is_timeout(err):  # a collective gave up on a rank: one line, not a traceback
            raise timeout_error(err, info, "a collective") from None
        raise
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: RunConfig, info: DistInfo, device: torch.device) -> RunResult:
    """The loop: prepare the run folder, build the parts, restore, then :func:`train_step` until done."""
    check_mask_section(cfg)  # a masker mistake stops the run before it writes anything
    latest = prepare_run_folder(cfg, info)
    parts = build_parts(cfg, info, device)
    start_step, skipped = restore_checkpoint(parts, latest, cfg, info)
    # what the step calls: the sharded objective (FSDP), or the objective in DDP; parts.model is the VideoMAE
    model = parts.objective if is_fsdp(parts.objective) else wrap_ddp(parts.objective, info, device)
    say(info, run_banner(parts, cfg, info, device))

    log = (
        MetricsLog(parts.out_dir, start_step, cfg.train.tensorboard, wandb_run(cfg, start_step))
        if info.is_main
        else None
    )

    recon = None
    if log is not None and is_fsdp(parts.objective) and cfg.train.tensorboard and cfg.train.recon_every:
        say(info, "note: no reconstruction pictures under train.parallel=fsdp (rank 0 alone cannot run the model)")
    elif log is not None:
        recon = ReconLogger.for_run(cfg, parts.dataset, parts.masker, log.writer)
    result = RunResult(
        out_dir=parts.out_dir,
        steps=start_step,
        total_steps=parts.total_steps,
        skipped_steps=skipped,
        last_checkpoint=latest,
    )
    bar = None
    if info.is_main and cfg.train.progress:
        bar = tqdm(total=parts.total_steps, initial=start_step, desc=cfg.run.name, dynamic_ncols=True, file=sys.stderr)

    window = LogWindow.empty(device)
    step, bad_streak = start_step, 0
    try:
        while step < parts.total_steps:
            o = cfg.optim
            lr = lr_at(step, parts.total_steps, parts.lr_peak, o.warmup_steps, o.min_lr_ratio, o.schedule)
            for group in parts.optimizer.param_groups:
                group["lr"] = lr
            # the model checks the mask counts (a host sync) on the first step and on logged steps only
            logged = (step + 1) % cfg.train.log_every == 0 or step + 1 == parts.total_steps
            stats = train_step(parts, model, step, cfg, info, check=step == start_step or logged)
            if stats.skipped:
                skipped, bad_streak = skipped + 1, bad_streak + 1
                why = "loss" if stats.bad_loss else "gradient"
                say(info, f"step {step + 1}: non-finite {why}, step skipped ({bad_streak} in a row, {skipped} in all)")
            else:
                bad_streak = 0
            window.add(stats)
            step += 1
            result.steps, result.skipped_steps = step, skipped
            if bar is not None:
                bar.update(1)

            stopping = bad_streak >= cfg.train.max_bad_steps
            if step % cfg.train.log_every == 0 or step == parts.total_steps or stopping:
                record = window.record(info, step=step, epoch=parts.stream.epoch, lr=lr, skipped_steps=skipped)
                result.history.append(record)
                if log is not None:
                    log.write(record)
                if bar is not None and record["loss"] is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                window = LogWindow.empty(device)

            if recon is not None and not stats.skipped:
                recon.maybe_log(parts.model, step)
            if stopping:
                result.stopped = (
                    f"{bad_streak} consecutive non-finite losses or gradients at step {step}; "
                    f"last good checkpoint: {result.last_checkpoint or 'none'}"
                )
                say(info, f"stopping: {result.stopped}")
                break
            if (
                cfg.train.save_every
                and step % cfg.train.save_every == 0
                and step < parts.total_steps
                and bad_streak == 0
            ):
                result.last_checkpoint = save_run(parts, cfg, info, step, skipped)
    finally:
        parts.stream.close()
        if info.is_main:  # the merged list of skipped videos (each process wrote its own file)
            write_skip_list(parts)
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    if result.stopped is None:
        finish_run(parts, cfg, info, result, step, skipped)
    return result


def prepare_run_folder(cfg: RunConfig, info: DistInfo) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); writes ``config.yaml``. Every rank reads the folder."""
    out_dir = Path(cfg.run.out_dir)
    latest = find_latest_checkpoint(out_dir)
    if info.enabled:  # every rank must see the same run folder (one shared filesystem across nodes)
        seen: list[Any] = [None] * info.world_size
        dist.all_gather_object(seen, latest.name if latest is not None else None)
        if len(set(seen)) > 1:
            raise VideomaskError(
                f"ranks see different checkpoints in {out_dir} ({seen}); run.out_dir must be "
                "on a filesystem shared by all nodes"
            )
    if latest is not None and not cfg.train.resume:
        raise VideomaskError(
            f"run folder {out_dir} already has checkpoints (latest {latest.name}); pass --resume "
            f"(train.resume=true) to continue it, or choose another run.out_dir"
        )
    if latest is None and cfg.train.resume:
        say(info, f"no checkpoint in {out_dir}; starting from scratch")
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        if latest is None:  # a fresh run tries every video again (one may have been fixed since)
            remove_skip_log(out_dir / SKIP_LOG)
    barrier(info)
    return latest


def forget_failed_start(out_dir: Path) -> None:
    """Undo a run that failed before its first checkpoint and logged nothing: ``config.yaml``, an empty
    ``metrics.jsonl`` and ``tb/`` go, and the folder when it is then empty. What the user may want stays:
    the list of skipped videos (``skipped.tsv``) and a built score cache."""
    metrics = out_dir / "metrics.jsonl"
    if not out_dir.is_dir() or find_latest_checkpoint(out_dir) is not None:
        return
    if metrics.is_file() and metrics.stat().st_size > 0:
        return
    metrics.unlink(missing_ok=True)
    (out_dir / "config.yaml").unlink(missing_ok=True)
    shutil.rmtree(out_dir / "tb", ignore_errors=True)
    try:
        out_dir.rmdir()
    except OSError:  # not empty: the skip list or a score cache
        pass


def restore_checkpoint(parts: Parts, latest: Path | None, cfg: RunConfig, info: DistInfo) -> tuple[int, int]:
    """Load ``latest`` (weights, optimizer, scaler, data position, this rank's RNG) -> ``(step, skipped_steps)``."""
    if latest is None:
        return 0, 0
    sharded = is_sharded(latest)
    if cfg.train.parallel == "fsdp" and not sharded:
        raise VideomaskError(
            f"{latest} is a whole-model checkpoint and this run shards the model (train.parallel=fsdp); resume "
            "it with train.parallel=ddp, or start a new run from its weights (model.checkpoint)"
        )
    if sharded:  # model, optimizer and EMA from the shards, resharded to this run's ranks; the rest below
        state = load_checkpoint(latest, scaler=parts.scaler)
        load_shards(parts.objective, parts.model, parts.optimizer, latest)
    else:
        state = load_checkpoint(latest, parts.model, optimizer=parts.optimizer, scaler=parts.scaler)
    if parts.scaler.is_enabled() and not state.get("scaler_restored", True):
        say(info, f"note: {latest.name} was written without fp16 loss scaling; the GradScaler starts afresh")
    t = state["train"]
    stream = parts.stream
    epoch, consumed = int(t.get("epoch", 0)), int(t.get("batches_in_epoch", 0))
    world, batch = int(t.get("world_size", info.world_size)), int(t.get("batch_size", cfg.data.batch_size))
    base = t.get("elastic_base")  # the saved epoch was itself resumed elastically
    if (world, batch) != (info.world_size, cfg.data.batch_size):
        # ranks deal an epoch's permutation round-robin, so what they consumed is a prefix of it: go on after it
        done = (int(base) if base is not None else 0) + consumed * batch * world
        stream.resume_elastic(epoch, done)
        say(
            info,
            f"note: {latest.name} was written by {world} rank(s) x batch {batch}; epoch {epoch} goes on after its "
            f"first {done} videos, dealt to {info.world_size} rank(s) x batch {cfg.data.batch_size}",
        )
    elif base is not None:
        stream.resume_elastic(epoch, int(base))
        stream.consumed = consumed
    else:
        stream.epoch, stream.consumed = epoch, consumed
    ema = parts.objective.ema
    if ema is not None and not sharded:
        saved = {k[len("ema.") :]: v for k, v in state["extra"].items() if k.startswith("ema.")}
        if saved:
            ema.load_state_dict(saved)
        else:
            say(info, f"note: {latest.name} has no EMA encoder; the clean branch starts from the model")
    rng = state["rng"]
    if rng:
        restore_rng_state(*rng[info.rank if len(rng) == info.world_size else 0])
    step = int(state["step"])
    say(info, f"resuming from {latest} (step {step}, epoch {stream.epoch}, batch {stream.consumed})")
    return step, int(t.get("skipped_steps", 0))


def save_run(parts: Parts, cfg: RunConfig, info: DistInfo, step: int, skipped: int) -> Path:
    """Checkpoint ``step`` on rank 0 with every rank's RNG state; barriers on both sides."""
    barrier(info)
    rng = capture_rng_state()
    states = [rng]
    if info.enabled:
        gathered: list[Any] = [None] * info.world_size if info.is_main else None  # type: ignore[assignment]
        dist.gather_object(rng, gathered, dst=0)
        states = gathered
    path = checkpoint_dir(parts.out_dir, step)
    shards = None
    if cfg.train.parallel == "fsdp":  # every rank writes its shards beside the folder; rank 0 moves them in below
        shards = path.parent / f".sharded-{path.name}"
        save_shards(parts.objective, parts.model, parts.optimizer, shards)
    if info.is_main:
        train_state = {
            "epoch": parts.stream.epoch,
            "batches_in_epoch": parts.stream.consumed,
            "elastic_base": parts.stream.elastic_base,  # None unless this epoch was resumed on another world size
            "world_size": info.world_size,
            "batch_size": cfg.data.batch_size,
            "skipped_steps": skipped,
            "total_steps": parts.total_steps,
            "scheduler": {
                "kind": f"warmup+{cfg.optim.schedule}",
                "peak_lr": parts.lr_peak,
                "warmup_steps": cfg.optim.warmup_steps,
                "min_lr_ratio": cfg.optim.min_lr_ratio,
            },
        }
        path = save_checkpoint(
            parts.out_dir,
            step,
            None if shards else parts.model,
            optimizer=None if shards else parts.optimizer,
            scaler=parts.scaler,
            train_state=train_state,
            rng_states=states,
            model_meta=model_meta(parts.model),
            extra=None if shards else objective_state(parts),
            sharded=shards,
        )
        prune_checkpoints(parts.out_dir, cfg.train.keep_last)
        write_skip_list(parts)
    barrier(info)
    return path


def write_skip_list(parts: Parts) -> None:
    """Rank 0: merge every process's skip-log file into the run's ``skipped.tsv`` (de-duplicated)."""
    write = getattr(parts.dataset, "write_skip_log", None)
    if write is not None:
        write()


def objective_state(parts: Parts) -> dict[str, torch.Tensor]:
    """The objective's tensors a resume needs beyond the model (the EMA encoder of ``clean: ema``)."""
    ema = parts.objective.ema
    return {} if ema is None else {f"ema.{k}": v for k, v in ema.state_dict().items()}


def finish_run(parts: Parts, cfg: RunConfig, info: DistInfo, result: RunResult, step: int, skipped: int) -> None:
    """The last checkpoint (unless the last save was this step) and ``final/`` (weights, plus ``hf/``)."""
    out_dir, model = parts.out_dir, parts.model
    if result.last_checkpoint is None or result.last_checkpoint.name != checkpoint_dir(out_dir, step).name:
        result.last_checkpoint = save_run(parts, cfg, info, step, skipped)
    result.final_dir = out_dir / "final"
    if is_fsdp(parts.objective):  # the whole model, gathered from the shards (every rank takes part)
        model = full_model(model)
    if info.is_main:
        save_model_weights(model, result.final_dir / MODEL_FILE, {**model_meta(model), "step": str(step)})
        if parts.source == "hf" or cfg.train.export_hf:
            save_hf_checkpoint(model, result.final_dir / "hf")
    barrier(info)
    say(info, f"done: {step} steps ({skipped} skipped); final weights in {result.final_dir}")
