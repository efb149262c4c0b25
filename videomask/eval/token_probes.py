"""Every probe by name on frozen tokens ``[N, L, D]``: mean-pooled linear and kNN, temporal, attentive."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from videomask.errors import VideomaskError
from videomask.eval.attentive import AttentiveSettings, attentive_probe
from videomask.eval.features import mean_pool, temporal_pool
from videomask.eval.probes import knn_accuracy, linear_probe

PROBES: tuple[str, ...] = ("linear", "knn", "temporal", "attentive")  # mean-linear, mean-kNN, time slots, attentive


def probe_tokens(
    tokens: Tensor,
    labels: Tensor,
    is_train: Tensor,
    groups: Tensor,
    *,
    time_slots: int,
    num_classes: int,
    probes: Sequence[str] = PROBES,
    k: int = 5,
    attentive: AttentiveSettings = AttentiveSettings(),  # noqa: B008 (a frozen dataclass)
) -> dict[str, float]:
    """Test accuracy of each probe in ``probes`` on frozen ``tokens [N, L, D]`` (split ``is_train [N]``;
    ``groups [N]`` keep related samples, e.g. one video's clips, in one fold of every hyper-parameter choice)."""
    tr, te = is_train, ~is_train
    out: dict[str, float] = {}
    mean = mean_pool(tokens)  # [N, D]
    for name in probes:
        if name == "linear":
            out[name] = linear_probe(
                mean[tr], labels[tr], mean[te], labels[te], num_classes=num_classes, groups=groups[tr]
            ).accuracy
        elif name == "knn":
            out[name] = knn_accuracy(mean[tr], labels[tr], mean[te], labels[te], k=k, num_classes=num_classes)
        elif name == "temporal":
            feats = temporal_pool(tokens, time_slots)  # [N, t*D]
            out[name] = linear_probe(
                feats[tr], labels[tr], feats[te], labels[te], num_classes=num_classes, groups=groups[tr]
            ).accuracy
        elif name == "attentive":
            out[name] = attentive_probe(
                tokens[tr],
                labels[tr],
                tokens[te],
                labels[te],
                num_classes=num_classes,
                groups=groups[tr],
                settings=attentive,
            ).accuracy
        else:
            raise VideomaskError(f"unknown probe {name!r} (choose from {', '.join(PROBES)})")
    return out
