"""The front page: one self-contained HTML page (inline CSS and SVG, no script) from a Status."""

from __future__ import annotations

import html
import re
import time

from .plot import traffic_plot
from .progress import Transfer, human
from .status.model import CacheStatus, ChecksumStatus, Counters, LogEntry, Status, UpstreamStatus

PAGE_TYPE = "text/html; charset=utf-8"
# How often, in seconds, the page reloads itself (a meta refresh: no script needed).
REFRESH = 10
# An example module pattern for the private-module advice when no private route is configured.
EXAMPLE_PATTERN = "corp.example.com"
# A Host header worth showing back: a DNS name, IPv4 or [IPv6] literal, and an optional port.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))(?::[0-9]{1,5})?")
# The page may load nothing from anywhere (its icon is an empty data: URL) and run no script.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--muted:#5b636e;--card:#f5f7fa;--line:#d4d9e0;
--accent:#2f6fd0;--ratio:#c8701e;--ok:#1a7f37;--bad:#c62828;--na:#80868f}
@media (prefers-color-scheme:dark){:root{--bg:#101318;--fg:#e3e6ea;--muted:#9aa3ad;--card:#1a1f26;
--line:#2e3640;--accent:#6ea2f0;--ratio:#f0a35a;--ok:#4cc36b;--bad:#f06a6a;--na:#7d848d}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:66rem;margin:0 auto;padding:.75rem}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.25rem 1rem;margin:.25rem 0 .75rem}
h1{font-size:1.5rem;margin:0}h2{font-size:1.1rem;margin:0 0 .5rem}
.muted,small{color:var(--muted)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,30rem),1fr));gap:.75rem}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.75rem 1rem;min-width:0}
section.wide{grid-column:1/-1}
p{margin:.4rem 0}
pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:.45rem .7rem;margin:.4rem 0;
white-space:pre-wrap;overflow-wrap:anywhere}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.2rem .6rem .2rem 0;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--muted)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:.4rem 0}dt{color:var(--muted)}dd{margin:0}
.na{color:var(--na);font-style:italic}
.badge{display:inline-block;padding:0 .5rem;border-radius:1rem;font-weight:600;border:1px solid currentColor}
.up,.ok{color:var(--ok)}.down,.bad,.ERROR,.CRITICAL{color:var(--bad)}.WARNING{color:var(--ratio)}
.meter{height:.65rem;background:var(--line);border-radius:4px;overflow:hidden;margin:.2rem 0}
.meter>span{display:block;height:100%;background:var(--accent)}
ul.plain{list-style:none;padding:0;margin:0}ul.plain>li{padding:.3rem 0;border-bottom:1px solid var(--line)}
ul.plain>li:last-child{border-bottom:0}
.name{font-weight:600;overflow-wrap:anywhere}
svg.plot{display:block;width:100%;height:auto}
svg.plot text{fill:var(--muted);font:12px system-ui,sans-serif}svg.plot .empty{font-size:13px}
svg.plot .bar{fill:var(--accent)}svg.plot .ratio{stroke:var(--ratio)}svg.plot .ratio-point{fill:var(--ratio)}
svg.plot .frame,svg.plot .grid{stroke:var(--line)}
footer{margin:1rem 0;color:var(--muted);font-size:.9rem}
a{color:var(--accent)}
"""

_NA = '<span class="na">not available</span>'


def e(value: object) -> str:
    """Return str(value) escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def proxy_address(host: str, fallback: str) -> str:
    """Return host (a request's Host header) when it is a plain host[:port], else fallback."""
    host = host.strip()
    return host if _HOST.fullmatch(host) else fallback


def duration(seconds: float) -> str:
    """Return a duration coarsely for people: "45 s", "3 min", "2 h 5 min", "4 d 3 h"."""
    s = max(0, int(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d} d {h} h" if h else f"{d} d"
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{m} min" if m else f"{s} s"


def _when(t: float | None, now: float) -> str:
    """Return a <time> for t as "5 min ago" (or "in 5 min"), the UTC time on hover; n/a for None."""
    if t is None:
        return _NA
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    if abs(now - t) < 1:
        text = "just now"
    else:
        text = f"{duration(now - t)} ago" if t < now else f"in {duration(t - now)}"
    return f'<time datetime="{stamp}" title="{stamp}">{e(text)}</time>'


def _ms(seconds: float) -> str:
    """Return seconds as milliseconds: "120 ms", or "0.4 ms" below 10 ms."""
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _percent(r: float | None) -> str:
    return '<span class="na">no artifact requests yet</span>' if r is None else f"{r * 100:.1f}%"


def _meter(fraction: float, label: str) -> str:
    pct = min(max(fraction, 0.0), 1.0) * 100
    return (f'<div class="meter" role="progressbar" aria-label="{e(label)}" aria-valuemin="0" aria-valuemax="100" '
            f'aria-valuenow="{pct:.0f}"><span style="width:{pct:.1f}%"></span></div>')


def _overall(status: Status) -> tuple[str, str]:
    """Return (text, class) summing up health: upstreams down, checksum failures."""
    states = [u.state for u in status.upstreams if u.state is not None]
    down = sum(1 for s in states if s == "down")
    if states and down == len(states):
        return "every upstream down: serving from the cache only", "bad"
    if down:
        return f"{down} of {len(states)} upstreams down", "bad"
    if status.checksum.failures:
        return f"{status.checksum.failures} checksum failures since start", "bad"
    return "serving", "ok"


def _usage(status: Status, address: str, scheme: str) -> str:
    url = f"{scheme}://{address}"
    patterns = [u.route for u in status.upstreams if u.route]
    private = ",".join(patterns) if patterns else EXAMPLE_PATTERN
    sumdb = status.checksum.proxied
    if "sum.golang.org" in sumdb:
        checks = ("Leave <code>GOSUMDB</code> at its default: the go command checks every module against "
                  "sum.golang.org, asking through this proxy's <code>/sumdb/</code>, so it works without "
                  "direct internet access too.")
    else:
        checks = ("This proxy does not serve sum.golang.org under <code>/sumdb/</code>: the go command "
                  "reaches it directly, or set <code>GOSUMDB</code> to a checksum database it can reach.")
    routed = (f"This proxy fetches modules matching <code>{e(private)}</code> from private upstreams."
              if patterns else f"(<code>{e(EXAMPLE_PATTERN)}</code> stands for your company's module paths.)")
    return f"""<section class="wide" id="use"><h2>Use it</h2>
<pre><code id="goproxy-line">export GOPROXY={e(url)},direct</code></pre>
<p><code>,direct</code> lets the go command fetch directly what the proxy cannot find; leave it out on
hosts that must never reach the internet.</p>
<p>{checks}</p>
<p>Private modules are not in the public checksum database, so tell the go command not to look them up
there, while still fetching them through this proxy:</p>
<pre><code>export GONOSUMDB={e(private)}</code></pre>
<p>or <code>GOPRIVATE={e(private)}</code> together with <code>GONOPROXY=none</code>. <code>GOPRIVATE</code>
alone also sets <code>GONOPROXY</code>: the go command would then bypass this proxy for those modules.
{routed}</p>
</section>"""


def _upstream_row(u: UpstreamStatus, now: float) -> str:
    route = f"<code>{e(u.route)}</code>" if u.route else "public"
    if u.state is None:  # health is not tracked: every health figure is not available
        state = success = error = latency = _NA
    else:
        state = f'<span class="{e(u.state)}">{e(u.state)}</span>'
        success = "never" if u.last_success is None else _when(u.last_success, now)
        error = "none" if not u.last_error else e(u.last_error)
        if u.last_error and u.last_error_at is not None:
            error = f"{_when(u.last_error_at, now)}: {error}"
        latency = _NA if u.median_latency is None else _ms(u.median_latency)
    return (f'<tr><td class="name">{e(u.name)}</td><td>{route}</td><td>{state}</td><td>{success}</td>'
            f"<td>{error}</td><td>{latency}</td><td>{u.requests}</td><td>{u.errors}</td></tr>")


def _checksum(c: ChecksumStatus) -> str:
    served = ", ".join(c.proxied) or "none"
    if not c.verifying:
        verify = "<dt>verification</dt><dd>off (<code>-gosumdb off</code>)</dd>"
    else:
        size = _NA if c.tree_size is None else f"{c.tree_size} records"
        verify = (f"<dt>verifying against</dt><dd>{e(c.name)}</dd>"
                  f"<dt>newest verified tree</dt><dd>{size}</dd>"
                  f"<dt>verifications</dt><dd>{c.verified} ok, "
                  f'<span class="{"bad" if c.failures else ""}">{c.failures} failed</span>, '
                  f"{c.unavailable} unavailable</dd>")
    return f"<dl>{verify}<dt>served under /sumdb/</dt><dd>{e(served)}</dd></dl>"


def _health(status: Status) -> str:
    rows = "\n".join(_upstream_row(u, status.now) for u in status.upstreams)
    workers = _NA if status.workers is None else str(status.workers)
    return f"""<section class="wide" id="health"><h2>Health</h2>
<dl><dt>version</dt><dd>{e(status.version)}</dd><dt>up</dt><dd>{e(duration(status.uptime))}
(since {_when(status.started, status.now)})</dd><dt>workers</dt><dd>{workers}</dd></dl>
<div class="scroll"><table><thead><tr><th>upstream</th><th>for</th><th>state</th><th>last success</th>
<th>last error</th><th>median latency</th><th>requests</th><th>errors</th></tr></thead>
<tbody>{rows}</tbody></table></div>
<h2 style="margin-top:.75rem">Checksum database</h2>{_checksum(status.checksum)}
</section>"""


def _cache(c: CacheStatus, now: float) -> str:
    limit = "unlimited" if not c.max_bytes else human(c.max_bytes)
    age = "forever" if not c.max_age else duration(c.max_age)
    cleanup = (f"<dt>next cleanup</dt><dd>{_when(c.next_cleanup, now)} "
               f"<small>(every {e(duration(c.cleanup_interval))}; unused versions kept {e(age)})</small></dd>")
    n = c.count
    if n is None:
        return (f'<section id="cache"><h2>Cache</h2><p class="na">Counting the cache; the figures show at the next '
                f"refresh.</p><dl><dt>size limit</dt><dd>{e(limit)}</dd>{cleanup}</dl></section>")
    meter = _meter(n.bytes / c.max_bytes, "cache size against its limit") if c.max_bytes else ""
    oldest = (f"{_when(n.oldest_use, now)} <small class=\"name\">{e(n.oldest_name)}</small>"
              if n.oldest_use is not None else "none")
    return f"""<section id="cache"><h2>Cache</h2>
<dl><dt>modules</dt><dd>{n.modules}</dd><dt>versions</dt><dd>{n.versions}</dd>
<dt>size</dt><dd>{e(human(n.bytes))} of {e(limit)}{meter}</dd>
<dt>oldest last use</dt><dd>{oldest}</dd>{cleanup}
<dt>checksum data</dt><dd>{n.sumdb_files} files, {e(human(n.sumdb_bytes))}</dd></dl>
<p><small>Counted {_when(n.counted_at, now)} in {n.seconds:.1f} s; recounted every few minutes while
this page is open.</small></p></section>"""


def _traffic(t: Counters, status: Status) -> str:
    return f"""<section id="traffic"><h2>Traffic since start</h2>
<dl><dt>requests</dt><dd>{t.requests}</dd>
<dt>hit ratio</dt><dd>{_percent(t.hit_ratio)} <small>({t.hits} hits, {t.misses} misses, {t.stale} stale)</small></dd>
<dt>served</dt><dd>{e(human(t.bytes_served))}</dd>
<dt>upstream fetches</dt><dd>{t.upstream_requests} <small>({e(human(t.bytes_fetched))})</small></dd>
<dt>upstream errors</dt><dd><span class="{"bad" if t.upstream_errors else ""}">{t.upstream_errors}</span></dd></dl>
{traffic_plot(status.history, status.now)}
</section>"""


def _download(d: Transfer) -> str:
    if d.total:
        fraction = d.done / d.total
        eta = f" · {duration((d.total - d.done) / d.speed)} left" if d.speed > 0 and d.done < d.total else ""
        figures = f"{human(d.done)} of {human(d.total)} · {fraction * 100:.0f}% · {human(d.speed)}/s{eta}"
        bar = _meter(fraction, f"download of {d.name}")
    else:
        figures, bar = f"{human(d.done)} · size not known yet · {human(d.speed)}/s", ""
    return (f'<li class="download"><span class="name">{e(d.name)}</span>{bar}'
            f"<small>{e(figures)}</small></li>")


def _downloads(downloads: tuple[Transfer, ...]) -> str:
    if not downloads:
        return '<section id="downloads"><h2>Downloads in progress</h2><p class="muted">None right now.</p></section>'
    items = "\n".join(_download(d) for d in downloads)
    return f'<section id="downloads"><h2>Downloads in progress</h2><ul class="plain">{items}</ul></section>'


def _warning(w: LogEntry, now: float) -> str:
    return (f'<li class="warning"><span class="{e(w.level)}">{e(w.level)}</span> {_when(w.time, now)} '
            f"<small>{e(w.logger)}</small><br/><code>{e(w.message)}</code></li>")


def _warnings(warnings: tuple[LogEntry, ...], now: float) -> str:
    if not warnings:
        body = '<p class="muted">None since start.</p>'
    else:
        body = '<ul class="plain">' + "\n".join(_warning(w, now) for w in warnings) + "</ul>"
    return f'<section id="warnings"><h2>Last warnings and errors</h2>{body}</section>'


def render(status: Status, address: str, scheme: str = "http") -> bytes:
    """Return the page for status, telling the go command to use scheme://address.

    address is shown as given (escaped): pass it through proxy_address first. The markup is
    well-formed XML as well as HTML; it reloads itself every REFRESH seconds.
    """
    text, cls = _overall(status)
    return f"""<!DOCTYPE html>
<html lang="en"><head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<meta http-equiv="Content-Security-Policy" content="{_CSP}"/>
<meta http-equiv="refresh" content="{REFRESH}"/>
<meta name="color-scheme" content="light dark"/>
<link rel="icon" href="data:,"/>
<title>goproxy at {e(address)}</title>
<style>{_CSS}</style>
</head><body><main>
<header><h1>goproxy</h1><span class="muted">a caching Go module proxy · {e(status.version)}</span>
<span class="badge {cls}">{e(text)}</span></header>
<div class="grid">
{_usage(status, address, scheme)}
{_health(status)}
{_cache(status.cache, status.now)}
{_traffic(status.traffic, status)}
{_downloads(status.downloads)}
{_warnings(status.warnings, status.now)}
</div>
<footer>Refreshes every {REFRESH} s. The same data for scripts: <a href="/status.json">/status.json</a>;
Prometheus metrics: <a href="/metrics">/metrics</a>.</footer>
</main></body></html>
""".encode()
