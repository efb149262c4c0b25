"""The research harness behind ``videomask bench`` (needs the ``bench`` extra; the core never imports it).

Two protocols: the quality bench (:mod:`videomask.bench.quality`) and the known-answer bench
(:mod:`videomask.bench.motion`, a config with ``protocol: motion``).
"""

from videomask.bench.config import (
    BenchConfig,
    EvalSettings,
    base_mask_section,
    load_bench_config,
    read_bench_yaml,
    validate_bench_config,
)
from videomask.bench.holdout import TargetVideo, derive_train_cache, split_target, write_lossless
from videomask.bench.motion import run_motion_bench
from videomask.bench.motion_config import (
    MotionBenchConfig,
    is_motion_config,
    load_motion_config,
    validate_motion_config,
)
from videomask.bench.motion_energy import MOTION_BASELINE
from videomask.bench.motion_report import write_motion_report
from videomask.bench.quality import (
    Anchors,
    EvalData,
    bench_setup,
    build_eval_data,
    detect_anchors,
    evaluate_model,
    evaluate_motion_baseline,
    protocol_notes,
    run_bench,
)
from videomask.bench.quality_report import METRICS, PERCENT, compare, headline, markdown_table, write_plot, write_report
from videomask.bench.report import report_header
from videomask.bench.runs import (
    base_model,
    fit_difference_stats,
    shared_settings,
    start_work,
    variant_masker,
)
from videomask.bench.stats import summarise

__all__ = [
    "METRICS",
    "MOTION_BASELINE",
    "PERCENT",
    "Anchors",
    "BenchConfig",
    "EvalData",
    "EvalSettings",
    "MotionBenchConfig",
    "TargetVideo",
    "base_mask_section",
    "base_model",
    "bench_setup",
    "build_eval_data",
    "compare",
    "derive_train_cache",
    "detect_anchors",
    "evaluate_model",
    "evaluate_motion_baseline",
    "fit_difference_stats",
    "headline",
    "is_motion_config",
    "load_bench_config",
    "load_motion_config",
    "markdown_table",
    "protocol_notes",
    "read_bench_yaml",
    "report_header",
    "run_bench",
    "run_motion_bench",
    "shared_settings",
    "split_target",
    "start_work",
    "summarise",
    "validate_bench_config",
    "validate_motion_config",
    "variant_masker",
    "write_lossless",
    "write_motion_report",
    "write_plot",
    "write_report",
]
