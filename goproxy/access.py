"""Who may use the server and for which modules: the TLS context, client credentials and module rules in force."""

from __future__ import annotations

import ssl

from .auth import AuthFile
from .rules import Rules

# The one application protocol the server speaks over TLS (ALPN): no HTTP/2.
ALPN = ("http/1.1",)


class TLSLoadError(ValueError):
    """A certificate or key that cannot be used; the message names the file and the problem."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """Return a TLS server context with cert (a PEM chain) and key loaded, TLS 1.2 or newer, ALPN http/1.1.

    Renegotiation is refused, so reads and writes on a non-blocking connection only ever wait
    for the direction they asked for. Raises TLSLoadError naming the file that cannot be read
    or does not hold a certificate or a matching key.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_alpn_protocols(list(ALPN))
    for path, what in ((cert, "certificate"), (key, "key")):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TLSLoadError(f"TLS {what} {path}: {exc.strerror or exc}") from None
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TLSLoadError(f"TLS certificate {cert} with key {key}: {_reason(exc)}") from None
    except OSError as exc:  # a PEM file without the expected block
        raise TLSLoadError(f"TLS certificate {cert} with key {key}: {exc.strerror or exc}") from None
    return ctx


def _reason(exc: ssl.SSLError) -> str:
    """Return an SSLError as a short phrase ("KEY_VALUES_MISMATCH" → "key values mismatch")."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.replace("_", " ").lower()
    return str(exc)


class Access:
    """The access settings in force, read by every request and replaced whole on reload.

    tls is the server's TLS context (None: plain http); auth the -auth-file credentials (None:
    anyone may ask); metrics_auth says /metrics needs a credential too; rules are the module
    rules (empty: every module allowed). Each attribute is replaced by one assignment, so a
    request sees either the old or the new value of each.
    """

    __slots__ = ("tls", "auth", "metrics_auth", "rules")

    def __init__(self, tls: ssl.SSLContext | None = None, auth: AuthFile | None = None,
                 metrics_auth: bool = True, rules: Rules | None = None) -> None:
        self.tls = tls
        self.auth = auth
        self.metrics_auth = metrics_auth
        self.rules = rules if rules is not None else Rules()

    def update(self, new: Access) -> None:
        """Put new's settings in force (a reload): rules first, the TLS context last."""
        self.rules = new.rules
        self.metrics_auth = new.metrics_auth
        self.auth = new.auth
        self.tls = new.tls

    def needs_credential(self, path: str) -> bool:
        """Report whether a request for path must carry a credential (/health and /ready never do)."""
        if self.auth is None or path in ("/health", "/ready"):
            return False
        return self.metrics_auth or path != "/metrics"
