"""Naming and reaching an S3-compatible bucket: the -storage URL and the boto3 client.

boto3 is imported only when a client is made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import StartupError

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_storage_url(text: str) -> str:
    """Return the -storage value normalised: "" (the disk cache) or "s3://BUCKET[/PREFIX]".

    Raises ValueError naming what is wrong (scheme, bucket name, prefix).
    """
    value = text.strip()
    if value in ("", "disk"):
        return ""
    if not value.startswith("s3://"):
        raise ValueError(f"{value!r}: want s3://BUCKET[/PREFIX] (or empty for the disk cache)")
    bucket, _, prefix = value[len("s3://"):].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{value!r}: invalid bucket name {bucket!r} (3-63 of a-z, 0-9, '.' and '-')")
    prefix = prefix.strip("/")
    if prefix and (any(p in ("", ".", "..") for p in prefix.split("/")) or "\\" in prefix
                   or any(c.isspace() or ord(c) < 32 for c in prefix)):
        raise ValueError(f"{value!r}: invalid key prefix {prefix!r}")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def split_storage_url(url: str) -> tuple[str, str]:
    """Return (bucket, prefix) of a normalised "s3://BUCKET[/PREFIX]"; prefix ends in "/" or is ""."""
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix + "/" if prefix else ""


def make_client(endpoint: str, region: str, proxies: Mapping[str, str], ca_file: str,
                max_connections: int = 64) -> Any:
    """Return a boto3 S3 client for endpoint, region, outbound proxies and ca_file.

    endpoint is "" for AWS, region "" for the standard lookup, proxies {"http": url, "https":
    url} or empty, and ca_file "" for the system's CAs; max_connections sizes the connection
    pool. Credentials come the standard AWS way (environment, shared files, roles). Raises
    StartupError when boto3 is not installed or the region cannot be found.
    """
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise StartupError("-storage s3://… needs boto3: pip install 'goproxy[s3]'") from None
    options: dict[str, Any] = {
        "retries": {"total_max_attempts": 2, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 60,
        "max_pool_connections": max_connections, "proxies": dict(proxies) or None}
    if endpoint:
        options["s3"] = {"addressing_style": "path"}  # a custom endpoint's host names no buckets
    try:
        return boto3.session.Session().client(
            "s3", endpoint_url=endpoint or None, region_name=region or ("us-east-1" if endpoint else None),
            verify=ca_file or None, config=Config(**options))
    except BotoCoreError as exc:
        raise StartupError(f"object storage: {exc} (set -s3-region or AWS_REGION)") from None
