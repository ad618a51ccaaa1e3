"""The traffic plot: well-formed SVG (parsed strictly) for no point, one point and an hour of points."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from goproxy.plot import SVG_NS, nice_ceiling, traffic_plot
from goproxy.status.model import Minute

NOW = 1_700_003_600.0
NS = {"svg": SVG_NS}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{{{SVG_NS}}}svg"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iterfind("svg:rect", NS) if r.get("class") == "bar" and r.find("svg:title", NS) is not None]


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{{{SVG_NS}}}text")]


@pytest.mark.parametrize("value,want", [
    (0, 1.0), (1, 1.0), (1.5, 2.0), (3, 5.0), (7, 10.0), (10, 10.0), (11, 20.0), (450, 500.0), (501, 1000.0),
], ids=lambda v: str(v))
def test_nice_ceiling_rounds_up_to_one_two_or_five_times_a_power_of_ten(value: float, want: float) -> None:
    assert nice_ceiling(value) == want


def test_empty_plot_is_a_frame_with_axes_that_says_there_is_no_traffic() -> None:
    root = parse(traffic_plot([], NOW))
    assert bars(root) == []
    assert root.find("svg:polyline", NS) is None
    assert "no traffic recorded yet" in texts(root)
    assert {"0%", "100%", "-60 min", "now"} <= set(texts(root))
    assert root.findtext("svg:title", namespaces=NS) == "0 requests in the last 60 minutes"


def test_one_point_is_one_bar_of_full_height_and_one_ratio_dot() -> None:
    root = parse(traffic_plot([Minute(NOW - 30, 5, 3, 4, 0.75)], NOW))
    (bar,) = bars(root)
    frame = next(r for r in root.iterfind("svg:rect", NS) if r.get("class") == "frame")
    assert float(bar.get("height", "")) == pytest.approx(float(frame.get("height", "")), abs=0.1)
    assert root.find("svg:polyline", NS) is None  # a line needs two points; the dot shows the one
    assert len(root.findall("svg:circle", NS)) == 1
    assert bar.findtext("svg:title", "", NS).endswith("5 requests, 3 of 4 artifacts from the cache")
    assert "no traffic recorded yet" not in texts(root)


def test_an_hour_of_points_is_sixty_bars_and_one_ratio_line_scaled_to_the_busiest_minute() -> None:
    minutes = [Minute(NOW - 3600 + 60 * (i + 1), i + 1, i, i + 1, i / (i + 1)) for i in range(60)]
    root = parse(traffic_plot(minutes, NOW))
    drawn = bars(root)
    assert len(drawn) == 60
    heights = [float(b.get("height", "")) for b in drawn]
    assert heights == sorted(heights)
    assert "100" in texts(root)  # 60 requests at most: the axis goes to 100
    line = root.find("svg:polyline", NS)
    assert line is not None
    assert len(line.get("points", "").split()) == 60
    xs = [float(b.get("x", "")) for b in drawn]
    assert xs == sorted(xs)
    assert root.findtext("svg:title", "", NS).startswith("1830 requests in the last 60 minutes")


def test_points_older_than_the_span_or_without_requests_draw_no_bar() -> None:
    minutes = [Minute(NOW - 4000, 9, 9, 9, 1.0), Minute(NOW - 120, 0, 0, 0, None), Minute(NOW - 60, 2, 0, 2, 0.0)]
    root = parse(traffic_plot(minutes, NOW))
    assert len(bars(root)) == 1
    assert len(root.findall("svg:circle", NS)) == 1
