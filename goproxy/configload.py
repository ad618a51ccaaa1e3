"""Loading a Config: the config file, the environment and flags layered over the defaults."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .config import OPTIONS, Config, Option
from .errors import ConfigError

# Options that only choose the config file: they are read before the file is.
CONFIG_FLAG, CONFIG_ENV = "config", "GOPROXY_CONFIG"


def options_by(attr: str) -> dict[str, Option]:
    """Return OPTIONS indexed by the attribute "flag", "env" or "key" (options without one left out)."""
    return {getattr(o, attr): o for o in OPTIONS if getattr(o, attr)}


def load_file(path: str) -> dict[str, Any]:
    """Read a .yaml/.yml/.json config file into a mapping ({} for an empty file).

    Raises ConfigError naming the file: unreadable, malformed, an unknown format, YAML without
    PyYAML installed, or a top level that is not a mapping.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}") from None
    elif path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"config file {path}: reading YAML needs PyYAML (pip install pyyaml), or use a .json file"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error(path, exc)) from None
    else:
        raise ConfigError(f"config file {path}: unknown format (want .yaml, .yml or .json)")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys to values")
    return data


def _yaml_error(path: str, exc: Any) -> str:
    """Return "file:line:column: problem" for a PyYAML error (one line, as compilers print)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).split("\n", 1)[0]
    if mark is None:
        return f"config file {path}: {problem}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: {problem}"


def load(flags: Mapping[str, str], environ: Mapping[str, str]) -> Config:
    """Return the Config of defaults, then the config file, then environ, then flags.

    The file is named by the -config flag or GOPROXY_CONFIG. Raises ConfigError naming the
    key and the layer of a bad value.
    """
    env = environment(environ)
    flags = dict(flags)
    path = flags.pop(CONFIG_FLAG, None) or env.get(CONFIG_ENV)
    data = load_file(path) if path else None
    return build(data, env, flags, file_name=f"config file {path}" if path else "config file")


def build(
    file_data: Mapping[str, Any] | None,
    env: Mapping[str, str],
    flags: Mapping[str, str],
    file_name: str = "config file",
) -> Config:
    """Layer defaults → file → environment → flags into a Config.

    Raises ConfigError for an unknown key or flag, a bad value (naming key and layer), or a
    -tls-cert without -tls-key (or the reverse).
    """
    values: dict[str, Any] = {}
    by_key = options_by("key")
    for key, raw in (file_data or {}).items():
        opt = by_key.get(str(key))
        if opt is None:
            known = ", ".join(sorted(by_key))
            raise ConfigError(f"{file_name}: unknown key {key!r} (known keys: {known})")
        values[opt.field] = opt.parse_value(raw, file_name)
    for opt in OPTIONS:
        present = [name for name in opt.env_names() if name in env]
        if present:  # the first set to something, else the first set at all
            name = next((n for n in present if env[n]), present[0])
            values[opt.field] = opt.parse_value(env[name], "env", name)
    by_flag = options_by("flag")
    for name, raw in flags.items():
        opt = by_flag.get(name)
        if opt is None:
            raise ConfigError(f"flag -{name}: unknown flag")
        values[opt.field] = opt.parse_value(raw, "flag")
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        raise ConfigError("-tls-cert and -tls-key (TLS_CERT, TLS_KEY) go together: set both to serve https, "
                          "or neither")
    return Config(**values)


def environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Return the variables of environ that the options table names (and GOPROXY_CONFIG)."""
    names = {name for o in OPTIONS for name in o.env_names()} | {CONFIG_ENV}
    return {k: v for k, v in environ.items() if k in names}
