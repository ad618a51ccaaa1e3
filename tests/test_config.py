"""Config layering, value parsing and Go-style flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from goproxy import cli
from goproxy import configload as cfg
from goproxy.cli.common import parse_flags
from goproxy.config import OPTIONS, Config
from goproxy.configload import build
from goproxy.errors import ConfigError
from goproxy.values import format_duration, parse_duration, parse_size


@pytest.mark.parametrize("text,seconds", [
    ("0", 0.0), ("5m", 300.0), ("100ms", 0.1), ("1h30m", 5400.0), ("720h", 2592000.0),
    ("1.5s", 1.5), ("2h45m30.5s", 9930.5), ("10us", 1e-5), ("+3s", 3.0),
])
def test_parse_duration_accepts_go_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "-1s", "1d", "5 m", "1h 30m", "s5", "1.2.3s"])
def test_parse_duration_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds,text", [(300.0, "5m0s"), (0.1, "100ms"), (0, "0s"), (5400, "1h30m0s")])
def test_format_duration_is_go_style(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text,n", [("20GB", 20 * 10**9), ("512MiB", 512 << 20), ("100", 100),
                                    ("1.5k", 1500), ("2TiB", 2 << 40), ("7b", 7)])
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "GB", "-5MB", "12XB"])
def test_parse_size_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


# Each row: file data, env, flags, expected (field, value).
LAYERING = [
    ({}, {}, {}, ("port", 12345)),
    ({"port": 1000}, {}, {}, ("port", 1000)),
    ({"port": 1000}, {"PORT": "2000"}, {}, ("port", 2000)),
    ({"port": 1000}, {"PORT": "2000"}, {"port": "3000"}, ("port", 3000)),
    ({}, {"PORT": "2000"}, {}, ("port", 2000)),
    ({"cache_dir": "/a"}, {"CACHE_DIR": "/b"}, {}, ("cache_dir", "/b")),
    ({"upstreams": ["http://a", "http://b/"]}, {}, {}, ("upstreams", ("http://a", "http://b"))),
    ({"upstreams": "http://a,http://b"}, {}, {}, ("upstreams", ("http://a", "http://b"))),
    ({}, {"UPSTREAM_PROXY": "https://x.example"}, {"upstream": "http://y,http://z"},
     ("upstreams", ("http://y", "http://z"))),
    ({"list_ttl": "1m"}, {}, {}, ("list_ttl", 60.0)),
    ({}, {"LIST_TTL": "10s"}, {"list-ttl": "2m"}, ("list_ttl", 120.0)),
    ({}, {"UNRELATED": "x"}, {}, ("port", 12345)),
]


@pytest.mark.parametrize("file_data,env,flags,expect", LAYERING)
def test_layering_defaults_file_env_flags(file_data: dict[str, Any], env: dict[str, str], flags: dict[str, str],
                                          expect: tuple[str, object]) -> None:
    config = build(file_data, env, flags)
    assert getattr(config, expect[0]) == expect[1]


@pytest.mark.parametrize("file_data,env,flags,words", [
    ({"prot": 1}, {}, {}, ["unknown key", "prot"]),
    ({"port": "abc"}, {}, {}, ["key port", "config file"]),
    ({}, {"PORT": "99999"}, {}, ["PORT", "environment", "out of range"]),
    ({}, {}, {"port": "x"}, ["flag -port"]),
    ({}, {}, {"nope": "1"}, ["flag -nope", "unknown"]),
    ({}, {"UPSTREAM_PROXY": "ftp://x"}, {}, ["UPSTREAM_PROXY", "http"]),
    ({}, {"LIST_TTL": "5"}, {}, ["LIST_TTL", "duration"]),
    ({"port": {"a": 1}}, {}, {}, ["key port", "mapping"]),
    ({}, {"LOG_LEVEL": "loud"}, {}, ["LOG_LEVEL"]),
])
def test_bad_values_name_key_and_layer(file_data: dict[str, Any], env: dict[str, str], flags: dict[str, str],
                                       words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        build(file_data, env, flags)
    for word in words:
        assert word in str(err.value)


def test_every_option_has_a_config_field_and_unique_names() -> None:
    fields = set(Config.__dataclass_fields__)
    for attr in ("flag", "env", "key"):
        names = [getattr(o, attr) for o in OPTIONS if getattr(o, attr)]
        assert len(names) == len(set(names)), attr
    assert {o.field for o in OPTIONS} <= fields


def test_readme_table_lists_every_option() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for opt in OPTIONS:
        for name in (f"-{opt.flag}" if opt.flag else None, opt.env, opt.key):
            if name:
                assert f"`{name}`" in readme, f"README options table lacks {name}"


@pytest.mark.parametrize("args,flags,rest", [
    (["-port", "3000"], {"port": "3000"}, []),
    (["-port=3000"], {"port": "3000"}, []),
    (["--port", "3000"], {"port": "3000"}, []),
    (["--port=3000", "-cache", "/c"], {"port": "3000", "cache": "/c"}, []),
    (["-port", "1", "--", "-x"], {"port": "1"}, ["-x"]),
    (["-dry-run", "x"], {"dry-run": "true"}, ["x"]),
    (["-upstream=http://a,http://b"], {"upstream": "http://a,http://b"}, []),
])
def test_go_style_flags(args: list[str], flags: dict[str, str], rest: list[str]) -> None:
    assert parse_flags(args, booleans=frozenset({"dry-run"})) == (flags, rest)


def test_flag_without_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="-port"):
        parse_flags(["-port"])


def test_config_file_yaml_then_env_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("port: 1111\ncache_dir: /from/file\nupstreams:\n  - http://file.example\n")
    config = cfg.load({"config": str(f), "port": "3333"}, {"CACHE_DIR": "/from/env"})
    assert (config.port, config.cache_dir, config.upstreams) == (3333, "/from/env", ("http://file.example",))


def test_config_file_from_env_json(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"port": 2222}))
    assert cfg.load({}, {"GOPROXY_CONFIG": str(f)}).port == 2222


@pytest.mark.parametrize("name,text,words", [
    ("c.yaml", "port: [1, 2\n", ["c.yaml"]),
    ("c.json", "{", ["c.json"]),
    ("c.toml", "port = 1", ["unknown format"]),
    ("c.yaml", "- 1\n- 2\n", ["mapping"]),
    ("c.yaml", "bogus: 1\n", ["unknown key", "bogus"]),
])
def test_bad_config_files_are_errors_naming_the_file(tmp_path: Path, name: str, text: str,
                                                      words: list[str]) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        cfg.load({"config": str(f)}, {})
    for word in words:
        assert word in str(err.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no-such"):
        cfg.load({"config": str(tmp_path / "no-such.yaml")}, {})


def test_main_help_version_and_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-h"], {}) == 0
    out = capsys.readouterr().out
    assert "-port" in out
    assert "PORT" in out
    assert "-upstream" in out
    assert cli.main(["--version"], {}) == 0
    assert "goproxy" in capsys.readouterr().out
    assert cli.main(["-port", "nope"], {}) == 2
    assert "flag -port" in capsys.readouterr().err


def test_shipped_config_yaml_loads_and_lists_every_option() -> None:
    path = Path(__file__).parent.parent / "config.yaml"
    config = cfg.load({"config": str(path)}, {})
    assert config == Config()  # safe defaults: the file only spells them out
    text = path.read_text()
    for opt in OPTIONS:
        if opt.key:
            assert f"{opt.key}:" in text, f"config.yaml lacks {opt.key}"
