"""Wiring of storage and of the coordination of replicas.

Storage is the disk cache or a shared bucket with its local tier; coordination is locks,
last-used times and cleanup.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..coord import RedisLocks, RedisUsage
from ..coord import connect as connect_redis
from ..errors import StartupError, StoreUnavailable
from ..locks import FileLocks, KeyLocks
from ..metrics import Metrics
from ..net.dial import mask_url
from ..net.proxy import NoProxy, parse_proxy_url
from ..storage.base import Storage
from ..storage.bucket import make_client, split_storage_url
from ..storage.cleanup import Cleaner
from ..storage.disk import DiskStorage
from ..storage.s3 import S3Storage
from ..storage.usage import DB_NAME, Usage, UsageStore

log = logging.getLogger("goproxy.app")

Clock = Callable[[], float]


# The shared store's usage database under the local tier, when replicas share no Redis.
BUCKET_USAGE_DB = ".bucket-usage.db"


def s3_proxies(config: Config) -> dict[str, str]:
    """Return botocore's proxies for the object store: -proxy unless -no-proxy names the endpoint.

    Raises StartupError for a SOCKS proxy (botocore speaks only to HTTP proxies).
    """
    if not config.proxy:
        return {}
    host, port = "s3.amazonaws.com", 443
    if config.s3_endpoint:
        parts = urllib.parse.urlsplit(config.s3_endpoint)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if NoProxy(config.no_proxy).matches(host, port):
        return {}
    if parse_proxy_url(config.proxy).scheme.startswith("socks"):
        raise StartupError("the object store cannot be reached through a SOCKS proxy: use an http:// -proxy, "
                           f"or list {host} in -no-proxy")
    url = config.proxy if "://" in config.proxy else "http://" + config.proxy
    return {"http": url, "https": url}


def build_storage(config: Config) -> tuple[Storage, DiskStorage]:
    """Return the storage config asks for and its local disk.

    Without -storage both are the disk cache in -cache itself; with -storage s3://…, the bucket and
    its local read-through tier in -cache. Raises StartupError when the cache directory cannot be
    made, boto3 is missing, or the bucket cannot be reached (missing, credentials refused, store
    down).
    """
    root = os.path.abspath(config.cache_dir)
    try:
        os.makedirs(root, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the cache directory {root}: {exc.strerror}") from None
    local = DiskStorage(root)  # after makedirs: it maps the generation file in the directory
    if not config.storage:
        return local, local
    bucket, prefix = split_storage_url(config.storage)
    client = make_client(config.s3_endpoint, config.s3_region, s3_proxies(config), config.ca_file)
    storage = S3Storage(bucket, prefix, client, local)
    try:
        storage.check()
    except StoreUnavailable as exc:
        raise StartupError(str(exc)) from None
    log.info("storage: %s%s; local tier %s", config.storage,
             f" at {config.s3_endpoint}" if config.s3_endpoint else "", local.root)
    return storage, local


@dataclass
class Coordination:
    """How the processes (and replicas) sharing storage agree.

    It holds the locks per key, last-used times, cleaners, and the checks /ready makes of the
    shared parts. usage and cleaner are the shared store's; with a bucket, usages and cleaners also hold the
    local tier's.
    """

    locks: KeyLocks
    usage: Usage
    cleaner: Cleaner
    usages: list[Usage]
    cleaners: list[Cleaner]
    checks: list[tuple[str, Callable[[], None]]]

    def record(self, key: str, at: float | None = None) -> None:
        """Record a use of key (at that time, or now) in every usage store."""
        for u in self.usages:
            u.record(key, at)


def build_coordination(config: Config, storage: Storage, local: DiskStorage, metrics: Metrics, clock: Clock,
                       in_flight: Callable[[str], bool]) -> Coordination:
    """Return the locks, usage stores and cleaners for storage (Redis ones with -lock).

    in_flight(key) says a fetch of key runs in this process; without Redis, the processes
    sharing the local disk lock keys with files under it. Raises StartupError when Redis cannot
    be reached or redis-py is missing.
    """
    checks: list[tuple[str, Callable[[], None]]] = []
    if isinstance(storage, S3Storage):
        checks.append(("object store", storage.check))
    redis_locks = None
    if config.lock_url:
        client = connect_redis(config.lock_url, config.ca_file)
        namespace = f"goproxy:{config.storage or 'disk:' + local.root}"
        redis_locks = RedisLocks(client, namespace)
        log.info("replica coordination: %s", mask_url(config.lock_url))
        checks.append(("lock service", redis_locks.check))
    file_locks = FileLocks(local.root)
    locks: KeyLocks = redis_locks or file_locks
    held = redis_locks.held if redis_locks is not None else file_locks.busy
    shared_in_flight = lambda key: in_flight(key) or held(key)  # noqa: E731
    usage: Usage
    if redis_locks is not None:
        usage = RedisUsage(redis_locks.client, redis_locks.namespace, clock)
    else:
        usage = UsageStore(local.root, clock, name=BUCKET_USAGE_DB if storage is not local else DB_NAME)
    exclusive = (lambda: redis_locks.try_hold("cleanup")) if redis_locks is not None else None
    if storage is local:  # one cache: its size and age limits
        cleaner = Cleaner(storage, usage, clock, config.max_cache_age, config.max_cache_size, shared_in_flight,
                          metrics, exclusive)
        return Coordination(locks, usage, cleaner, [usage], [cleaner], checks)
    # The bucket ages out; the local tier keeps under the size limit.
    cleaner = Cleaner(storage, usage, clock, config.max_cache_age, 0, shared_in_flight, metrics, exclusive)
    local_usage = UsageStore(local.root, clock)
    local_cleaner = Cleaner(local, local_usage, clock, 0, config.max_cache_size,
                            lambda key: in_flight(key) or file_locks.busy(key))
    return Coordination(locks, usage, cleaner, [usage, local_usage], [cleaner, local_cleaner], checks)
