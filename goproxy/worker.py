"""One worker process: serve on the listening socket the parent bound, report to it, drain on SIGTERM.

The reports go over a control socket: ready, a fatal start-up error, last-used times.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

from .accesslog import AccessLog
from .config import Config
from .server import ProxyServer
from .shm import Region

log = logging.getLogger(__name__)

# Builds the worker's server: (config, listener, region, slot, on_use, access) → a server not yet serving.
BuildServer = Callable[[Config, socket.socket, Region, int, Callable[[str], None], AccessLog], ProxyServer]


class Control:
    """The worker's end of its control socket: one line per message, sent whole under a lock."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, line: str) -> None:
        """Send one message line (no newline in it); raise OSError when the parent is gone."""
        with self._lock:
            self.sock.sendall(line.encode("utf-8", "replace") + b"\n")


def write_fd(fd: int) -> Callable[[str], None]:
    """Return a function writing text straight to file descriptor fd (whole, retrying short writes)."""
    def write(text: str) -> None:
        data = memoryview(text.encode("utf-8", "replace"))
        while data:
            data = data[os.write(fd, data):]

    return write


def run(index: int, config: Config, listener: socket.socket, control: socket.socket, region: Region, slot: int,
        build: BuildServer, forward_uses: Callable[[Control], tuple[Callable[[str], None], Callable[[], None]]],
        setup_logging: Callable[[str], logging.handlers.QueueListener]) -> int:
    """Run worker index in this (freshly forked) process until it is told to stop; return its exit status.

    Called in the child right after fork: it takes a fresh stderr (a lock held by a parent
    thread at the fork would block it forever), sets up logging with a "[wN] " tag, builds the
    server with build, starts its background jobs, says "ready" once serving and "fatal <reason>"
    when the build fails.

    SIGTERM drains it (-shutdown-timeout); SIGINT and SIGHUP are the parent's to handle. When
    the control socket closes (the parent died) it stops too. forward_uses(control) gives the
    worker's use recorder and the function that stops it, sending what is left.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    listener_thread = setup_logging(config.log_level)
    tag = f"[w{index}] "
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tag(tag))
    ctl = Control(control)
    record, stop_uses = forward_uses(ctl)
    try:
        server = build(config, listener, region, slot, record, AccessLog(write_fd(2), tag))
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        log.error("worker %d cannot start: %s", index, reason)
        try:
            ctl.send(f"fatal {reason}".replace("\n", " "))
        except OSError:
            pass
        stop_uses()
        listener_thread.stop()
        return 1
    for job in server.background:  # the page's history sampler and warnings capture; stopped by server.stop
        job.start()
    stopper: list[threading.Thread] = []

    def stop(*_: object) -> None:
        if not stopper:
            t = threading.Thread(target=server.stop, name="goproxy-stop", daemon=True)
            stopper.append(t)
            t.start()

    signal.signal(signal.SIGTERM, lambda signum, frame: stop())
    threading.Thread(target=_watch_parent, args=(control, stop), name="goproxy-parent-watch", daemon=True).start()
    try:
        ctl.send("ready")
    except OSError:
        stop()
    server.serve()
    if stopper:
        stopper[0].join()
    stop_uses()
    listener_thread.stop()
    return 0


def _watch_parent(control: socket.socket, stop: Callable[[], None]) -> None:
    """Stop the worker when the control socket closes: the parent is gone."""
    try:
        while control.recv(4096):
            pass
    except OSError:
        pass
    log.warning("the parent process is gone; stopping")
    stop()


class _Tag(logging.Filter):
    """Prefix every record's message with the worker's tag, so interleaved lines can be told apart."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "tagged", False):
            record.msg = self.tag + str(record.msg)
            record.tagged = True
        return True
