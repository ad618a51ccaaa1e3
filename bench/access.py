"""Access control on the hit path: .info/.mod hits with -auth-file and 20 module rules vs without, and
over TLS vs plain http. Used by bench/run.py; `python bench/access.py` runs this part alone and prints
its rows."""

from __future__ import annotations

import base64
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
from goproxy.auth import hash_secret  # noqa: E402
from tests.support import certs as test_certs  # noqa: E402
from tests.support.proc import Proc  # noqa: E402
from tests.support.upstream import Module, Upstream, generate  # noqa: E402

SMALL = 20  # modules whose .info/.mod make the hit mix
CONNECTIONS = 16
SECRET = "bench-secret"


def rules(count: int = 20) -> list[dict[str, object]]:
    """Return count rules a hit of example.com/small* walks through: deny and offline rules for other
    modules (some with version ranges), then the allow that decides."""
    out: list[dict[str, object]] = []
    for i in range(count - 1):
        if i % 2:
            out.append({"pattern": f"corp{i}.example/*", "action": "offline"})
        else:
            out.append({"pattern": f"example.com/evil{i}", "versions": [">=v1.2.0,<v1.2.4", "v2.0.0"],
                        "action": "deny", "reason": f"SEC-{i}"})
    out.append({"pattern": "example.com", "action": "allow"})
    return out


def _start(args: list[str], scheme: str = "http") -> tuple[Proc, str]:
    p = Proc(["-host", "127.0.0.1", "-port", "0", "-progress", "off", *args], env={"PATH": os.environ["PATH"]})
    port = int(p.wait_line(rf"Set GOPROXY={scheme}://localhost:(\d+),direct").group(1))
    return p, f"{scheme}://127.0.0.1:{port}"


def _script(work: Path, name: str, mods: list[Module], authorization: str = "") -> Path:
    paths = [f"/{m.path}/@v/{m.version}.{ext}" for m in mods for ext in ("info", "mod")]
    script = work / f"{name}.lua"
    header = f"wrk.headers[\"Authorization\"] = {json.dumps(authorization)}\n" if authorization else ""
    script.write_text(header + "local paths = {" + ",".join(json.dumps(x) for x in paths) + "}\nlocal i = 0\n"
                      "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n")
    return script


def per_hit_cost(authorization: str, rounds: int = 200_000) -> float:
    """Return the microseconds a remembered credential check and a remembered rules decision take."""
    from goproxy.auth import Credentials
    from goproxy.rules import parse_rules

    creds = Credentials({"ci": hash_secret(SECRET)})
    ruled = parse_rules(rules())
    creds.check(authorization)
    started = time.perf_counter()
    for _ in range(rounds):
        creds.check(authorization)
        ruled.decide("example.com/small1", "v1.0.0")
    return (time.perf_counter() - started) / rounds * 1e6


def measure(work: Path, wrk: Wrk) -> list[Result]:
    """Return the rows: hits with credentials and 20 rules vs none, and hits over TLS vs plain http."""
    upstream = Upstream()
    procs: list[Proc] = []
    try:
        mods = [upstream.add(generate(f"example.com/small{i}", "v1.0.0")) for i in range(SMALL)]
        cache = work / "access-cache"
        clients = work / "access-clients"
        clients.write_text(f"ci:{hash_secret(SECRET)}\n")  # the default cost: a hit must not pay it
        config = work / "access-rules.json"
        config.write_text(json.dumps({"rules": rules()}))
        (work / "access-certs").mkdir(exist_ok=True)
        certs = test_certs.make(work / "access-certs")
        plain, plain_url = _start(["-cache", str(cache), "-upstream", upstream.url])
        guarded, guarded_url = _start(["-cache", str(cache), "-upstream", upstream.url, "-config", str(config),
                                       "-auth-file", str(clients)])
        tls, tls_url = _start(["-cache", str(cache), "-upstream", upstream.url, "-tls-cert", str(certs.cert),
                               "-tls-key", str(certs.key)], "https")
        procs += [plain, guarded, tls]
        for m in mods:
            for ext in ("info", "mod"):
                with urllib.request.urlopen(f"{plain_url}/{m.path}/@v/{m.version}.{ext}", timeout=60) as resp:
                    resp.read()
        open_script = _script(work, "access-open", mods)
        authorization = "Basic " + base64.b64encode(f"ci:{SECRET}".encode()).decode()
        auth_script = _script(work, "access-auth", mods, authorization)
        wrk(guarded_url, CONNECTIONS, seconds=2, script=auth_script)  # every worker verifies the secret once
        rows: list[Result] = []
        ours, theirs = best_alternating(lambda: wrk(guarded_url, CONNECTIONS, seconds=3, script=auth_script),
                                        lambda: wrk(plain_url, CONNECTIONS, seconds=3, script=open_script), 5)
        ratio = ours[0] / theirs[0]
        rows.append((f".info/.mod hits with -auth-file and {len(rules())} module rules, {CONNECTIONS} connections "
                     "(req/s) vs neither", f"{ours[0]:.0f}", f"{theirs[0]:.0f}", ratio, "≥ 0.9×", ratio >= 0.9))
        ours, theirs = best_alternating(lambda: wrk(tls_url, CONNECTIONS, seconds=3, script=open_script),
                                        lambda: wrk(plain_url, CONNECTIONS, seconds=3, script=open_script), 5)
        ratio = ours[0] / theirs[0]
        rows.append((f".info/.mod hits over TLS, {CONNECTIONS} keep-alive connections (req/s) vs plain http",
                     f"{ours[0]:.0f}", f"{theirs[0]:.0f}", ratio, "report", True))
        check = per_hit_cost(authorization)
        rows.append((f"credential check and {len(rules())}-rule decision per hit, in process (µs) vs one hit's "
                     f"share of a core at the plain rate", f"{check:.1f}", f"{2e6 / theirs[0]:.0f}",
                     check / (2e6 / theirs[0]), "report", True))
        return rows
    finally:
        for p in procs:
            p.stop()
        upstream.close()


def main() -> int:
    return run_alone("access", measure)


if __name__ == "__main__":
    sys.exit(main())
