"""The built proxy: every part, for a server or a command to use."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..download import Downloader
from ..metrics import Metrics
from ..net.http import Transport
from ..readiness import Readiness
from ..service import Service
from ..singleflight import SingleFlight
from ..storage.base import Storage
from ..storage.cleanup import Cleaner
from ..storage.disk import DiskStorage
from ..storage.usage import Usage
from ..sumdb.verify import Verifier
from ..upstream import Upstreams
from .stores import Coordination


@dataclass
class App:
    """The proxy's parts, built and wired.

    storage is where artifacts live; local is the disk under -cache (the same object without a
    bucket). coordination holds the locks, usage stores and cleaners.
    """

    config: Config
    metrics: Metrics
    storage: Storage
    local: DiskStorage
    transport: Transport
    upstreams: Upstreams
    verifier: Verifier
    flights: SingleFlight[bool]
    downloader: Downloader
    coordination: Coordination
    service: Service
    readiness: Readiness

    @property
    def usage(self) -> Usage:
        """Return the shared store's usage (last-used times)."""
        return self.coordination.usage

    @property
    def cleaner(self) -> Cleaner:
        """Return the shared store's cleaner."""
        return self.coordination.cleaner
