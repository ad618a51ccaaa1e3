"""The front page and /status.json: strictly well-formed markup, everything from data or a request
escaped, the right advice, and the routes on a real server."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser

import pytest

from goproxy.app.frontpage import LogCapture
from goproxy.config import PrivateUpstream
from goproxy.page import EXAMPLE_PATTERN, proxy_address, render
from goproxy.plot import SVG_NS
from goproxy.progress import Transfer
from goproxy.server import ProxyServer
from goproxy.status.model import (
    CacheCount,
    CacheStatus,
    ChecksumStatus,
    Counters,
    LogEntry,
    Minute,
    Status,
    UpstreamStatus,
)
from goproxy.status.traffic import History
from goproxy.storage.cleanup import Housekeeping, next_pass_at
from goproxy.sumdb.db import parse_gosumdb
from tests.support.helpers import FakeClock, get, wait_for
from tests.support.sumdbserver import SumDBServer
from tests.support.upstream import Upstream, generate

NOW = 1_700_000_000.0
HOSTILE = 'evil.example/<script>alert("x")</script>&amp;'
VOID = {"meta", "link", "br", "hr", "img", "input", "col", "source", "wbr", "area", "base", "embed", "track"}


def status(**changes: object) -> Status:
    base = Status(
        version="1.2.3", now=NOW, started=NOW - 3725, uptime=3725.0, workers=2,
        upstreams=(UpstreamStatus("https://proxy.golang.org", "", 10, 1, "up", NOW - 5, "timed out", NOW - 600, 0.12),
                   UpstreamStatus("https://athens.corp", "corp.example.com/*", 3, 0)),
        checksum=ChecksumStatus(True, "sum.golang.org", 31_000_000, 40, 0, 1, ("sum.golang.org",)),
        cache=CacheStatus(CacheCount(NOW - 60, 0.4, 12, 30, 5 << 30, NOW - 86400 * 3, "example.com/a@v1.0.0", 9, 900),
                          20 << 30, 0.0, 86400.0, None),
        traffic=Counters(requests=120, hits=90, misses=10, bytes_served=1 << 30, upstream_requests=12,
                         upstream_errors=1),
        history=tuple(Minute(NOW - 3600 + 60 * (i + 1), i, i // 2, i, 0.5 if i else None) for i in range(60)),
        downloads=(Transfer("example.com/big@v1.0.0", 300_000, 1_000_000, 3.0, 100_000.0),
                   Transfer("example.com/unknown@v0.1.0", 1000, 0, 1.0, 1000.0)),
        warnings=(LogEntry(NOW - 30, "ERROR", "goproxy.service", "fetch failed"),
                  LogEntry(NOW - 90, "WARNING", "goproxy.upstream", "retry 1/2")),
    )
    return Status(**{**base.__dict__, **changes})


def parse(page: bytes) -> ET.Element:
    """Parse page as XML: it must be well-formed, every tag closed, every entity XML's own."""
    return ET.fromstring(page)


class Balance(HTMLParser):
    """An HTML parser that fails on an end tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <br/>, <rect .../>: opened and closed at once

    def handle_endtag(self, tag: str) -> None:
        assert self.open, f"</{tag}> closes nothing"
        assert self.open[-1] == tag, f"</{tag}> closes <{self.open[-1]}>"
        self.open.pop()


def by_id(root: ET.Element, ident: str) -> ET.Element:
    found = [e for e in root.iter() if e.get("id") == ident]
    assert len(found) == 1, ident
    return found[0]


def text(e: ET.Element) -> str:
    """Return the text in e with runs of white space as one space, as a browser shows it."""
    return " ".join("".join(e.itertext()).split())


def test_page_is_well_formed_xml_with_balanced_html_tags() -> None:
    page = render(status(), "proxy.corp:3000")
    root = parse(page)
    assert root.tag == "html"
    checker = Balance()
    checker.feed(page.decode())
    checker.close()
    assert checker.open == []
    assert root.find(f".//{{{SVG_NS}}}svg") is not None


def test_page_is_self_contained_refreshes_itself_and_suits_phones_and_dark_mode() -> None:
    page = render(status(), "proxy.corp:3000").decode()
    root = parse(page.encode())
    metas = {m.get("name") or m.get("http-equiv"): m.get("content", "") for m in root.iter("meta")}
    assert metas["refresh"] == "10"
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    assert metas["Content-Security-Policy"].startswith("default-src 'none'")
    assert "@media (prefers-color-scheme:dark)" in page
    assert root.find(".//script") is None
    assert [e.get("src") for e in root.iter() if e.get("src")] == []
    assert sorted(e.get("href") or "" for e in root.iter() if e.get("href")) == ["/metrics", "/status.json", "data:,"]


def test_goproxy_line_names_the_address_the_browser_used() -> None:
    root = parse(render(status(), "goproxy.corp.example:8080"))
    assert text(by_id(root, "goproxy-line")) == "export GOPROXY=http://goproxy.corp.example:8080,direct"


@pytest.mark.parametrize("host,want", [
    ("proxy.corp:3000", "proxy.corp:3000"),
    ("10.0.0.5:12345", "10.0.0.5:12345"),
    ("[::1]:12345", "[::1]:12345"),
    ("localhost", "localhost"),
    ("", "fallback:1"),
    ('evil"><script>alert(1)</script>', "fallback:1"),
    ("a b", "fallback:1"),
    ("host:port", "fallback:1"),
    ("host:123456", "fallback:1"),
], ids=["name-port", "ipv4", "ipv6", "bare-name", "absent", "markup", "space", "bad-port", "long-port"])
def test_proxy_address_takes_a_plain_host_header_else_the_fallback(host: str, want: str) -> None:
    assert proxy_address(host, "fallback:1") == want


def test_private_module_advice_uses_the_configured_routes_and_warns_about_goprivate_alone() -> None:
    root = parse(render(status(), "p:1"))
    use = text(by_id(root, "use"))
    assert "export GONOSUMDB=corp.example.com/*" in use
    assert "GOPRIVATE=corp.example.com/* together with GONOPROXY=none" in use
    assert "GOPRIVATE alone also sets GONOPROXY" in use
    plain = status(upstreams=(UpstreamStatus("https://proxy.golang.org"),))
    assert f"export GONOSUMDB={EXAMPLE_PATTERN}" in text(by_id(parse(render(plain, "p:1")), "use"))


def test_health_not_tracked_shows_as_not_available_and_tracked_health_shows_its_figures() -> None:
    root = parse(render(status(), "p:1"))
    rows = [[text(td) for td in tr.iter("td")] for tr in by_id(root, "health").iter("tr") if tr.find("td") is not None]
    assert rows[0][:3] == ["https://proxy.golang.org", "public", "up"]
    assert rows[0][3] == "5 s ago"
    assert rows[0][4] == "10 min ago: timed out"
    assert rows[0][5:] == ["120 ms", "10", "1"]
    assert rows[1][2:6] == ["not available"] * 4
    assert "31000000 records" in text(by_id(root, "health"))


def test_hostile_module_path_in_a_download_bar_is_shown_as_text() -> None:
    page = render(status(downloads=(Transfer(HOSTILE + "@v1.0.0", 1, 2, 1.0, 1.0),)), "p:1")
    root = parse(page)
    names = [text(e) for e in by_id(root, "downloads").iter() if e.get("class") == "name"]
    assert names == [HOSTILE + "@v1.0.0"]
    assert root.find(".//script") is None
    assert b"<script>" not in page


def test_hostile_warning_is_shown_as_text() -> None:
    warning = LogEntry(NOW, "WARNING", "goproxy.upstream", f"upstream said {HOSTILE}")
    page = render(status(warnings=(warning,), downloads=()), "p:1")
    root = parse(page)
    code = by_id(root, "warnings").find(".//code")
    assert code is not None
    assert text(code) == f"upstream said {HOSTILE}"
    assert root.find(".//script") is None
    assert b"<script>" not in page


def test_download_bars_show_progress_or_an_unknown_size() -> None:
    root = parse(render(status(), "p:1"))
    items = [e for e in by_id(root, "downloads").iter("li")]
    assert len(items) == 2
    bar = next(e for e in items[0].iter() if e.get("role") == "progressbar")
    assert bar.get("aria-valuenow") == "30"
    assert "300.0 KB of 1.0 MB · 30% · 100.0 KB/s · 7 s left" in text(items[0])
    assert not [e for e in items[1].iter() if e.get("role") == "progressbar"]
    assert "size not known yet" in text(items[1])


@pytest.mark.parametrize("states,badge", [
    ((None, None), "serving"),
    (("up", "up"), "serving"),
    (("up", "down"), "1 of 2 upstreams down"),
    (("down", "down"), "every upstream down: serving from the cache only"),
], ids=["untracked", "all-up", "one-down", "all-down"])
def test_header_badge_sums_up_upstream_health(states: tuple[str | None, str | None], badge: str) -> None:
    ups = tuple(UpstreamStatus(f"https://u{i}", "", 0, 0, s) for i, s in enumerate(states))
    root = parse(render(status(upstreams=ups), "p:1"))
    assert [text(e) for e in root.iter("span") if "badge" in (e.get("class") or "")] == [badge]


def test_cache_still_being_counted_says_so() -> None:
    root = parse(render(status(cache=CacheStatus(None, 0, 0.0, 86400.0, None)), "p:1"))
    assert "Counting the cache" in text(by_id(root, "cache"))


# On a real server.


@pytest.fixture
def proxy(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> ProxyServer:
    upstream.add(generate("example.com/a", "v1.0.0"))
    return make_proxy([upstream.url])


def test_front_page_answers_get_and_head_as_html_never_cached(proxy: ProxyServer) -> None:
    status_code, headers, body = get(proxy, "/")
    assert status_code == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    parse(body)
    head_code, head_headers, head_body = get(proxy, "/", method="HEAD")
    assert head_code == 200
    assert head_body == b""
    assert head_headers["content-type"] == "text/html; charset=utf-8"
    assert abs(int(head_headers["content-length"]) - len(body)) < 50  # the uptime may have ticked


def test_front_page_tells_the_address_from_the_host_header(proxy: ProxyServer) -> None:
    _, _, body = get(proxy, "/", headers={"Host": "goproxy.internal:8080"})
    assert text(by_id(parse(body), "goproxy-line")) == "export GOPROXY=http://goproxy.internal:8080,direct"
    status, _, body = get(proxy, "/", headers={"Host": 'x"><script>alert(1)</script>'})
    assert status == 400  # the server refuses a Host that is no host before any page is made
    assert b"<script>" not in body


def test_status_json_reports_traffic_and_leaves_page_views_out(proxy: ProxyServer, upstream: Upstream) -> None:
    for _ in range(2):
        assert get(proxy, "/example.com/a/@v/v1.0.0.mod")[0] == 200
        assert proxy.service.settle(10)  # the miss is committed: the next request is a hit
    get(proxy, "/")
    status_code, headers, body = get(proxy, "/status.json")
    assert status_code == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    data = json.loads(body)
    t = data["traffic"]
    assert (t["requests"], t["hits"], t["misses"], t["hit_ratio"]) == (2, 1, 1, 0.5)
    assert [(u["name"], u["requests"]) for u in data["upstreams"]] == [(upstream.url, 1)]
    assert get(proxy, "/status.json", method="HEAD")[2] == b""


def test_page_views_are_counted_under_their_own_endpoints(proxy: ProxyServer) -> None:
    get(proxy, "/")
    get(proxy, "/status.json")
    # A request is counted once its answer is sent: the client may ask again first.
    page, data = ('goproxy_requests_total{endpoint="page",status="200"} 1',
                  'goproxy_requests_total{endpoint="status.json",status="200"} 1')
    wait_for(lambda: all(line in get(proxy, "/metrics")[2].decode() for line in (page, data)))


def test_other_paths_and_methods_are_still_refused(proxy: ProxyServer) -> None:
    assert get(proxy, "/index.html")[0] == 404
    assert get(proxy, "/", method="POST")[0] == 405


def test_warnings_logged_while_the_server_runs_reach_the_page(proxy: ProxyServer, upstream: Upstream) -> None:
    jobs = [j for j in proxy.background if isinstance(j, (History, LogCapture))]
    for job in jobs:
        job.start()
    try:
        upstream.set("/example.com/broken/@v/list", 500, b"<script>alert(1)</script>")
        assert get(proxy, "/example.com/broken/@v/list")[0] == 502
        logging.getLogger("goproxy.test").info("not a warning")
        data = json.loads(get(proxy, "/status.json")[2])
    finally:
        for job in jobs:
            job.stop()
    messages = [w["message"] for w in data["warnings"]]
    assert messages
    assert any("<script>alert(1)</script>" in m for m in messages), messages
    assert "not a warning" not in messages
    page = get(proxy, "/")[2]
    assert b"<script>" not in page


def test_status_json_shows_each_upstreams_health_the_verified_tree_and_the_next_cleanup(
        make_proxy: Callable[..., ProxyServer], make_upstream: Callable[[], Upstream], clock: FakeClock) -> None:
    upstream, private = make_upstream(), make_upstream()
    db = SumDBServer(upstream)
    m = db.add(generate("example.com/verified", "v1.0.0"))
    proxy = make_proxy([upstream.url], gosumdb=parse_gosumdb(db.vkey),
                       private_upstreams=(PrivateUpstream("corp.example.com", private.url),))
    assert get(proxy, f"/{m.path}/@v/{m.version}.zip")[0] == 200
    data = json.loads(get(proxy, "/status.json")[2])
    public, corp = data["upstreams"]
    assert (public["name"], public["state"], public["last_success"]) == (upstream.url, "up", clock())
    assert public["median_latency"] > 0
    assert (corp["route"], corp["state"], corp["last_success"]) == ("corp.example.com", "up", None)
    assert data["checksum"]["tree_size"] == 1
    assert (data["workers"], data["started"]) == (1, clock())
    assert data["cache"]["next_cleanup"] is None  # the housekeeping is not running
    housekeeping = proxy.background[0]
    assert isinstance(housekeeping, Housekeeping)
    housekeeping.start()
    try:
        data = json.loads(get(proxy, "/status.json")[2])
    finally:
        housekeeping.stop()
    assert data["cache"]["next_cleanup"] == next_pass_at(clock(), 86400.0)


def test_a_failing_upstream_shows_its_last_error_on_the_page(
        make_proxy: Callable[..., ProxyServer], upstream: Upstream, clock: FakeClock) -> None:
    proxy = make_proxy([upstream.url], retry_attempts=1)
    upstream.set("/example.com/x/@v/list", 503, b"<b>overloaded</b>")
    assert get(proxy, "/example.com/x/@v/list")[0] == 502
    row = by_id(parse(get(proxy, "/")[2]), "health").find(".//tbody/tr")
    assert row is not None
    cells = [text(td) for td in row.findall("td")]
    assert cells[2] == "up"
    assert cells[3] == "never"
    assert "503" in cells[4]
    assert "<b>overloaded</b>" in cells[4]  # shown as text
    assert cells[5].endswith(" ms")


@pytest.mark.parametrize("seconds,shown", [(0.12, "120 ms"), (0.0104, "10 ms"), (0.0004, "0.4 ms")],
                         ids=["slow", "ten", "local"])
def test_median_latency_shows_in_milliseconds_with_a_decimal_below_ten(seconds: float, shown: str) -> None:
    up = UpstreamStatus("https://u", "", 1, 0, "up", NOW, "", None, seconds)
    row = by_id(parse(render(status(upstreams=(up,)), "p:1")), "health").find(".//tbody/tr")
    assert row is not None
    assert text(row.findall("td")[5]) == shown
