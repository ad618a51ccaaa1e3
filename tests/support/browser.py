"""Debian's chromium, headless, driven by tests: screenshots and DOM dumps from its command line,
console errors and page state over the DevTools protocol (a small stdlib WebSocket client)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Flags for a quiet, self-contained headless run: no sandbox (tests may run as root), no GPU,
# no network of its own (updates, sync, QUIC probes).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def find_chromium() -> str | None:
    """Return the chromium binary on PATH, or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class WebSocket:
    """A client WebSocket (RFC 6455) for text messages: enough for the DevTools protocol."""

    def __init__(self, host: str, port: int, path: str, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self._buf = b""
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            self._buf += chunk
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"WebSocket handshake refused: {lines[0]}")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError("WebSocket handshake: wrong Sec-WebSocket-Accept")

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, 0x80 | n])
        elif n < 1 << 16:
            head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)  # a client masks every frame it sends
        body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def send(self, text: str) -> None:
        """Send one text message."""
        self._frame(0x1, text.encode())

    def recv(self, deadline: float) -> str:
        """Return the next text message; raise TimeoutError after deadline (time.monotonic)."""
        message = b""
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                b0, b1 = self._exact(2)
            except socket.timeout:
                raise TimeoutError("no DevTools message before the deadline") from None
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self._exact(8), "big")
            mask = self._exact(4) if b1 & 0x80 else b""
            data = self._exact(n)
            if mask:
                data = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode == 0x9:
                self._frame(0xA, data)
                continue
            if opcode == 0xA:
                continue
            message += data
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@dataclass
class PageLoad:
    """What loading a page in chromium produced: its errors and the values of expressions."""

    errors: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


class Chromium:
    """Run chromium headless with its profile, logs and outputs under workdir."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.runs = 0

    def _profile(self) -> Path:
        self.runs += 1
        profile = self.workdir / f"profile-{self.runs}"
        profile.mkdir(parents=True)
        return profile

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        cmd = [self.binary, *FLAGS, f"--user-data-dir={self._profile()}", *args]
        return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)

    def screenshot(self, url: str, path: Path, width: int = 1100, height: int = 1500) -> None:
        """Write a PNG of url as a window of width x height to path."""
        done = self._run([f"--screenshot={path}", f"--window-size={width},{height}", url])
        if not path.exists():
            raise AssertionError(f"chromium wrote no screenshot: {done.stderr.decode()[-2000:]}")

    def dump_dom(self, url: str) -> str:
        """Return the DOM of url after it loaded, serialised as chromium sees it."""
        done = self._run(["--dump-dom", url])
        if done.returncode != 0:
            raise AssertionError(f"chromium --dump-dom failed: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    def load(self, url: str, expressions: dict[str, str] | None = None, width: int = 1100, height: int = 1500,
             dark: bool = False, screenshot: Path | None = None, timeout: float = 30.0) -> PageLoad:
        """Load url in a width x height viewport (dark: prefers-color-scheme dark) and return
        the console errors, uncaught exceptions and failed loads it logged until the network
        went idle, and the value of each JavaScript expression evaluated then; screenshot, when
        given, is where a PNG of the whole page goes."""
        profile = self._profile()
        with open(self.workdir / f"chromium-{self.runs}.log", "wb") as log:
            proc = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                     "about:blank"], stdout=log, stderr=log)
            try:
                return self._drive(proc, profile, url, expressions or {}, width, height, dark, screenshot, timeout)
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _drive(self, proc: subprocess.Popen[bytes], profile: Path, url: str, expressions: dict[str, str],
               width: int, height: int, dark: bool, screenshot: Path | None, timeout: float) -> PageLoad:
        deadline = time.monotonic() + timeout
        port_file = profile / "DevToolsActivePort"
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not open its DevTools port (exit {proc.poll()})")
            time.sleep(0.02)  # polling for the file chromium writes, with a deadline
        port, path = port_file.read_text().splitlines()[:2]
        tools = DevTools(WebSocket("127.0.0.1", int(port), path, timeout), deadline)
        try:
            target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for method in ("Page.enable", "Runtime.enable", "Log.enable"):
                tools.call(method, session=session)
            tools.call("Page.setLifecycleEventsEnabled", {"enabled": True}, session)
            tools.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                              "deviceScaleFactor": 1, "mobile": width < 600}, session)
            if dark:
                tools.call("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}, session)
            loader = tools.call("Page.navigate", {"url": url}, session)["loaderId"]
            tools.wait(lambda m: m.get("method") == "Page.lifecycleEvent" and m["params"]["name"] == "networkIdle"
                       and m["params"]["loaderId"] == loader)
            result = PageLoad(errors=[_error(m) for m in tools.events if _error(m)])
            for name, expr in expressions.items():
                answer = tools.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
                if "exceptionDetails" in answer:
                    raise AssertionError(f"{expr}: {answer['exceptionDetails']}")
                result.values[name] = answer["result"].get("value")
            if screenshot is not None:
                shot = tools.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            return result
        finally:
            tools.ws.close()


def _error(m: dict[str, Any]) -> str:
    """Return a one-line description of a DevTools event that reports an error, else ""."""
    method, params = m.get("method"), m.get("params", {})
    if method == "Runtime.exceptionThrown":
        return f"exception: {params['exceptionDetails'].get('text')}"
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
    if method == "Log.entryAdded" and params["entry"].get("level") == "error":
        return f"{params['entry'].get('source')}: {params['entry'].get('text')} {params['entry'].get('url', '')}"
    return ""


class DevTools:
    """A DevTools protocol connection: calls with ids; other messages are kept as events."""

    def __init__(self, ws: WebSocket, deadline: float) -> None:
        self.ws = ws
        self.deadline = deadline
        self.events: list[dict[str, Any]] = []
        self._next = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send method and return its result; raise AssertionError on a protocol error."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(self.ws.recv(self.deadline))
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))
            self.events.append(answer)

    def wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Return the first event (kept or arriving before the deadline) that match accepts."""
        for event in self.events:
            if match(event):
                return event
        while True:
            arrived: dict[str, Any] = json.loads(self.ws.recv(self.deadline))
            self.events.append(arrived)
            if "id" not in arrived and match(arrived):
                return arrived
