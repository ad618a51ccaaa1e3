"""A checksum database of the tests' own that can grow: records, tiles and signed tree heads,
signed with a test Ed25519 key (the cryptography package signs; goproxy only verifies)."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from goproxy.modpath import escape_path, escape_version
from goproxy.sumdb import dirhash, tlog
from goproxy.sumdb.note import key_hash
from goproxy.sumdb.tiles import parse_tile_path, read_tile_data
from tests.support.upstream import Module, Upstream


class Signer:
    """An Ed25519 note signer for name, from a 32-byte seed; vkey is its verifier key text."""

    def __init__(self, name: str, seed: bytes) -> None:
        self.name = name
        self.key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
        public = b"\x01" + self.key.public_key().public_bytes_raw()
        self.hash = key_hash(name, public)
        self.vkey = f"{name}+{self.hash:08x}+{base64.b64encode(public).decode()}"

    def sign(self, text: str) -> bytes:
        """Return text as a note signed by this key."""
        sig = self.hash.to_bytes(4, "big") + self.key.sign(text.encode())
        return (text + "\n\u2014 " + self.name + " " + base64.b64encode(sig).decode() + "\n").encode()


class SumDBServer:
    """A growing checksum database named name, served under /sumdb/<name>/ of an upstream module proxy.

    add(module) appends the module version's go.sum lines as a record; filler(n) appends n records
    of modules nobody serves, to make the log cross tile boundaries.
    """

    def __init__(self, upstream: Upstream, name: str = "sumdb.airgap.test", seed: bytes = b"test key") -> None:
        self.upstream = upstream
        self.signer = Signer(name, seed)
        self.name = name
        self.records: list[bytes] = []
        self.hashes: list[bytes] = []  # stored hashes, in tlog's order
        self.ids: dict[str, int] = {}  # "module@version" → record id
        self.lock = threading.Lock()
        self.signed = self.signer.sign(tlog.format_tree(tlog.Tree(0, tlog.EMPTY_HASH)))
        upstream.fault = self._serve

    @property
    def vkey(self) -> str:
        """Return the verifier key the go command and the proxy are given."""
        return self.signer.vkey

    def _read(self, indexes: Sequence[int]) -> list[bytes]:
        return [self.hashes[i] for i in indexes]

    def _append(self, key: str, text: bytes) -> None:
        n = len(self.records)
        self.hashes.extend(tlog.stored_hashes(n, text, self._read))
        self.records.append(text)
        self.ids[key] = n

    def _sign(self) -> None:
        n = len(self.records)
        self.signed = self.signer.sign(tlog.format_tree(tlog.Tree(n, tlog.tree_hash(n, self._read))))

    def add(self, m: Module, serve: bool = True) -> Module:
        """Record m's hashes (and serve m from the upstream unless serve is False); sign a new tree."""
        zip_hash = dirhash.hash_zip(io.BytesIO(m.zip), f"{m.path}@{m.version}/")
        text = f"{m.path} {m.version} {zip_hash}\n{m.path} {m.version}/go.mod {dirhash.hash_gomod(m.mod)}\n"
        with self.lock:
            self._append(f"{m.path}@{m.version}", text.encode())
            self._sign()
        if serve:
            self.upstream.add(m)
        return m

    def filler(self, count: int) -> None:
        """Append count records of unserved modules, then sign the new tree."""
        with self.lock:
            for _ in range(count):
                i = len(self.records)
                h = "h1:" + base64.b64encode(hashlib.sha256(str(i).encode()).digest()).decode()
                self._append(f"filler.test/m{i}@v1.0.0", f"filler.test/m{i} v1.0.0 {h}\n".encode())
            self._sign()

    @property
    def size(self) -> int:
        """Return the number of records in the log."""
        with self.lock:
            return len(self.records)

    def answer(self, path: str) -> tuple[int, bytes]:
        """Return (status, body) for a path under /sumdb/<name>/."""
        with self.lock:
            if path == "supported":
                return 200, b""
            if path == "latest":
                return 200, self.signed
            if path.startswith("lookup/"):
                target = path[len("lookup/"):]
                for key, i in self.ids.items():
                    mod, _, ver = key.rpartition("@")
                    if f"{escape_path(mod)}@{escape_version(ver)}" == target:
                        return 200, f"{i}\n".encode() + self.records[i] + b"\n" + self.signed
                return 404, f"not found: {target}".encode()
            try:
                tile = parse_tile_path(path)
            except tlog.TlogError:
                return 404, b"not found"
            level = tile.l * tile.h
            if tile.l < 0 or (tile.n << tile.h) + tile.w > len(self.records) >> level:
                return 404, b"no such tile"
            return 200, read_tile_data(tile, self._read)

    def _serve(self, path: str, h: BaseHTTPRequestHandler) -> bool:
        prefix = f"/sumdb/{self.name}/"
        if not path.startswith(prefix):
            return False
        status, body = self.answer(path[len(prefix):])
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        return True
