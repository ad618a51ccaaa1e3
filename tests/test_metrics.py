"""/metrics: Prometheus text format, parsed strictly; counters move as requests are made."""

from __future__ import annotations

import re
from collections.abc import Callable

from goproxy.metrics import Metrics
from goproxy.server import ProxyServer
from tests.support.helpers import get
from tests.support.upstream import Upstream, generate

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.]+(?:[eE][+-]?[0-9]+)?|NaN|\+Inf|-Inf)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """parse reads the Prometheus text exposition format; fails on any malformed line."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"duplicate TYPE for {name}"
            types[name] = kind
            continue
        m = _SAMPLE.fullmatch(line)
        assert m, f"malformed sample line: {line!r}"
        name, labels_text = m.group(1), m.group(3) or ""
        family = name if name in types else re.sub(r"_(bucket|sum|count)$", "", name)
        assert family in types, f"sample {name} before its TYPE"
        assert family == name or types[family] == "histogram", f"{name}: a suffix on a {types[family]}"
        labels, pos = [], 0
        while pos < len(labels_text):
            lm = _LABEL.match(labels_text, pos)
            assert lm, f"malformed labels in {line!r}"
            labels.append((lm.group(1), lm.group(2)))
            pos = lm.end()
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m.group(4))
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_render_escapes_label_values_and_parses() -> None:
    m = Metrics()
    m.upstream_errors.inc(upstream='http://a"b\\c\nd', kind="transient")
    s = parse(m.render().decode())
    assert value(s, "goproxy_upstream_errors_total", upstream='http://a\\"b\\\\c\\nd', kind="transient") == 1


def test_counters_move_with_requests(make_proxy: Callable[..., ProxyServer], upstream: Upstream) -> None:
    mod = upstream.add(generate("example.com/met", "v1.0.0"))
    upstream.set("/example.com/met/@v/v1.0.0.mod", 503, b"flaky")
    proxy = make_proxy([upstream.url])
    before = parse(get(proxy, "/metrics")[2].decode())
    assert get(proxy, "/example.com/met/@v/v1.0.0.zip")[2] == mod.zip
    assert get(proxy, "/example.com/met/@v/v1.0.0.zip")[0] == 200
    assert get(proxy, "/example.com/met/@v/v1.0.0.mod")[0] == 502
    assert get(proxy, "/Bad/@v/list")[0] == 400
    status, headers, body = get(proxy, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    after = parse(body.decode())
    up = upstream.url
    assert value(after, "goproxy_requests_total", endpoint="zip", status="200") == 2
    assert value(after, "goproxy_requests_total", endpoint="mod", status="502") == 1
    assert value(after, "goproxy_requests_total", endpoint="other", status="400") == 1
    assert value(after, "goproxy_requests_total", endpoint="metrics", status="200") == 1
    assert value(after, "goproxy_cache_requests_total", result="hit") == 1
    assert value(after, "goproxy_cache_requests_total", result="miss") == 1
    assert value(after, "goproxy_upstream_requests_total", upstream=up) == 1 + 3
    assert value(after, "goproxy_upstream_errors_total", upstream=up, kind="transient") == 3
    assert value(after, "goproxy_upstream_retries_total", upstream=up) == 2
    assert value(after, "goproxy_fetched_bytes_total") >= len(mod.zip)
    assert value(after, "goproxy_served_bytes_total") - value(before, "goproxy_served_bytes_total") >= 2 * len(mod.zip)
