"""The one exception hierarchy: each error knows the HTTP status it maps to."""

from __future__ import annotations


class ProxyError(Exception):
    """The base of every error that becomes an HTTP response; status 500."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        """The one-line text body sent to the client."""
        return str(self)


class BadRequest(ProxyError):
    """A malformed path, module path or version; status 400."""

    status = 400


class NotFound(ProxyError):
    """A missing artifact; status 404, or 410 when upstream said gone."""

    status = 404


class MethodNotAllowed(ProxyError):
    """Any method but GET and HEAD; status 405."""

    status = 405


class UpstreamError(ProxyError):
    """A failed upstream fetch after retries and fallbacks; status 502."""

    status = 502


class TransientError(UpstreamError):
    """One failed upstream attempt worth retrying (5xx, 429, reset, timeout, short body)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChecksumError(UpstreamError):
    """Content that fails checksum verification; status 502, never cached."""


class StorageError(ProxyError):
    """A failed cache write (disk full, permissions); status 507."""

    status = 507


class StoreUnavailable(ProxyError):
    """A shared store (object storage, the lock service) that cannot be reached or refuses us.

    Status 503, so a load balancer or client tries another replica or later.
    """

    status = 503


class ConfigError(Exception):
    """A bad option value or unknown key; the message names the key and the layer."""


class StartupError(Exception):
    """A failure to start the proxy; the message names what failed and why (a directory, an address)."""
