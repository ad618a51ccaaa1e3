"""systemd's notify protocol (sd_notify) over the NOTIFY_SOCKET unix datagram socket, stdlib only."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)


class Notifier:
    """A sender of state lines ("READY=1", "STOPPING=1") to systemd; a no-op without a socket.

    address is the NOTIFY_SOCKET value: a filesystem path, or "@name" for the abstract namespace.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address or ""
        if self.address.startswith("@"):
            self._target = "\0" + self.address[1:]
        else:
            self._target = self.address

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given (a path, or "@name")."""
        return bool(self.address) and (self.address.startswith(("/", "@")))

    def notify(self, *states: str) -> bool:
        """Send the states as one datagram; return False (and log why) when it cannot be sent.

        Without a notify socket, send nothing and return False.
        """
        if not self.enabled:
            return False
        message = "\n".join(states).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._target)
                sock.sendall(message)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc)
            return False
        return True
