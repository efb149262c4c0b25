"""``benchmarks/gpu_smoke.py``: its dry run (``--device cpu --tiny``) runs every check on the CPU, and
without CUDA the GPU run stops with one line and status 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_smoke.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_on_the_cpu_passes_every_check(tmp_path, capsys):
    from videomask.masking import available_maskers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = _load().main(
            ["--device", "cpu", "--tiny", "--repeats", "1", "--steps", "1", "--out", str(tmp_path / "r.md")]
        )
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "every check passed" in out
    for name in available_maskers():
        assert f"PASS masker {name} on cpu" in out
    for check in ("train() bf16 steps", "train() fp32 steps", "decoder mask on cpu", "save on cpu, resume on cpu"):
        assert f"PASS {check}" in out
    assert "tube masking:" in out and "difference masking:" in out and "clips/s ratio" in out
    assert (tmp_path / "r.md").read_text().count("PASS") == out.count("PASS")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_one_line_and_status_2(capsys):
    assert _load().main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err
