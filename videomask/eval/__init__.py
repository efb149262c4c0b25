"""Frozen-feature evaluation behind ``videomask probe``: labelled clips, frozen features, linear / kNN /
temporal / attentive probes.

    from videomask.eval import load_encoder, read_labelled_list, list_samples, decode_samples, extract_features
"""

from videomask.eval.attentive import AttentiveProbe, AttentiveSettings, attentive_probe
from videomask.eval.clips import ClipSet, centre_square, decode_samples
from videomask.eval.encoder import load_encoder
from videomask.eval.features import extract_features, extract_tokens, mean_pool, normalise, temporal_pool
from videomask.eval.lists import ListRow, list_samples, read_labelled_list, stratified_split
from videomask.eval.probes import DEFAULT_WEIGHT_DECAYS, ProbeResult, knn_accuracy, linear_probe, probe_clipset
from videomask.eval.tasks import (
    SPEED_STRIDES,
    TASKS,
    ProbeSample,
    arrow_indices,
    build_task_samples,
    speed_indices,
    task_samples,
    task_span,
    time_split_windows,
)
from videomask.eval.token_probes import PROBES, probe_tokens

__all__ = [
    "AttentiveProbe",
    "AttentiveSettings",
    "ClipSet",
    "DEFAULT_WEIGHT_DECAYS",
    "ListRow",
    "PROBES",
    "ProbeResult",
    "ProbeSample",
    "SPEED_STRIDES",
    "TASKS",
    "arrow_indices",
    "attentive_probe",
    "build_task_samples",
    "centre_square",
    "decode_samples",
    "extract_features",
    "extract_tokens",
    "knn_accuracy",
    "linear_probe",
    "list_samples",
    "load_encoder",
    "mean_pool",
    "normalise",
    "probe_clipset",
    "probe_tokens",
    "read_labelled_list",
    "speed_indices",
    "stratified_split",
    "task_samples",
    "task_span",
    "temporal_pool",
    "time_split_windows",
]
