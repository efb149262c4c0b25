"""The wheel carries the code, the demo's configs and the shipped clips; the lookup finds them when installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tree_files(folder: Path, pattern: str) -> set[str]:
    return {
        p.relative_to(folder).as_posix() for p in folder.glob(pattern) if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the source (the clone stays clean), offline, with the installed setuptools."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("videomask", "assets", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (found,) = out.glob("videomask-*.whl")
    return found


def test_wheel_holds_every_module_config_and_clip(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"videomask/{n}" for n in _tree_files(ROOT / "videomask", "**/*.py")}
    assert modules and modules <= names, (
        f"modules missing from the wheel (list the package in pyproject.toml): {sorted(modules - names)}"
    )
    assets = {f"videomask/_assets/{n}" for n in _tree_files(ROOT / "assets", "**/*")}
    configs = {f"videomask/_configs/{n}" for n in _tree_files(ROOT / "configs", "*.yaml")}
    assert "videomask/_assets/target/pedestrians_a.mp4" in assets and "videomask/_configs/demo.yaml" in configs
    assert "videomask/weights/mobilenetv2_s16.safetensors" in names  # the cnn embedder's shipped weights
    assert assets <= names, sorted(assets - names)
    assert configs <= names, sorted(configs - names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "videomask = videomask.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    assert not any(n.startswith(("tests/", "benchmarks/", "assets/", "configs/")) for n in names)


def test_installed_layout_finds_the_shipped_config_and_clips(wheel: Path, tmp_path: Path) -> None:
    """The unpacked wheel on sys.path (what ``pip install`` lays out) from an empty folder: no source tree in sight."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "from pathlib import Path; import videomask\n"
        "from videomask.resources import data_dir\n"
        "from videomask.commands.demo import _find_config, _shipped_resolver\n"
        "config, shipped = _find_config(None)\n"
        "resolve = _shipped_resolver(data_dir('assets'), Path.cwd())\n"
        "print(videomask.__file__); print(config); print(shipped)\n"
        "print(resolve('../assets/target')); print(resolve('../runs/demo'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, config, shipped, target, run_dir = proc.stdout.split("\n")[:5]
    assert Path(module).is_relative_to(site)
    assert Path(config) == site / "videomask" / "_configs" / "demo.yaml" and shipped == "True"
    assert Path(target) == site / "videomask" / "_assets" / "target"
    assert sorted(p.name for p in Path(target).glob("*.mp4")) == sorted(
        p.name for p in (ROOT / "assets" / "target").glob("*.mp4")
    )
    assert Path(run_dir) == (work / "runs" / "demo").resolve()


def test_resource_lookup_in_this_checkout() -> None:
    """Editable install or a clone on PYTHONPATH: the lookup gives the repository's own folders' files."""
    from videomask.resources import data_dir, data_file

    assert _tree_files(data_dir("assets"), "**/*.mp4") == _tree_files(ROOT / "assets", "**/*.mp4")
    assert data_file("configs", "demo.yaml").read_text() == (ROOT / "configs" / "demo.yaml").read_text()


def test_unknown_or_missing_data_is_a_videomask_error() -> None:
    from videomask.errors import VideomaskError
    from videomask.resources import data_dir, data_file

    with pytest.raises(VideomaskError, match="unknown data folder"):
        data_dir("models")
    with pytest.raises(VideomaskError, match="not found"):
        data_file("configs", "no_such.yaml")


def test_installed_commands_read_the_shipped_configs_from_any_folder(wheel: Path, tmp_path: Path) -> None:
    """``videomask bench --quick`` and ``videomask pretrain --config configs/pretrain_tiny.yaml`` from an empty
    folder with the unpacked wheel: the shipped config is found, its clips are the shipped ones and its run
    folders go under the current folder (never into the installed package)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import argparse, videomask\n"
        "from videomask.bench import load_bench_config\n"
        "from videomask.commands import config_path\n"
        "from videomask.commands.bench import _config_path\n"
        "from videomask.config import load_config\n"
        "bench = load_bench_config(_config_path(argparse.Namespace(config=None, quick=True)))\n"
        "run = load_config(config_path('configs/pretrain_tiny.yaml'))\n"
        "print(videomask.__file__); print(bench.source); print(bench.work_dir)\n"
        "print(run.data.path); print(run.run.out_dir)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, source, work_dir, data, out_dir = proc.stdout.split("\n")[:5]
    assert Path(module).is_relative_to(site)
    assert Path(source) == site / "videomask" / "_assets" / "source"
    assert Path(data) == site / "videomask" / "_assets" / "target"
    assert Path(work_dir) == (work / "runs" / "bench_quick").resolve()
    assert Path(out_dir) == (work / "runs" / "pretrain_tiny").resolve()
