"""``run.dist_timeout_s``: a rank that waits for the others longer than that fails with one line, not a hang."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers_train import tiny_run, torchrun_env

import videomask.train.loop as loop
from videomask.config import load_config
from videomask.data import prepare_process
from videomask.errors import VideomaskError
from videomask.train import train
from videomask.train.distributed import DistInfo, barrier, is_timeout, setup_distributed, timeout_error

TIMEOUT_S = 3.0  # run.dist_timeout_s of the two-rank tests: small, so the test is short


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_and_report(out: str, rank: int, call) -> None:
    """Run ``call()`` and write how long it took and what it raised (if anything) to ``out/rank{rank}.json``."""
    start = time.monotonic()
    err: BaseException | None = None
    try:
        call()
    except BaseException as caught:  # noqa: BLE001 - the test reads what the rank failed with
        err = caught
    record = {
        "seconds": time.monotonic() - start,
        "type": None if err is None else type(err).__name__,
        "message": None if err is None else str(err),
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(record))


def _train_rank(rank: int, port: int, out: str, cfg: str) -> None:
    """A forked rank of ``train``; rank 1 never gets past building its parts (it sleeps until killed)."""
    torchrun_env(rank, 2, port)
    torch.set_num_threads(1)
    code = 1
    try:
        if rank == 1:

            def stuck(*args, **kwargs):
                time.sleep(600)

            loop.build_parts = stuck  # in this forked process only
        _run_and_report(out, rank, lambda: train(load_config(cfg)))
        code = 0
    finally:
        os._exit(code)


def _barrier_rank(rank: int, port: int, out: str) -> None:
    """A forked rank that starts the process group with the short time-out; rank 1 then never reaches the
    barrier that rank 0 waits in."""
    torchrun_env(rank, 2, port)
    code = 1
    try:
        info, _ = setup_distributed("cpu", TIMEOUT_S)
        if rank == 1:
            time.sleep(600)
        _run_and_report(out, rank, lambda: barrier(info))
        code = 0
    finally:
        os._exit(code)


def _setup_rank(rank: int, port: int, out: str) -> None:
    """A forked rank that only starts the process group (its partner never comes)."""
    torchrun_env(rank, 2, port)
    code = 1
    try:
        _run_and_report(out, rank, lambda: setup_distributed("cpu", TIMEOUT_S))
        code = 0
    finally:
        os._exit(code)


def _run_forked(target, ranks: list[tuple], wait_for: int, limit: float) -> list[multiprocessing.Process]:
    """Start ``target(*args)`` for each args tuple (forked); wait up to ``limit`` s for process ``wait_for``,
    then SIGKILL whatever still runs."""
    prepare_process()  # the gc-before-fork hook, as the CLI sets it up
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for args in ranks]
    for p in procs:
        p.start()
    try:
        procs[wait_for].join(limit)
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)
    return procs


def test_zero_or_negative_timeout_is_one_line_error():
    for bad in (0, -5.0):
        with pytest.raises(VideomaskError, match="run.dist_timeout_s must be > 0") as err:
            setup_distributed("cpu", bad)
        assert "\n" not in str(err.value)


def test_config_refuses_a_timeout_that_is_not_positive(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(tmp_path / "videos", tmp_path / "run")))
    assert load_config(cfg, ["run.dist_timeout_s=2.5", "data.timeout_s=2"]).run.dist_timeout_s == 2.5
    with pytest.raises(VideomaskError, match="run.dist_timeout_s") as err:
        load_config(cfg, ["run.dist_timeout_s=0"])
    assert "\n" not in str(err.value)
    # a per-item time-out as long as the ranks' wait would let one hung video end the job: refused
    with pytest.raises(VideomaskError, match="data.timeout_s=30 must be shorter than run.dist_timeout_s=2.5") as err:
        load_config(cfg, ["run.dist_timeout_s=2.5"])
    assert "\n" not in str(err.value)


def test_timeout_error_is_one_line_and_other_errors_pass_through():
    info = DistInfo(rank=1, world_size=2, timeout_s=7.0)
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:534] Timed out waiting 7000ms for recv operation\nmore")
    assert is_timeout(gloo)
    err = timeout_error(gloo, info, "a barrier")
    assert isinstance(err, VideomaskError) and "\n" not in str(err)
    assert str(err).startswith("rank 1: a barrier waited more than run.dist_timeout_s=7 s")
    other = RuntimeError("Connection closed by peer")
    assert not is_timeout(other) and timeout_error(other, info, "a barrier") is other
    assert not is_timeout(ValueError("timed out"))  # only the collectives' RuntimeError


def test_barrier_that_one_rank_never_reaches_fails_with_one_line(tmp_path):
    """Two forked Gloo ranks; rank 1 never calls the barrier: rank 0's barrier gives up after
    run.dist_timeout_s with the one-line error."""
    port = _free_port()
    procs = _run_forked(_barrier_rank, [(r, port, str(tmp_path)) for r in (0, 1)], wait_for=0, limit=60)
    assert procs[0].exitcode == 0, "rank 0 did not finish (hung past its time-out?)"
    record = json.loads((tmp_path / "rank0.json").read_text())
    assert record["type"] == "VideomaskError", record
    assert "\n" not in record["message"]
    assert record["message"].startswith("rank 0: a barrier waited more than run.dist_timeout_s=3 s for the other ranks")
    assert TIMEOUT_S - 0.5 < record["seconds"] < TIMEOUT_S + 20, record
    assert not (tmp_path / "rank1.json").exists()


def test_rank_waiting_for_a_stuck_rank_fails_with_one_line(tmp_path, videos):
    """Two forked Gloo ranks of ``train``; rank 1 never gets past building its parts, so rank 0 waits in the
    collective that wraps the model in DDP. Rank 0 fails after about run.dist_timeout_s with the one-line error
    (the loop's own wrapping), instead of waiting for ever, and leaves no half-made run folder."""
    raw = tiny_run(videos, tmp_path / "run", run={"dist_timeout_s": TIMEOUT_S}, train={"steps": 2})
    raw["data"]["timeout_s"] = TIMEOUT_S / 2  # shorter than the ranks' wait (the config requires it)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    port = _free_port()
    procs = _run_forked(_train_rank, [(r, port, str(tmp_path), str(cfg)) for r in (0, 1)], wait_for=0, limit=60)
    assert procs[0].exitcode == 0, "rank 0 did not finish (hung past its time-out?)"
    record = json.loads((tmp_path / "rank0.json").read_text())
    assert record["type"] == "VideomaskError", record
    message = record["message"]
    assert "\n" not in message
    assert message.startswith("rank 0: a collective waited more than run.dist_timeout_s=3 s"), message
    assert TIMEOUT_S - 0.5 < record["seconds"] < TIMEOUT_S + 20, record
    assert not (tmp_path / "rank1.json").exists()  # rank 1 really was stuck
    assert not (tmp_path / "run" / "config.yaml").exists()  # a failed start leaves no run folder behind


def test_rendezvous_without_the_other_rank_fails_with_one_line(tmp_path):
    """Rank 0 of 2 alone: starting the process group gives up after run.dist_timeout_s with one line."""
    procs = _run_forked(_setup_rank, [(0, _free_port(), str(tmp_path))], wait_for=0, limit=60)
    assert procs[0].exitcode == 0, "rank 0 did not finish (hung past its time-out?)"
    record = json.loads((tmp_path / "rank0.json").read_text())
    assert record["type"] == "VideomaskError", record
    assert "\n" not in record["message"]
    assert record["message"].startswith("rank 0: starting the process group waited more than run.dist_timeout_s=3 s")
    assert record["seconds"] < TIMEOUT_S + 20, record
