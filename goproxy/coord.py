"""Coordination of replicas through Redis: key locks, shared last-used times, the cleanup lock.

Key locks are held by leases their holders renew; the cleanup lock lets one replica at a time
clean the shared store.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import StartupError, StoreUnavailable
from .locks import Lease, LockTimeout
from .net.dial import mask_url
from .storage.usage import FLUSH_INTERVAL, Pair, Usage

log = logging.getLogger(__name__)

# How long a lock outlives a holder that stops renewing it (a crash, a stall).
LEASE = 10.0
# Waiters poll the lock from FIRST_POLL seconds, doubling up to MAX_POLL.
FIRST_POLL, MAX_POLL = 0.01, 0.5

# KEYS[1] the lock, ARGV[1] our token, ARGV[2] the lease in ms: extend it only while it is ours.
_RENEW = """if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"""
# Delete the lock only while it is ours (a lock that ran out may be someone else's now).
_RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1]) else return 0 end"""
# KEYS[1] the usage set, ARGV[1] a time, ARGV[2..] members: remove those last used before that time.
_FORGET = """local n = 0
for i = 2, #ARGV do
  local t = redis.call('zscore', KEYS[1], ARGV[i])
  if t and tonumber(t) < tonumber(ARGV[1]) then n = n + redis.call('zrem', KEYS[1], ARGV[i]) end
end
return n"""


def parse_lock_url(text: str) -> str:
    """Return the -lock value: "" (locks for this host alone) or redis[s]://[:password@]host[:port][/db].

    Raises ValueError naming what is wrong (the password masked).
    """
    value = text.strip()
    if not value:
        return ""
    parts = urllib.parse.urlsplit(value)
    shown = mask_url(value)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{shown}: want redis://[:password@]host:port/db (or rediss:// for TLS)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown}: bad port") from None
    if not parts.hostname or port == 0:
        raise ValueError(f"{shown}: missing host or bad port")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"{shown}: the path is a database number, not {db!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{shown}: no query or fragment allowed")
    return value


def connect(url: str, ca_file: str = "") -> Any:
    """Return a redis-py client for url, checked with a PING.

    ca_file ("" for the system's) verifies a rediss:// server. Raises StartupError when
    redis-py is missing or the server cannot be reached or refuses the password.
    """
    try:
        import redis
    except ImportError:
        raise StartupError("-lock redis://… needs redis-py: pip install 'goproxy[redis]'") from None
    options: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}
    if url.startswith("rediss://") and ca_file:
        options["ssl_ca_certs"] = ca_file
    client = redis.Redis.from_url(url, **options)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StartupError(f"cannot reach the lock service {mask_url(url)}: {exc}") from None
    return client


def _redis_errors() -> tuple[type[Exception], ...]:
    import redis

    return (redis.RedisError,)


class _Lease:
    """A lock held in Redis under name with token; a thread renews it every third of the lease."""

    def __init__(self, locks: RedisLocks, name: str, token: str, since: float) -> None:
        self.locks, self.name, self.token = locks, name, token
        self._renewed = since  # when the last successful set or renewal was sent
        self._lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="goproxy-lease", daemon=True)
        self._thread.start()

    def valid(self) -> bool:
        """Report whether the lock is still ours: renewed within nine tenths of the lease."""
        return not self._lost and self.locks.clock() - self._renewed < self.locks.lease * 0.9

    def _renew(self) -> None:
        locks = self.locks
        while not self._stop.wait(locks.lease / 3):
            sent = locks.clock()
            try:
                ok = locks.client.eval(_RENEW, 1, self.name, self.token, int(locks.lease * 1000))
            except locks.errors as exc:
                log.warning("cannot renew the lock %s: %s", self.name, exc)
                continue
            if not ok:
                log.warning("lost the lock %s: its lease ran out and another holder took it", self.name)
                self._lost = True
                return
            self._renewed = sent

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours."""
        self._stop.set()
        self._thread.join()
        try:
            self.locks.client.eval(_RELEASE, 1, self.name, self.token)
        except self.locks.errors as exc:  # it runs out by itself
            log.warning("cannot release the lock %s (it expires in %gs): %s", self.name, self.locks.lease, exc)


class RedisLocks:
    """KeyLocks shared by every replica using one Redis: SET NX PX with a lease the holder renews.

    namespace prefixes every Redis key (one per shared store). A holder that dies frees the
    key when its lease (seconds) runs out; one that stalls past its lease finds valid() False
    and must not commit. Waiters poll with backoff. Redis errors raise StoreUnavailable.
    """

    def __init__(self, client: Any, namespace: str, lease: float = LEASE,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.namespace, self.lease = client, namespace, lease
        self.clock, self.sleep = clock, sleep
        self.errors = _redis_errors()

    def _name(self, key: str) -> str:
        return f"{self.namespace}:lock:{key}"

    def _try(self, name: str) -> _Lease | None:
        token = secrets.token_hex(16)
        sent = self.clock()
        try:
            if not self.client.set(name, token, nx=True, px=int(self.lease * 1000)):
                return None
        except self.errors as exc:
            raise StoreUnavailable(f"lock service unreachable: {exc}") from None
        return _Lease(self, name, token, sent)

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[Lease]:
        """Hold key's lock while entered, waiting up to timeout seconds for another holder.

        Raises LockTimeout when the wait runs out, StoreUnavailable when Redis cannot be reached.
        """
        name = self._name(key)
        deadline = self.clock() + timeout
        delay = FIRST_POLL
        while True:
            lease = self._try(name)
            if lease is not None:
                break
            left = deadline - self.clock()
            if left <= 0:
                raise LockTimeout(f"gave up after {timeout:g}s waiting for another replica's fetch of {key}")
            self.sleep(min(delay, left))
            delay = min(delay * 2, MAX_POLL)
        try:
            yield lease
        finally:
            lease.release()

    @contextlib.contextmanager
    def try_hold(self, key: str) -> Iterator[Lease | None]:
        """Hold key's lock while entered if it is free now; yield None (holding nothing) if not."""
        lease = self._try(self._name(key))
        try:
            yield lease
        finally:
            if lease is not None:
                lease.release()

    def held(self, key: str) -> bool:
        """Report whether some replica holds key's lock now; raise StoreUnavailable."""
        try:
            return bool(self.client.exists(self._name(key)))
        except self.errors as exc:
            raise StoreUnavailable(f"lock service unreachable: {exc}") from None

    def check(self) -> None:
        """Make sure Redis answers; raise StoreUnavailable saying why not."""
        try:
            self.client.ping()
        except self.errors as exc:
            raise StoreUnavailable(f"lock service unreachable: {exc}") from None


class RedisUsage(Usage):
    """Last-used times shared by every replica: a sorted set in Redis ("module version" → time).

    Uses are buffered as Usage does and flushed with ZADD GT, so a time never moves backwards.
    Redis errors raise StoreUnavailable.
    """

    errors = (StoreUnavailable,)

    def __init__(self, client: Any, namespace: str, clock: Callable[[], float] = time.time,
                 flush_interval: float = FLUSH_INTERVAL) -> None:
        super().__init__(clock, flush_interval)
        self.client = client
        self.key = f"{namespace}:usage"
        self.where = f"Redis ({self.key})"
        self._redis_errors = _redis_errors()

    @contextlib.contextmanager
    def _talk(self) -> Iterator[None]:
        try:
            yield
        except self._redis_errors as exc:
            raise StoreUnavailable(f"lock service unreachable: {exc}") from None

    def store_uses(self, rows: list[tuple[str, str, float]]) -> None:
        """Raise each version's time to the newer of the stored one and its row's."""
        with self._talk():
            self.client.zadd(self.key, {_member(m, v): t for m, v, t in rows}, gt=True)

    def last_used(self) -> dict[Pair, float]:
        """Return every (module, version) → last-used time in Redis."""
        found: dict[Pair, float] = {}
        with self._talk():
            for member, score in self.client.zscan_iter(self.key, count=1000):
                module, _, version = _text(member).partition(" ")
                found[(module, version)] = float(score)
        return found

    def adopt(self, rows: Iterable[tuple[str, str, float]]) -> None:
        """Add rows for versions Redis does not know yet."""
        mapping = {_member(m, v): t for m, v, t in rows}
        if mapping:
            with self._talk():
                self.client.zadd(self.key, mapping, nx=True)

    def release(self) -> None:
        """Keep the client open: the replica's locks share it."""

    def forget(self, pairs: Iterable[Pair], before: float) -> None:
        """Remove the versions in pairs last used before before (atomically, per version)."""
        members = [_member(m, v) for m, v in pairs]
        for i in range(0, len(members), 500):
            with self._talk():
                self.client.eval(_FORGET, 1, self.key, repr(before), *members[i:i + 500])


def _member(module: str, version: str) -> str:
    return f"{module} {version}"  # neither a module path nor a version holds a space


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
