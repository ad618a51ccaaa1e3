"""Real network daemons on 127.0.0.1 for tests: dante (SOCKS5), tinyproxy (HTTP), unbound (DNS).

Each runs in the foreground as a child in its own process group, with its config and log in a
temporary directory, and is stopped by that process group; its log proves what went through it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.certs import Certs

# What to install when a daemon is missing (Debian package names).
PACKAGES = {"danted": "dante-server", "tinyproxy": "tinyproxy", "unbound": "unbound"}


def require(binary: str) -> str:
    """require returns the daemon's path, or skips the test saying what to install."""
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.access(p, os.X_OK)), None)
    if path is None:
        pytest.skip(f"{binary} is not installed: apt-get install {PACKAGES.get(binary, binary)} (.ci/run does)")
    return path


def free_ports(n: int = 1) -> list[int]:
    """free_ports are n distinct ports free for both TCP and UDP on 127.0.0.1 (bound together,
    then released for the daemon to take)."""
    held: list[socket.socket] = []
    try:
        while len(held) < 2 * n:
            tcp = socket.socket()
            tcp.bind(("127.0.0.1", 0))
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind(("127.0.0.1", tcp.getsockname()[1]))
            except OSError:
                tcp.close()
                udp.close()
                continue
            held += [tcp, udp]
        return [int(s.getsockname()[1]) for s in held[::2]]
    finally:
        for s in held:
            s.close()


def free_port() -> int:
    """free_port is one port free for TCP and UDP on 127.0.0.1."""
    return free_ports(1)[0]


def accepting(port: int) -> bool:
    """accepting reports whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Daemon:
    """Daemon runs argv in the foreground and waits until every port in ports accepts TCP."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, ports: Sequence[int], cwd: Path,
                 timeout: float = 20) -> None:
        self.name, self.log = name, log
        self.stderr = cwd / f"{name}.stderr"
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while not all(accepting(p) for p in ports):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start:\n{self.stderr.read_text()}\n{self.log_text()}")
            time.sleep(0.01)

    def log_text(self) -> str:
        """log_text is the daemon's log so far."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """stop ends the daemon's process group (stop_group)."""
        stop_group(self.proc, 5)


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop the process group proc leads: TERM, up to grace seconds for the leader, then KILL for
    anything left (dante's children can outlive their parent); reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def dante(directory: Path, auth: bool = False) -> tuple[Daemon, int]:
    """dante starts a SOCKS5 server (username/password against system users when auth)."""
    binary = require("danted")
    port = free_port()
    log = directory / "danted.log"
    method = "username" if auth else "none"
    (directory / "danted.conf").write_text(f"""logoutput: {log}
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
socksmethod: {method}
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{
  from: 127.0.0.0/8 to: 0.0.0.0/0
  log: connect disconnect
}}
socks pass {{
  from: 127.0.0.0/8 to: 0.0.0.0/0
  command: connect
  log: connect disconnect error
}}
""")
    d = Daemon("danted", [binary, "-f", str(directory / "danted.conf"), "-p", str(directory / "danted.pid")],
               log, [port], directory)
    return d, port


def tinyproxy(directory: Path, connect_ports: Sequence[int] = (), auth: tuple[str, str] | None = None
              ) -> tuple[Daemon, int]:
    """tinyproxy starts an HTTP proxy allowing CONNECT to connect_ports (Basic auth when auth)."""
    binary = require("tinyproxy")
    port = free_port()
    log = directory / "tinyproxy.log"
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 60", f'LogFile "{log}"', "LogLevel Info",
             f'PidFile "{directory / "tinyproxy.pid"}"', "Allow 127.0.0.1"]
    lines += [f"ConnectPort {p}" for p in connect_ports]
    if auth:
        lines.append(f"BasicAuth {auth[0]} {auth[1]}")  # tinyproxy accepts letters only here
    (directory / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
    d = Daemon("tinyproxy", [binary, "-d", "-c", str(directory / "tinyproxy.conf")], log, [port], directory)
    return d, port


# Names unbound answers for (and only it: they are not in /etc/hosts).
LOCAL_DATA = [
    "modules.test. 60 IN A 127.0.0.1",
    "six.test. 30 IN AAAA ::1",
    "dual.test. 40 IN A 127.0.0.1",
    "dual.test. 20 IN AAAA ::1",
    "alias.test. 300 IN CNAME modules.test.",
] + [f"big.test. 60 IN A 10.0.{i // 250}.{i % 250 + 1}" for i in range(100)]


class Unbound:
    """Unbound is a DNS server answering LOCAL_DATA over UDP/TCP, DoT and DoH (HTTP/2)."""

    def __init__(self, directory: Path, certs: Certs) -> None:
        binary = require("unbound")
        self.port, self.tls_port, self.https_port = free_ports(3)
        log = directory / "unbound.log"
        data = "\n".join(f'  local-data: "{d}"' for d in LOCAL_DATA)
        (directory / "unbound.conf").write_text(f"""server:
  username: ""
  chroot: ""
  directory: "{directory}"
  pidfile: "{directory / 'unbound.pid'}"
  use-syslog: no
  logfile: "{log}"
  log-queries: yes
  num-threads: 1
  interface: 127.0.0.1@{self.port}
  interface: 127.0.0.1@{self.tls_port}
  interface: 127.0.0.1@{self.https_port}
  tls-port: {self.tls_port}
  https-port: {self.https_port}
  tls-service-key: "{certs.key}"
  tls-service-pem: "{certs.cert}"
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  do-not-query-localhost: yes
  local-zone: "test." static
{data}
remote-control:
  control-enable: no
""")
        self.daemon = Daemon("unbound", [binary, "-d", "-c", str(directory / "unbound.conf")], log,
                             [self.port, self.tls_port, self.https_port], directory)

    def queries(self, name: str) -> int:
        """queries counts the logged queries for name (any type)."""
        return sum(1 for line in self.daemon.log_text().splitlines() if f" {name}. " in line)

    def stop(self) -> None:
        self.daemon.stop()
