"""Artifacts in an S3-compatible bucket shared by replicas, with a local disk tier in front.

Hits come from local files; misses stream from the bucket while the local copy is written.
The -storage URL and the client that reaches the bucket are in bucket.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, cast

from ..errors import StoreUnavailable
from .base import Blob, Fence, Stat, Storage, check_fence
from .disk import DiskStorage

log = logging.getLogger(__name__)

# Staging files at least this big are uploaded in parts of PART_SIZE bytes (S3's minimum part is 5 MiB).
MULTIPART_MIN = 8 << 20
PART_SIZE = 8 << 20
# Objects streamed from the bucket are read this many bytes at a time.
READ_AHEAD = 1 << 20
_PRECONDITION = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
_ABSENT = ("NoSuchKey", "404", "NotFound")


class S3Storage(Storage):
    """Store committed artifacts as objects under prefix in bucket, through client (boto3).

    local is the read-through disk tier and the home of staging files: a hit on a file there is
    served with sendfile; a miss streams from the bucket while the local copy is written. A
    commit uploads the complete staging file (in parts when at least multipart_min bytes) and
    only then does the object appear, so no partial object ever sits under an artifact's key.
    Mutable artifacts (opened with immutable False) are read from the bucket, so every replica
    sees the newest; when the bucket cannot be reached they fall back to the local copy. The
    Stat token is the object's ETag. Errors reaching the bucket raise StoreUnavailable.
    """

    def __init__(self, bucket: str, prefix: str, client: Any, local: DiskStorage,
                 multipart_min: int = MULTIPART_MIN, part_size: int = PART_SIZE) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.bucket, self.prefix, self.client, self.local = bucket, prefix, client, local
        self.multipart_min, self.part_size = multipart_min, part_size
        self.where = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._client_error: type[Exception] = ClientError
        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        self._local_failing = False

    # Keys and errors.

    def _name(self, key: str) -> str:
        self.local.path(key)  # validates key: BadRequest when it could escape
        return self.prefix + key

    def _code(self, exc: Exception) -> str:
        if isinstance(exc, self._client_error):
            response: dict[str, Any] = getattr(exc, "response", {})
            return str(response.get("Error", {}).get("Code", ""))
        return ""

    def _unavailable(self, what: str, exc: Exception) -> StoreUnavailable:
        code = self._code(exc)
        reason = f"{code}: {exc}" if code and code not in str(exc) else str(exc)
        return StoreUnavailable(f"object store {self.where} unavailable ({what}): {reason}".replace("\n", " "))

    def check(self) -> None:
        """Make sure the bucket can be reached with our credentials; raise StoreUnavailable saying why not."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors as exc:
            code = self._code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StoreUnavailable(f"object store: bucket {self.bucket!r} does not exist") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreUnavailable(f"object store: access to bucket {self.bucket!r} denied: check the "
                                       "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
                                       ) from None
            raise self._unavailable("checking the bucket", exc) from None

    # Reading.

    def open(self, key: str, immutable: bool = False) -> Blob | None:
        """Return the artifact from the local tier (immutable ones) or streamed from the bucket.

        A mutable artifact falls back to its local copy when the bucket cannot be reached.
        Raises StoreUnavailable when the bucket cannot be reached and no local copy serves.
        """
        if immutable:
            blob = self.local.open(key, immutable=True)  # validates key, unless kept in memory
            if blob is not None:
                return blob
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except self._errors as exc:
            if self._code(exc) in _ABSENT:
                return None
            blob = None if immutable else self.local.open(key)
            if blob is None:
                raise self._unavailable(f"reading {key}", exc) from None
            log.warning("object store unreachable; serving the local copy of %s", key)
            return blob
        mtime = _mtime(resp)
        size = int(resp["ContentLength"])
        tee = _Tee(resp["Body"], size, self, key, mtime)
        return Blob(size, mtime, file=cast(BinaryIO, tee), sendfile=False)

    def open_kept(self, key: str) -> Blob | None:
        """Return the local tier's copy of key when it keeps it in memory, else None."""
        return self.local.open_kept(key)

    def stat(self, key: str) -> Stat | None:
        """Return the object's Stat (token: its ETag), or None when absent.

        When the bucket cannot be reached, the local copy's Stat stands in; raises
        StoreUnavailable when there is none.
        """
        try:
            return self._head(key)
        except StoreUnavailable:
            st = self.local.stat(key)
            if st is None:
                raise
            return st

    def _head(self, key: str) -> Stat | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except self._errors as exc:
            if self._code(exc) in _ABSENT:
                return None
            raise self._unavailable(f"looking up {key}", exc) from None
        return Stat(key, int(head["ContentLength"]), _mtime(head), str(head["ETag"]))

    def _keep_local(self, path: str, key: str, mtime: float) -> None:
        """Commit path, a complete copy of key, to the local tier; a disk that refuses only loses the copy."""
        try:
            self.local.commit(path, key, mtime)
            self._local_failing = False
        except Exception as exc:  # StorageError: the bucket has the artifact, the local copy is a cache
            with contextlib.suppress(OSError):
                os.unlink(path)
            if not self._local_failing:
                log.warning("cannot keep a local copy of %s: %s", key, exc)
            self._local_failing = True

    # Writing.

    @contextlib.contextmanager
    def writer(self, key: str, mtime: float | None = None, fence: Fence | None = None) -> Iterator[BinaryIO]:
        """Yield a local temp file; on a clean exit upload it (replacing key), then keep it locally."""
        tmp = f"{self.local.staging(key)}.{secrets.token_hex(4)}.part"
        try:
            with self.local.filled(key, tmp) as f:
                yield f
            stamp = self._upload(tmp, key, mtime, fence, exclusive=False)
            assert stamp is not None  # only an exclusive upload finds the key taken
            self._keep_local(tmp, key, stamp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def commit(self, path: str, key: str, mtime: float | None = None, fence: Fence | None = None) -> None:
        """Upload path as key unless key exists already (the first commit wins), then keep it locally.

        path is consumed. Raises LeaseLost when fence answers False, StoreUnavailable when the
        bucket cannot be reached.
        """
        try:
            stamp = self._upload(path, key, mtime, fence, exclusive=True)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        if stamp is None:  # committed by another holder first: theirs is served, from the bucket
            log.info("%s was committed by another replica first; keeping theirs", key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        self._keep_local(path, key, stamp)

    def _upload(self, path: str, key: str, mtime: float | None, fence: Fence | None,
                exclusive: bool) -> float | None:
        """Upload the complete file path as key; return its mtime stamp.

        Returns None when exclusive and key exists already. Nothing appears under key unless
        the whole file was sent.
        """
        name = self._name(key)
        stamp = mtime if mtime is not None else os.path.getmtime(path)
        extra: dict[str, Any] = {"Metadata": {"mtime": repr(stamp)}}
        cond = {"IfNoneMatch": "*"} if exclusive else {}
        size = os.path.getsize(path)
        try:
            if size < self.multipart_min:
                with open(path, "rb") as f:
                    data = f.read()
                check_fence(key, fence)
                self.client.put_object(Bucket=self.bucket, Key=name, Body=data, **extra, **cond)
            else:
                self._multipart(path, name, key, size, extra, cond, fence)
        except self._errors as exc:
            if exclusive and self._code(exc) in _PRECONDITION:
                return None
            raise self._unavailable(f"writing {key}", exc) from None
        return stamp

    def _multipart(self, path: str, name: str, key: str, size: int, extra: dict[str, Any],
                   cond: dict[str, str], fence: Fence | None) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=name, **extra)["UploadId"]
        try:
            parts = []
            with open(path, "rb") as f:
                for number in range(1, (size + self.part_size - 1) // self.part_size + 1):
                    body = f.read(self.part_size)
                    done = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload,
                                                   PartNumber=number, Body=body)
                    parts.append({"PartNumber": number, "ETag": done["ETag"]})
            check_fence(key, fence)
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload,
                                                  MultipartUpload={"Parts": parts}, **cond)
        except BaseException:
            with contextlib.suppress(*self._errors):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)
            raise

    def swap(self, key: str, data: bytes, expect: Stat | None) -> bool:
        """Put data under key only while it is still expect; return True if replaced.

        The condition is key's ETag being expect's (If-Match), or key being absent
        (If-None-Match: *) when expect is None. Never kept locally.
        """
        cond = {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect.token}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data, **cond)
        except self._errors as exc:
            if self._code(exc) in _PRECONDITION:
                return False
            raise self._unavailable(f"writing {key}", exc) from None
        return True

    # Staging files live in the local tier.

    def staging(self, key: str) -> str:
        """Return key's path in the local tier: partial downloads live beside it."""
        return self.local.staging(key)

    def create(self, key: str, path: str) -> BinaryIO:
        """Open path, a local staging file of key, for writing; raise StorageError."""
        return self.local.create(key, path)

    # Removing and listing.

    def delete(self, key: str, expect: Stat | None = None) -> bool:
        """Remove key from the bucket and its local copy; return True if the bucket held it.

        With expect, only while key's ETag is expect's. Raises StoreUnavailable when the bucket
        cannot be reached.
        """
        name = self._name(key)
        now = self._head(key)
        if now is None or (expect is not None and now.token != expect.token):
            return False
        try:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=name, IfMatch=now.token)
            except self._client_error as exc:
                if self._code(exc) in _PRECONDITION:
                    return False
                if self._code(exc) not in ("NotImplemented", "501"):
                    raise
                self.client.delete_object(Bucket=self.bucket, Key=name)  # a store without conditional deletes
        except self._errors as exc:
            raise self._unavailable(f"removing {key}", exc) from None
        self.local.delete(key)
        return True

    def scan(self) -> Iterator[Stat]:
        """Yield every object under the prefix (ETag tokens, last-modified times)."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self.prefix):]
                    if key:
                        yield Stat(key, int(obj["Size"]), obj["LastModified"].timestamp(), str(obj["ETag"]))
        except self._errors as exc:
            raise self._unavailable("listing the bucket", exc) from None

    def prune(self, prefix: str) -> None:
        """Drop the local tier's empty directories of prefix (a bucket has none)."""
        self.local.prune(prefix)


def _mtime(resp: Mapping[str, Any]) -> float:
    """Return the artifact time stamped in an object's metadata, else its Last-Modified time."""
    stamp = resp.get("Metadata", {}).get("mtime")
    try:
        return float(stamp)
    except (TypeError, ValueError):
        return float(resp["LastModified"].timestamp())


class _Tee(io.RawIOBase):
    """A bucket object's body read by the reply and written to a local temp file as it goes.

    When closed after every byte has passed, the temp file becomes the local tier's copy.
    """

    def __init__(self, body: Any, size: int, owner: S3Storage, key: str, mtime: float) -> None:
        super().__init__()
        self.body, self.size, self.owner, self.key, self.mtime = body, size, owner, key, mtime
        self.got = 0  # bytes read from the bucket
        self._chunk, self._at = b"", 0  # read ahead, and how much of it the reply has taken
        self.tmp = f"{owner.local.staging(key)}.{secrets.token_hex(4)}.part"
        self.copy: BinaryIO | None
        try:
            self.copy = owner.local.create(key, self.tmp)
        except Exception:  # StorageError: stream without keeping a copy
            self.copy = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._at == len(self._chunk):
            try:
                self._chunk = self.body.read(READ_AHEAD)  # few big reads: botocore's cost is per read
            except Exception as exc:  # botocore's read errors: the reply is cut, as a dropped connection
                raise ConnectionError(f"object store {self.owner.where}: reading {self.key}: {exc}") from None
            self._at = 0
            self.got += len(self._chunk)
            if self.copy is not None and self._chunk:
                try:
                    self.copy.write(self._chunk)
                except OSError:
                    self._drop()
        n = min(len(buffer), len(self._chunk) - self._at)
        buffer[:n] = memoryview(self._chunk)[self._at:self._at + n]
        self._at += n
        return n

    def _finish(self, copy: BinaryIO) -> None:
        copy.flush()
        os.fsync(copy.fileno())
        copy.close()
        self.copy = None
        self.owner._keep_local(self.tmp, self.key, self.mtime)

    def _drop(self) -> None:
        if self.copy is not None:
            self.copy.close()
            self.copy = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)

    def close(self) -> None:
        """Keep the local copy if every byte passed (fsynced here, after the reply went out), else drop it."""
        if not self.closed:
            if self.copy is not None and self.got == self.size:
                try:
                    self._finish(self.copy)
                except OSError:
                    self._drop()
            self._drop()
            self.body.close()
        super().close()
