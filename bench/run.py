"""make bench: goproxy measured against nginx and the direct upstream, on loopback, in one run.

Prints one markdown table and writes it to bench/results.md. Every figure is a ratio of two
measurements taken in the same run, so the machine's speed cancels out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import access, parallel, replicas  # noqa: E402
from bench.delay import Delayed  # noqa: E402
from tests.support import gotestproxy  # noqa: E402
from tests.support.gotestproxy import GoTestProxy, go_env  # noqa: E402
from tests.support.proc import Proc  # noqa: E402

BIG_ZIP = 200 << 20


@dataclass
class Row:
    """Row is one line of the results table."""

    what: str
    ours: str
    theirs: str
    ratio: float
    goal: str
    ok: bool


def go_binary() -> str:
    for c in (Path(sys.executable).parent / "go", shutil.which("go")):
        if c and os.path.exists(c):
            return str(c)
    sys.exit("bench: the go command is missing (make bench installs the dev requirements)")


def module_set(go: str, upstream: str, work: Path, goroot: Path) -> list[str]:
    """module_set is every module version of Go's test proxy that downloads cleanly from upstream.

    Pass the proxy as upstream: it refuses a few versions the go command downloads directly
    (a go.mod naming another module), which would fail every run through it.
    """
    candidates = []
    for f in sorted((goroot / "src/cmd/go/testdata/mod").glob("*.txt")):
        name = f.name[:-4]
        i = name.rfind("_v")
        if i < 0:
            continue
        path, version = name[:i].replace("_", "/"), name[i + 1:]
        if "!" in path or "!" in version or path.startswith("golang.org/toolchain"):
            continue
        candidates.append(f"{path}@{version}")
    env = go_env(work, upstream, modcache="probe")
    proc = subprocess.run([go, "mod", "download", "-json", *candidates], env=env, cwd=work,
                          capture_output=True, text=True, timeout=600)
    good, dec, pos, out = [], json.JSONDecoder(), 0, proc.stdout
    while pos < len(out.strip()):
        while out[pos].isspace():
            pos += 1
        obj, pos = dec.raw_decode(out, pos)
        if "Error" not in obj:
            good.append(f"{obj['Path']}@{obj['Version']}")
    return good


# The go command's module cache goes to memory where it can: extracting 186 modules to this
# machine's disk took anywhere from 0.25 s to 0.8 s a run (writeback), more than the proxy's share.
CLIENT_ROOT = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None


def timed_download(go: str, work: Path, goproxy: str, mods: list[str], tag: str) -> float:
    modcache = (CLIENT_ROOT / f"{work.name}-modcache-{tag}") if CLIENT_ROOT else work / f"modcache-{tag}"
    if modcache.exists():
        subprocess.run(["chmod", "-R", "u+w", str(modcache)], check=False)
    shutil.rmtree(modcache, ignore_errors=True)
    env = go_env(work, goproxy, modcache=str(modcache))
    os.sync()  # the last run's files are written out now, not during this one
    started = time.perf_counter()
    proc = subprocess.run([go, "mod", "download", *mods], env=env, cwd=work, capture_output=True, text=True,
                          timeout=900)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bench: go mod download via {goproxy} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def best_of(n: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(n))


def best_of_alternating(n: int, a: Callable[[], float], b: Callable[[], float]) -> tuple[float, float]:
    """Return the best of n runs of a and of b, run in turns (a b b a a b ...), so what the
    machine does meanwhile (other jobs, writeback) falls on both alike."""
    runs_a: list[float] = []
    runs_b: list[float] = []
    for i in range(n):
        for fn, runs in ((a, runs_a), (b, runs_b)) if i % 2 == 0 else ((b, runs_b), (a, runs_a)):
            runs.append(fn())
    return min(runs_a), min(runs_b)


class Nginx:
    """Nginx serves root as static files on 127.0.0.1:port."""

    def __init__(self, root: Path, work: Path, port: int) -> None:
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types {{ application/json info; application/zip zip; text/plain mod list; }}
  default_type text/plain;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ try_files $uri =404; }}
  }}
}}
""")
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["curl", "-fs", "-o", "/dev/null", self.url + "/"], check=False).returncode not in (0, 22):
            if time.monotonic() > deadline:
                sys.exit("bench: nginx did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, connections: int, seconds: int = 5, script: Path | None = None,
        threads: int = 2) -> tuple[float, float, float, float]:
    """wrk returns (requests/s, bytes/s, p50 ms, p99 ms)."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps_line = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps_line is not None, out
    rps = float(rps_line.group(1))
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    assert tr is not None, out
    unit = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[tr.group(2)]
    p = dict(re.findall(r"\s(50|99)%\s+([\d.]+\w+)", out))
    return rps, float(tr.group(1)) * unit, _ms(p.get("50", "0ms")), _ms(p.get("99", "0ms"))


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return 0.0
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    assert m is not None, text
    return int(m.group(1)) / 1024


def server_peak_rss_mb(p: Proc) -> float:
    """Return the sum of the peak RSS of the proxy's parent and every worker it started."""
    pids = [p.proc.pid] + [int(x) for x in re.findall(r"started \(pid (\d+)\)", p.text())]
    total = 0.0
    for pid in pids:
        try:
            total += peak_rss_mb(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def server_cpu_seconds(p: Proc) -> float:
    """Return the CPU time (user and system) the proxy's parent and workers have used so far."""
    pids = [p.proc.pid] + [int(x) for x in re.findall(r"started \(pid (\d+)\)", p.text())]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk_cores(p: Proc, url: str, connections: int, script: Path) -> tuple[tuple[float, float, float, float], float]:
    """Run wrk (5 s) against p; return wrk's figures and the cores p used meanwhile (CPU s per s)."""
    cpu, started = server_cpu_seconds(p), time.monotonic()
    figures = wrk(url, connections, script=script)
    return figures, (server_cpu_seconds(p) - cpu) / (time.monotonic() - started)


def start_proxy(cache: Path, upstream: str, log: Path, *extra: str) -> tuple[Proc, str]:
    env = {"PATH": os.environ["PATH"]}
    p = Proc(["-host", "127.0.0.1", "-port", "0", "-cache", str(cache), "-upstream", upstream, *extra], env=env)
    port = int(p.wait_line(r"Set GOPROXY=http://localhost:(\d+),direct").group(1))
    return p, f"http://127.0.0.1:{port}"


def main() -> int:
    for tool in ("nginx", "wrk", "curl"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (make bench installs it with apt-get)")
    go = go_binary()
    goroot = Path(subprocess.run([go, "env", "GOROOT"], capture_output=True, text=True, check=True).stdout.strip())
    work = Path(tempfile.mkdtemp(prefix="goproxy-bench-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user
    rows: list[Row] = []
    notes: list[str] = []
    upstream = GoTestProxy(gotestproxy.build(go, goroot), goroot)
    procs: list[Proc] = []
    nginx: Nginx | None = None
    try:
        probe, probe_url = start_proxy(work / "probe-cache", upstream.url, work / "probe.log")
        try:
            mods = module_set(go, probe_url, work, goroot)
        finally:
            probe.stop()
        print(f"bench: {len(mods)} module versions", file=sys.stderr)
        cache = work / "cache"

        # 4. Cold fetch: through the proxy (empty cache) vs straight from the upstream, in turns.
        directs, colds, rss_cold = [], [], 0.0
        for i in range(3):
            directs.append(timed_download(go, work, upstream.url, mods, "direct"))
            shutil.rmtree(cache, ignore_errors=True)
            p, url = start_proxy(cache, upstream.url, work / f"cold{i}.log")
            colds.append(timed_download(go, work, url, mods, "cold"))
            rss_cold = max(rss_cold, server_peak_rss_mb(p))
            p.stop()
        direct, cold = min(directs), min(colds)
        rows.append(Row(f"cold `go mod download` of {len(mods)} versions vs direct upstream (loopback)",
                        f"{cold:.2f}s", f"{direct:.2f}s", cold / direct, "≤ 1.5×", cold / direct <= 1.5))
        # The same with every upstream request 20 ms away, as a distant proxy.golang.org is.
        delayed = Delayed(upstream.url, 0.020)
        try:
            far_direct = timed_download(go, work, delayed.url, mods, "far-direct")
            shutil.rmtree(cache, ignore_errors=True)
            p, url = start_proxy(cache, delayed.url, work / "far.log")
            far = timed_download(go, work, url, mods, "far-cold")
            p.stop()
        finally:
            delayed.close()
        rows.append(Row(f"cold `go mod download` of {len(mods)} versions vs direct, upstream +20 ms per request",
                        f"{far:.2f}s", f"{far_direct:.2f}s", far / far_direct, "≤ 1.0×", far / far_direct <= 1.0))
        shutil.rmtree(cache, ignore_errors=True)
        p, url = start_proxy(cache, upstream.url, work / "refill.log")
        timed_download(go, work, url, mods, "refill")
        p.stop()

        # Warm cache: the proxy vs nginx serving the same directory.
        big = cache / "example.com/big/@v/v1.0.0.zip"
        big.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as f:
            for _ in range(BIG_ZIP >> 20):
                f.write(os.urandom(1 << 20))
        p, url = start_proxy(cache, upstream.url, work / "warm.log")
        procs.append(p)
        nginx = Nginx(cache, work, free_port())
        ng_url = nginx.url
        for _ in range(2):  # untimed: each worker keeps the small files it serves in memory (nginx: the page cache)
            timed_download(go, work, url, mods, "warm")
        warm, warm_ng = best_of_alternating(5, lambda: timed_download(go, work, url, mods, "warm"),
                                            lambda: timed_download(go, work, ng_url, mods, "nginx"))
        rows.append(Row(f"warm `go mod download` of {len(mods)} versions vs nginx", f"{warm:.2f}s",
                        f"{warm_ng:.2f}s", warm / warm_ng, "≤ 1.05×", warm / warm_ng <= 1.05))

        # 2. Cache-hit throughput for .info/.mod with keep-alive.
        small = [m for m in mods if "+" not in m][:20]
        script = work / "paths.lua"
        paths = []
        for m in small:
            path, version = m.split("@")
            paths += [f"/{path}/@v/{version}.info", f"/{path}/@v/{version}.mod"]
        script.write_text("local paths = {" + ",".join(json.dumps(x) for x in paths) + "}\nlocal i = 0\n"
                          "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n")
        # One connection, one request at a time, as the go command fetches: what a warm download
        # pays per request.
        seq, seq_ng = wrk(url, 1, script=script, threads=1), wrk(nginx.url, 1, script=script, threads=1)
        notes.append(f"Sequential keep-alive hits (one connection, wrk): p50 {seq[2]:.3f} ms, p99 {seq[3]:.3f} ms, "
                     f"{seq[0]:.0f} req/s; nginx p50 {seq_ng[2]:.3f} ms, p99 {seq_ng[3]:.3f} ms, "
                     f"{seq_ng[0]:.0f} req/s.")
        lat = []
        hits64 = (0.0, 0.0, 0.0, 0.0)
        cores = 0.0
        for conns in (16, 64):
            ours, cores = wrk_cores(p, url, conns, script)
            theirs = wrk(nginx.url, conns, script=script)
            lat.append((conns, ours))
            ratio = ours[0] / theirs[0]
            goal = 0.3 if conns == 64 else 0.25
            rows.append(Row(f".info/.mod hits, {conns} keep-alive connections (req/s) vs nginx",
                            f"{ours[0]:.0f}", f"{theirs[0]:.0f}", ratio, f"≥ {goal}×", ratio >= goal))
            if conns == 64:
                hits64 = ours
        rows.append(Row(".info/.mod hits, 64 connections: p99 latency (ms) vs the 25 ms goal", f"{hits64[3]:.1f}",
                        "25", hits64[3] / 25, "≤ 1.0×", hits64[3] <= 25))
        rss_small = server_peak_rss_mb(p)
        one, one_url = start_proxy(cache, upstream.url, work / "one.log", "-workers", "1")
        procs.append(one)
        single, single_cores = wrk_cores(one, one_url, 64, script)
        one.stop()
        notes.append(f"Cores used by the proxy during the 64-connection hit runs: {cores:.2f} with a worker per CPU, "
                     f"{single_cores:.2f} with `-workers 1` (this machine has {os.cpu_count()}, shared with wrk).")
        ratio = hits64[0] / single[0]
        rows.append(Row(".info/.mod hits, 64 connections (req/s) vs `-workers 1`", f"{hits64[0]:.0f}",
                        f"{single[0]:.0f}", ratio, "≥ 3×", ratio >= 3))

        # 3. Large-zip hit throughput.
        ours = wrk(url + "/example.com/big/@v/v1.0.0.zip", 4, seconds=8)
        theirs = wrk(nginx.url + "/example.com/big/@v/v1.0.0.zip", 4, seconds=8)
        ratio = ours[1] / theirs[1]
        rows.append(Row("200 MB zip hits, 4 connections (MB/s) vs nginx", f"{ours[1] / 2**20:.0f}",
                        f"{theirs[1] / 2**20:.0f}", ratio, "≥ 0.8×", ratio >= 0.8))
        rss_big = server_peak_rss_mb(p)

        # 5. Parallel Range downloads, and memory while four big zips download at once.
        one_conn, four_conns = parallel.measure(work)
        ratio = one_conn / four_conns
        rows.append(Row("parallel Range download of a 24 MB zip, 4 connections vs 1 (4 MB/s per connection)",
                        f"{four_conns:.2f}s", f"{one_conn:.2f}s", ratio, "≥ 3.5×", ratio >= 3.5))
        rss_four = parallel.peak_rss_four_big(work)
        rows.append(Row("peak RSS of the whole server (parent + workers) while four 200 MB zips download at once "
                        "(MB) vs the 150 MB budget", f"{rss_four:.0f}", "150", rss_four / 150, "< 1.00×",
                        rss_four < 150))

        # 7. Replicas on SeaweedFS: local-tier hits vs the disk-only proxy, bucket reads vs boto3.
        for what, ours_text, theirs_text, replica_ratio, replica_goal, ok in replicas.measure(work, wrk):
            rows.append(Row(what, ours_text, theirs_text, replica_ratio, replica_goal, ok))

        # 8. Access control: hits with -auth-file and 20 rules vs neither; hits over TLS vs plain http.
        rows += [Row(*result) for result in access.measure(work, wrk)]

        # 6. Memory and latency.
        notes.append(f"Peak RSS of the proxy (parent and workers summed): {rss_cold:.0f} MB during the cold fetches, "
                     f"{rss_small:.0f} MB "
                     f"during the .info/.mod hit runs, {rss_big:.0f} MB after the 200 MB zip runs.")
        for conns, (_, _, p50, p99) in lat:
            notes.append(f"Hit latency at {conns} connections: p50 {p50:.2f} ms, p99 {p99:.2f} ms.")
    finally:
        for p in procs:
            p.stop()
        if nginx:
            nginx.stop()
        upstream.stop()
        for modcache in CLIENT_ROOT.glob(f"{work.name}-modcache-*") if CLIENT_ROOT else ():
            subprocess.run(["chmod", "-R", "u+w", str(modcache)], check=False)
            shutil.rmtree(modcache, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    table = ["| figure | goproxy | reference | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r.what} | {r.ours} | {r.theirs} | {r.ratio:.2f}× | {r.goal} | {'yes' if r.ok else 'NO'} |")
    text = "\n".join(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text)
    stamp = time.strftime("%Y-%m-%d")
    header = f"# Benchmark results ({stamp}, {os.cpu_count()} cores, Python {sys.version.split()[0]})\n\n"
    (ROOT / "bench" / "results.md").write_text(header + text + (ROOT / "bench" / "NOTES.md").read_text()
                                               if (ROOT / "bench" / "NOTES.md").exists() else header + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
