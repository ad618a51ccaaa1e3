"""What a new user sees when a setting is wrong: one line that names the setting, the layer and
what was expected, and -h that reads like Go's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from goproxy import configload as cfg
from goproxy.errors import ConfigError
from tests.support.helpers import ROOT


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "goproxy.py"), *args], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"], **(env or {})})


@pytest.mark.parametrize("args,env,want", [
    (["-port", "abc"], {}, "goproxy: flag -port: invalid value 'abc' (want an integer port from 0 to 65535)\n"),
    ([], {"PORT": "abc"},
     "goproxy: environment variable PORT: invalid value 'abc' (want an integer port from 0 to 65535)\n"),
    (["-port", "70000"], {}, "goproxy: flag -port: 70000 is out of range (want an integer port from 0 to 65535)\n"),
    (["-workers", "x"], {}, "goproxy: flag -workers: "),
], ids=["flag", "env", "range", "workers"])
def test_a_bad_number_says_what_is_expected(args: list[str], env: dict[str, str], want: str) -> None:
    proc = run(*args, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith(want)
    assert "invalid literal" not in proc.stderr


def test_a_cache_directory_that_cannot_be_made_is_named_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run("-host", "127.0.0.1", "-port", "0", "-workers", "1", "-cache", str(blocker / "cache"))
    assert proc.returncode == 1
    assert f"cannot create the cache directory {blocker / 'cache'}: Not a directory" in proc.stderr
    assert "cannot listen" not in proc.stderr


def test_help_prints_each_flag_with_its_kind_and_real_default() -> None:
    proc = run("-h")
    assert proc.returncode == 0
    out = proc.stdout
    assert "  -port int\n" in out
    assert "  -list-ttl duration\n" in out
    assert "  -upstream string\n" in out
    assert "  -max-cache-size size\n" in out
    assert "(default 12345)" in out
    assert "(default 5m0s)" in out
    gosumdb = out[out.index("  -gosumdb "):]
    assert "(default off)" in gosumdb.split("\n  -", 1)[0]
    assert " value\n" not in out
    assert "(default None)" not in out


@pytest.mark.parametrize("name,text,where", [
    ("c.yaml", "port: [1, 2\n", r"c\.yaml:\d+:\d+: "),
    ("c.yaml", "upstreams:\n  - a\n - b\n", r"c\.yaml:3:2: "),
    ("c.json", '{"port": 1,}', r"c\.json:1:12: "),
])
def test_a_malformed_config_file_is_one_line_naming_file_line_and_column(
        tmp_path: Path, name: str, text: str, where: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        cfg.load({"config": str(path)}, {})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path))
    assert re.search(where, message), message


def test_the_pipe_form_of_goproxy_lists_two_upstreams() -> None:
    config = cfg.load({"upstream": "https://proxy.golang.org|https://goproxy.io"}, {})
    assert config.upstreams == ("https://proxy.golang.org", "https://goproxy.io")


@pytest.mark.parametrize("value", ["https://bad!host.example", "https://a b", "http://host:port"])
def test_an_upstream_whose_host_is_not_a_host_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="flag -upstream: .*invalid host or port"):
        cfg.load({"upstream": value}, {})
