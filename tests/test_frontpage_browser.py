"""The front page in a real headless browser (Debian's chromium): no console errors, the GOPROXY
line with the address the browser used, phones and dark mode, downloads in flight, a screenshot."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from goproxy.app.frontpage import LogCapture
from goproxy.config import PrivateUpstream
from goproxy.server import ProxyServer
from goproxy.status.traffic import History
from goproxy.storage.cleanup import Housekeeping
from tests.support.browser import Chromium, find_chromium
from tests.support.frontpage import from_every_worker
from tests.support.helpers import FakeClock, background_job, get, wait_for
from tests.support.proc import Proc, start
from tests.support.upstream import Upstream, generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# The big zip of the in-flight download: its first 512 KiB chunk comes at once, the rest only
# when the test lets it.
BIG = "example.com/big"
BIG_SIZE = 1_500_000
CHUNK = 512 << 10


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip("chromium is not installed: apt-get install -y chromium chromium-driver (.ci/run does)")
    return found


@pytest.fixture
def browser(chromium_binary: str, tmp_path: Path) -> Chromium:
    return Chromium(chromium_binary, tmp_path / "chromium")


def goproxy_line(dom: str) -> str:
    """Return the text of the GOPROXY line in chromium's serialised DOM."""
    m = re.search(r'id="goproxy-line">([^<]*)<', dom)
    assert m is not None, "no GOPROXY line on the page"
    return html.unescape(m.group(1))


def hold_big_download(upstream: Upstream) -> threading.Event:
    """Serve BIG from upstream over a slow link: its first chunk at once, the others only once
    the returned event is set."""
    upstream.add(generate(BIG, "v1.2.0", size=BIG_SIZE))
    upstream.rate = 4 << 20  # a slow link: the bar moves at a speed a person can read
    release = threading.Event()

    def hold(path: str, handler: object) -> bool:
        rng = getattr(handler, "headers").get("Range", "")  # noqa: B009
        if path.endswith(".zip") and rng and not rng.startswith("bytes=0-"):
            release.wait(60)  # every chunk after the first waits for the test
        return False

    upstream.fault = hold
    return release


def downloads_section(dom: str) -> str:
    """Return the downloads section of chromium's serialised DOM."""
    section = dom[dom.index('id="downloads"'):]
    return section[: section.index("</section>")]


def test_the_console_check_catches_errors(browser: Chromium) -> None:
    """The check below is only as good as this: an error on a page must show up."""
    page = browser.load("data:text/html,<p>x</p><script>console.error('boom')</script>")
    assert page.errors == ["console.error: boom"]


def test_page_loads_in_chromium_without_console_errors(browser: Chromium, make_proxy: Callable[..., ProxyServer],
                                                       upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url], retry_attempts=1)
    capture = background_job(proxy, LogCapture)
    capture.start()
    try:
        upstream.set("/example.com/x/@v/list", 500, b"<script>console.error('injected')</script>")
        assert get(proxy, "/example.com/x/@v/list")[0] == 502
    finally:
        capture.stop()
    page = browser.load(f"http://127.0.0.1:{proxy.port}/", {
        "scripts": "document.scripts.length",
        "title": "document.title",
        "warnings": "document.getElementById('warnings').innerText",
    })
    assert page.errors == []
    assert page.values["scripts"] == 0
    assert page.values["title"] == f"goproxy at 127.0.0.1:{proxy.port}"
    assert "<script>console.error('injected')</script>" in page.values["warnings"]


def test_page_fits_a_phone_and_follows_dark_mode(browser: Chromium, make_proxy: Callable[..., ProxyServer],
                                                upstream: Upstream, tmp_path: Path) -> None:
    proxy = make_proxy([upstream.url])
    url = f"http://127.0.0.1:{proxy.port}/"
    probes = {"width": "document.documentElement.scrollWidth",
              "background": "getComputedStyle(document.body).backgroundColor"}
    shot = tmp_path / "frontpage-phone-dark.png"
    dark = browser.load(url, probes, width=390, height=844, dark=True, screenshot=shot)
    light = browser.load(url, probes, width=390, height=844)
    print(f"phone screenshot in dark mode: {shot}")
    assert dark.errors == []
    assert dark.values["width"] <= 390  # nothing makes the page scroll sideways
    assert dark.values["background"] == "rgb(16, 19, 24)"
    assert light.values["background"] == "rgb(255, 255, 255)"


def test_goproxy_line_shows_the_address_the_browser_used(browser: Chromium, make_proxy: Callable[..., ProxyServer],
                                                         upstream: Upstream) -> None:
    proxy = make_proxy([upstream.url])
    for host in ("127.0.0.1", "localhost"):
        dom = browser.dump_dom(f"http://{host}:{proxy.port}/")
        assert goproxy_line(dom) == f"export GOPROXY=http://{host}:{proxy.port},direct"


def fill_an_hour(proxy: ProxyServer, upstream: Upstream, clock: FakeClock) -> None:
    """Make an hour of traffic by the fake clock: a few new modules and many cache hits each
    minute, sampled into the history at each minute's end."""
    history = background_job(proxy, History)
    assert isinstance(history, History)
    history.sample()
    fetched: list[str] = []
    for minute in range(60):
        for n in range(1 + minute % 3):
            path = f"/example.com/lib{minute}x{n}/@v/v1.0.0.mod"
            upstream.add(generate(f"example.com/lib{minute}x{n}", "v1.0.0"))
            assert get(proxy, path)[0] == 200
            fetched.append(path)
        for i in range(2 + (minute * 7) % 9):
            assert get(proxy, fetched[(minute * 5 + i) % len(fetched)])[0] == 200
        clock.advance(60)
        history.sample()


def test_downloads_in_flight_show_on_the_page_and_a_screenshot_is_kept(
        browser: Chromium, make_proxy: Callable[..., ProxyServer], make_upstream: Callable[[], Upstream],
        clock: FakeClock, tmp_path: Path) -> None:
    clock.now = time.time() - 3600  # an hour of fake traffic that ends now, as the log's times do
    upstream, private = make_upstream(), make_upstream()
    proxy = make_proxy([upstream.url], upstream_timeout=60.0, max_cache_size=10_000,
                       private_upstreams=(PrivateUpstream("corp.example.com", private.url),))
    housekeeping = proxy.background[0]
    assert isinstance(housekeeping, Housekeeping)
    housekeeping.start()  # the next cleanup shows (stopped with the server)
    fill_an_hour(proxy, upstream, clock)
    clock.advance(max(time.time() - clock(), 0.0))
    capture = background_job(proxy, LogCapture)
    capture.start()
    upstream.set("/example.com/flaky/@v/list", 503, b"upstream overloaded, try again later")
    assert get(proxy, "/example.com/flaky/@v/list")[0] == 502
    capture.stop()

    release = hold_big_download(upstream)
    result: list[int] = []
    client = threading.Thread(target=lambda: result.append(get(proxy, f"/{BIG}/@v/v1.2.0.zip")[0]), daemon=True)
    client.start()
    try:
        def underway() -> bool:
            downloads = json.loads(get(proxy, "/status.json")[2])["downloads"]
            return bool(downloads) and downloads[0]["done"] >= CHUNK

        wait_for(underway, timeout=30)
        url = f"http://127.0.0.1:{proxy.port}/"
        dom = browser.dump_dom(url)
        shot = tmp_path / "frontpage.png"
        browser.screenshot(url, shot, width=1100, height=1480)
        print(f"front page screenshot: {shot}")
    finally:
        release.set()
        client.join(60)
    section = downloads_section(dom)
    assert f"{BIG}@v1.2.0" in section
    assert 'role="progressbar"' in section
    assert "of 1.5 MB" in section
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result == [200]


def test_a_download_in_flight_on_one_worker_shows_on_the_page_of_either(
        browser: Chromium, procs: list[Proc], upstream: Upstream, tmp_path: Path) -> None:
    release = hold_big_download(upstream)
    p, port = start(procs, "-host", "127.0.0.1", "-port", "0", "-cache", str(tmp_path / "cache"), "-workers", "2",
                    "-progress", "off", "-upstream", upstream.url, "-upstream-timeout", "60s")
    result: list[int] = []
    client = threading.Thread(target=lambda: result.append(get(port, f"/{BIG}/@v/v1.2.0.zip")[0]), daemon=True)
    client.start()
    try:
        def underway(data: dict[str, Any]) -> bool:
            downloads = data["downloads"]
            return len(downloads) == 1 and downloads[0]["name"] == f"{BIG}@v1.2.0" and downloads[0]["done"] >= CHUNK

        from_every_worker(p, port, underway)
        url = f"http://127.0.0.1:{port}/"
        dom = browser.dump_dom(url)
        shot = tmp_path / "frontpage-workers.png"
        page = browser.load(url, {"workers": "document.getElementById('health').innerText"}, screenshot=shot)
        print(f"front page of a two-worker server: {shot}")
    finally:
        release.set()
        client.join(60)
    section = downloads_section(dom)
    assert f"{BIG}@v1.2.0" in section
    assert 'role="progressbar"' in section
    assert "of 1.5 MB" in section
    assert page.errors == []
    assert re.search(r"workers\s+2\s", page.values["workers"])
    assert result == [200]
