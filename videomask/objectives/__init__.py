"""Objectives: pixels, teacher features, contrastive (clean branch, InfoNCE) and feature distillation
(docs/objectives.md), their teachers and the teacher cache.

    objective, cache = build_objective(cfg.objective, model)
    out = objective(video, mask, targets=cache.lookup(batch, grid) if cache else None)
"""

from videomask.objectives.build import build_objective
from videomask.objectives.cache import TeacherCache, build_teacher_cache
from videomask.objectives.objective import CLEAN_BRANCHES, OBJECTIVES, Objective, ObjectiveOutput, info_nce
from videomask.objectives.teacher import FrameTeacher, TokenTeacher, build_teacher, frame_tokens, pool_boxes

__all__ = [
    "CLEAN_BRANCHES",
    "OBJECTIVES",
    "FrameTeacher",
    "Objective",
    "ObjectiveOutput",
    "TeacherCache",
    "TokenTeacher",
    "build_objective",
    "build_teacher",
    "build_teacher_cache",
    "frame_tokens",
    "info_nce",
    "pool_boxes",
]
