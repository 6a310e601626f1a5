"""docker-compose.yml, Dockerfile and deploy/prometheus.yml, checked statically.

No Docker engine is needed: the commands are parsed by the real CLI parser, the
environment by the real settings loader, and Prometheus' targets matched to the ports
the services serve.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from streamjobs.cli import build_parser
from streamjobs.config import Settings
from tests.helpers import ROOT

ENTRYPOINT = "streamjobs"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svc: dict[str, Any] = compose["services"]
    return svc


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment with ${VAR:-default} taken at its default."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def _published(service: dict[str, Any]) -> list[tuple[str, int]]:
    out = []
    for p in service.get("ports", []):
        *host, container = str(p).split(":")
        out.append((":".join(host), int(container)))
    return out


def test_services(services: dict[str, Any]) -> None:
    assert set(services) == {"valkey", "api", "worker", "prometheus"}


def test_valkey(services: dict[str, Any]) -> None:
    v = services["valkey"]
    assert v["image"] == "valkey/valkey:8.1"
    cmd = v["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(str(vol).endswith(":/data") for vol in v["volumes"])


def test_api_command_is_the_real_cli(services: dict[str, Any]) -> None:
    api = services["api"]
    args = build_parser().parse_args(api["command"])
    assert args.command == "api" and args.host == "0.0.0.0" and args.port == 8000
    assert ("127.0.0.1:8000", 8000) in _published(api)


def test_worker_command_is_the_real_cli(services: dict[str, Any]) -> None:
    w = services["worker"]
    args = build_parser().parse_args(w["command"])
    assert args.command == "worker" and args.modules == ["handlers"]
    assert args.concurrency == 32 and args.metrics_port == 9100
    assert args.metrics_host == "0.0.0.0"  # reachable by Prometheus across the network
    assert w["deploy"]["replicas"] == 3
    assert (ROOT / "handlers" / "__init__.py").is_file()


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_environment_is_valid_settings(services: dict[str, Any], name: str) -> None:
    env = _env(services[name])
    assert env["STREAMJOBS_REDIS_URL"] == "redis://valkey:6379/0"
    settings = Settings.from_env(env)  # rejects unknown STREAMJOBS_* names
    assert settings.redis_url == "redis://valkey:6379/0"
    assert "valkey" in services[name]["depends_on"]
    assert services[name]["image"] == services["api"]["image"]


def test_metrics_public_lets_prometheus_scrape_with_keys(services: dict[str, Any]) -> None:
    assert Settings.from_env(_env(services["api"])).metrics_public


def test_prometheus_scrapes_api_and_every_worker(
    services: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    p = services["prometheus"]
    assert p["image"].startswith("prom/prometheus")
    assert any(str(v).startswith("./deploy/prometheus.yml:/etc/prometheus/prometheus.yml")
               for v in p["volumes"])
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    api_args = build_parser().parse_args(services["api"]["command"])
    api_targets = [t for sc in jobs["streamjobs-api"]["static_configs"] for t in sc["targets"]]
    assert api_targets == [f"api:{api_args.port}"]
    assert jobs["streamjobs-api"].get("metrics_path", "/metrics") == "/metrics"
    worker_args = build_parser().parse_args(services["worker"]["command"])
    (sd,) = jobs["streamjobs-worker"]["dns_sd_configs"]
    assert sd["type"] == "A" and sd["port"] == worker_args.metrics_port
    assert sd["names"] == ["worker"]  # one A record per replica: every replica a target


def test_images_run_as_non_root(services: dict[str, Any]) -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    users = [ln.split(None, 1)[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any("pip install ." in ln for ln in lines)
    entry = next(ln for ln in lines if ln.startswith("ENTRYPOINT"))
    assert f'"{ENTRYPOINT}"' in entry
    for name, svc in services.items():
        user = str(svc.get("user", ""))
        assert user.split(":")[0] not in {"root", "0"}, name
        if "build" not in svc and "image" in svc and name != "prometheus":
            assert user, f"{name}: set a non-root user for the third-party image"
