"""An :class:`~videomask.objectives.Objective` (and its teacher cache) from a run config's ``objective``."""

from __future__ import annotations

from pathlib import Path

import torch

from videomask.config import ObjectiveSection
from videomask.errors import VideomaskError
from videomask.model import VideoMAE
from videomask.objectives.cache import TeacherCache
from videomask.objectives.objective import Objective
from videomask.objectives.teacher import FrameTeacher, build_teacher

__all__ = ["build_objective"]


def build_objective(
    section: ObjectiveSection, model: VideoMAE, device: torch.device | str = "cpu"
) -> tuple[Objective, TeacherCache | None]:
    """The objective around ``model`` with its teacher on ``device``, and the teacher cache when one is set."""
    o = section
    teacher, cache = None, None
    if o.teacher:
        teacher = build_teacher(o.teacher, tubelet=model.tubelet, size=o.teacher_size, layer=o.teacher_layer)
        teacher.to(device)
    if o.teacher_cache:
        if not isinstance(teacher, FrameTeacher):
            raise VideomaskError("objective.teacher_cache needs a cnn teacher (objective.teacher: cnn)")
        if not Path(o.teacher_cache).exists():
            raise VideomaskError(
                f"objective.teacher_cache {o.teacher_cache} not found (videomask teacher-cache makes it)"
            )
        cache = TeacherCache(o.teacher_cache)
        cache.check(teacher)
    objective = Objective(
        model,
        o.name,
        teacher=teacher,
        teacher_dim=teacher.dim if teacher is not None else 0,
        distill_weight=o.distill_weight,
        teacher_weight=o.teacher_weight,
        temperature=o.temperature,
        clean=o.clean,
        ema_decay=o.ema_decay,
    )
    return objective.to(device), cache
