"""Replicas on SeaweedFS: warm hits through a replica's local tier vs the disk-only proxy, and
hits that must come from the bucket vs reading SeaweedFS directly with boto3. Used by
bench/run.py; `python bench/replicas.py` runs this part alone and prints its rows."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Result, Wrk, best_alternating, run_alone  # noqa: E402
from tests.support.proc import Proc  # noqa: E402
from tests.support.seaweed import Seaweed, s3_env, weed_binary  # noqa: E402
from tests.support.upstream import Module, Upstream, generate  # noqa: E402

BUCKET = "bench"
SMALL = 20  # modules whose .info/.mod make the small-hit mix
ZIPS, ZIP_SIZE = 8, 20 << 20  # zips read from the bucket


def _start(args: list[str], env: dict[str, str]) -> tuple[Proc, str]:
    p = Proc(["-host", "127.0.0.1", "-port", "0", "-progress", "off", *args], env=env)
    port = int(p.wait_line(r"Set GOPROXY=http://localhost:(\d+),direct").group(1))
    return p, f"http://127.0.0.1:{port}"


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=600) as resp:
        got = 0
        while chunk := resp.read(1 << 20):
            got += len(chunk)
    return got


def _paths_script(work: Path, mods: list[Module]) -> Path:
    paths = [f"/{m.path}/@v/{m.version}.{ext}" for m in mods for ext in ("info", "mod")]
    script = work / "replica-paths.lua"
    script.write_text("local paths = {" + ",".join(json.dumps(x) for x in paths) + "}\nlocal i = 0\n"
                      "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n")
    return script


def measure(work: Path, wrk: Wrk) -> list[Result]:
    """Return the replica rows: small and big warm hits vs the disk-only proxy, bucket reads vs boto3."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the weed binary is missing (pip install -r requirements-dev.txt)")
    store = Seaweed(binary, work / "seaweed")
    upstream = Upstream()
    procs: list[Proc] = []
    try:
        store.client().create_bucket(Bucket=BUCKET)
        small = [upstream.add(generate(f"example.com/small{i}", "v1.0.0")) for i in range(SMALL)]
        big = [upstream.add(generate(f"example.com/big{i}", "v1.0.0", size=ZIP_SIZE)) for i in range(ZIPS)]
        env = {"PATH": os.environ["PATH"], **s3_env()}
        shared = ["-upstream", upstream.url, "-storage", f"s3://{BUCKET}", "-s3-endpoint", store.endpoint]
        disk, disk_url = _start(["-cache", str(work / "disk-only"), "-upstream", upstream.url], env)
        replica, replica_url = _start(["-cache", str(work / "tier-a"), *shared], env)
        procs += [disk, replica]
        for m in small + big[:1]:
            for ext in ("info", "mod", "zip"):
                for url in (disk_url, replica_url):
                    _get(f"{url}/{m.path}/@v/{m.version}.{ext}")
        script = _paths_script(work, small)
        rows: list[Result] = []
        ours, theirs = best_alternating(lambda: wrk(replica_url, 16, script=script),
                                        lambda: wrk(disk_url, 16, script=script), 3)
        ratio = ours[0] / theirs[0]
        rows.append((".info/.mod hits from a replica's local tier, 16 connections (req/s) vs the disk-only proxy",
                     f"{ours[0]:.0f}", f"{theirs[0]:.0f}", ratio, "≥ 0.9×", ratio >= 0.9))
        zip_path = f"/{big[0].path}/@v/v1.0.0.zip"
        ours, theirs = best_alternating(lambda: wrk(replica_url + zip_path, 4, seconds=4),
                                        lambda: wrk(disk_url + zip_path, 4, seconds=4), 3, key=1)
        ratio = ours[1] / theirs[1]
        rows.append((f"{ZIP_SIZE >> 20} MB zip hits from a replica's local tier, 4 connections (MB/s) vs the "
                     "disk-only proxy", f"{ours[1] / 2**20:.0f}", f"{theirs[1] / 2**20:.0f}", ratio, "≥ 0.9×",
                     ratio >= 0.9))
        for m in big[1:]:  # into the bucket through the first replica
            _get(f"{replica_url}/{m.path}/@v/v1.0.0.zip")
        cold, cold_url = _start(["-cache", str(work / "tier-b"), *shared], env)  # an empty local tier
        procs.append(cold)
        started = time.perf_counter()
        total = sum(_get(f"{cold_url}/{m.path}/@v/v1.0.0.zip") for m in big)
        via_replica = total / (time.perf_counter() - started)
        client = store.client()
        started = time.perf_counter()
        direct_total = sum(len(client.get_object(Bucket=BUCKET, Key=f"{m.path}/@v/v1.0.0.zip")["Body"].read())
                           for m in big)
        direct = direct_total / (time.perf_counter() - started)
        rows.append((f"{ZIPS} × {ZIP_SIZE >> 20} MB zips from the bucket through a replica with an empty local "
                     "tier, one at a time (MB/s) vs boto3 reading SeaweedFS directly", f"{via_replica / 2**20:.0f}",
                     f"{direct / 2**20:.0f}", via_replica / direct, "report", True))
        return rows
    finally:
        for p in procs:
            p.stop()
        upstream.close()
        store.stop()


def main() -> int:
    return run_alone("replicas", measure)


if __name__ == "__main__":
    sys.exit(main())
