"""The README's scaling-out promises: the new options in the table and in -h, and an example
compose file that parses and wires three replicas, a store, Redis and a load balancer."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from goproxy import configload as cfg
from tests.support.helpers import ROOT

README = (ROOT / "README.md").read_text()
NEW = [("storage", "STORAGE"), ("s3-endpoint", "S3_ENDPOINT"), ("s3-region", "S3_REGION"), ("lock", "LOCK_URL")]


@pytest.mark.parametrize("flag,env", NEW, ids=[f for f, _ in NEW])
def test_new_options_are_in_the_readme_table_and_in_help(flag: str, env: str) -> None:
    assert re.search(rf"^\| `-{flag}` \| `{env}` \|", README, re.M)
    out = subprocess.run([sys.executable, str(ROOT / "goproxy.py"), "-h"], capture_output=True, text=True,
                         timeout=60).stdout
    assert f"  -{flag} " in out
    assert env in out


def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    section = README.split("## Scaling out", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    loaded = yaml.safe_load(block.group(1))
    assert isinstance(loaded, dict)
    return loaded


def test_scaling_out_example_runs_three_replicas_on_one_store_and_redis() -> None:
    services = compose()["services"]
    replicas = [name for name in services if name.startswith("replica")]
    assert len(replicas) == 3
    envs = [services[r]["environment"] for r in replicas]
    assert len({e["STORAGE"] for e in envs}) == 1
    assert len({e["LOCK_URL"] for e in envs}) == 1
    assert len({v for r in replicas for v in services[r]["volumes"]}) == 3  # a local tier each
    for e in envs:  # the environment is valid configuration
        config = cfg.build({}, {k: str(v) for k, v in e.items()}, {})
        assert config.storage == "s3://goproxy"
        assert config.lock_url == "redis://redis:6379/0"
    assert "/ready" in str(services["replica1"]["healthcheck"]["test"])
    assert {"seaweedfs", "redis", "haproxy"} <= set(services)


def test_scaling_out_load_balancer_checks_ready_on_every_replica() -> None:
    haproxy = compose()["configs"]["haproxy"]["content"]
    assert "option httpchk GET /ready" in haproxy
    for n in (1, 2, 3):
        assert f"server replica{n} replica{n}:12345 check" in haproxy
