"""Redis (Debian's redis-server) for tests: no persistence, a free loopback port, polled until PING."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.daemons import free_port, stop_group


class RedisServer:
    """One redis-server in the foreground, its working directory in workdir."""

    def __init__(self, binary: str, workdir: Path, timeout: float = 20) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / "redis.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--dir", str(workdir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        import redis

        self.client: Any = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client.ping():
                    return
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start:\n{self.log.read_text()}") from None
            time.sleep(0.01)  # polling until it answers, with a deadline

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after a short grace period."""
        stop_group(self.proc, 2.0)
