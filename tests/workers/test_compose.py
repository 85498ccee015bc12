"""docker-compose.yml and the Dockerfile, checked statically against the code they run."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from market.config import load_settings
from market.services import ROOT
from workers.celeryconf import app

COMPOSE = ROOT / "docker-compose.yml"
VAULT = "/var/lib/market/vault"
MARKET_SERVICES = ("worker", "beat", "api")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def config_variables() -> set[str]:
    """Every ``MARKET_*`` name that market/config.py reads."""
    source = (ROOT / "market" / "config.py").read_text()
    return set(re.findall(r'"(MARKET_[A-Z_]+)"', source))


def env_file_variables() -> set[str]:
    lines = (ROOT / "market.env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def test_services_are_all_there(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", "anvil", "worker", "beat", "api"}


def test_every_service_has_a_health_check_and_restarts(services: dict[str, Any]) -> None:
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        assert len(test) > 1, name
        assert service["restart"] == "unless-stopped", name


def test_celery_commands_use_the_real_app_module(services: dict[str, Any]) -> None:
    worker, beat = services["worker"]["command"], services["beat"]["command"]
    for command, role in ((worker, "worker"), (beat, "beat")):
        assert command[:4] == ["celery", "-A", "workers.celeryconf", role]
        module = importlib.import_module(command[2])
        assert module.app is app
    # the worker health check pings the node name the worker command gives itself
    assert worker[worker.index("-n") + 1] == "worker@%h"
    assert "worker@$$HOSTNAME" in services["worker"]["healthcheck"]["test"][1]
    assert "--pool=prefork" in worker
    # two worker processes, one beat (two would schedule every reconcile twice)
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "deploy" not in services["beat"]


def test_beat_health_check_and_api_command_name_real_modules(services: dict[str, Any]) -> None:
    beat_check = services["beat"]["healthcheck"]["test"]
    assert beat_check[:4] == ["CMD", "python", "-m", "workers.health"]
    importlib.import_module(beat_check[3])
    api = services["api"]["command"]
    assert api[0] == "uvicorn"
    module, attribute = api[1].split(":")
    assert (module, attribute) == ("market.api", "app")
    assert "/openapi.json" in services["api"]["healthcheck"]["test"][-1]


def test_environment_names_are_the_ones_config_reads(services: dict[str, Any]) -> None:
    known = config_variables()
    assert {"MARKET_RPC_URL", "MARKET_REDIS_URL", "MARKET_VAULT_KEY"} <= known
    for name in MARKET_SERVICES:
        service = services[name]
        environment = set(service["environment"])
        assert environment <= known, (name, environment - known)
        assert {
            "MARKET_RPC_URL",
            "MARKET_REDIS_URL",
            "MARKET_VAULT_DIR",
            "MARKET_CONFIRMATIONS",
            "MARKET_TX_GAS_CAP",
        } <= environment
        assert service["env_file"] == [{"path": "market.env", "required": True}]
    # secrets come from the env file, not from the compose file
    secrets = env_file_variables()
    assert {"MARKET_VAULT_KEY", "MARKET_API_TOKEN"} <= secrets <= known
    assert not secrets & set(services["worker"]["environment"])


def test_rpc_url_defaults_to_the_anvil_service_and_is_overridable(
    services: dict[str, Any],
) -> None:
    environment = services["worker"]["environment"]
    assert environment["MARKET_RPC_URL"] == "${MARKET_RPC_URL:-http://anvil:8545}"
    assert environment["MARKET_REDIS_URL"] == "redis://redis:6379/0"
    anvil = services["anvil"]
    assert anvil["profiles"] == ["local-chain"]
    assert "--host=0.0.0.0" in anvil["command"]
    assert "--port=8545" in anvil["command"]
    # the compose defaults load as valid settings
    defaults = {
        key: re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", value) for key, value in environment.items()
    }
    settings = load_settings(defaults)
    assert settings.rpc_url == "http://anvil:8545"
    assert settings.vault_dir == Path(VAULT)


def test_services_wait_for_healthy_redis_and_optional_anvil(services: dict[str, Any]) -> None:
    for name in MARKET_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["redis"] == {"condition": "service_healthy"}
        assert depends["anvil"]["required"] is False


def test_vault_volume_is_shared_by_workers_and_api(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    assert "vault" in compose["volumes"]
    mount = f"vault:{VAULT}"
    assert mount in services["worker"]["volumes"]
    assert mount in services["api"]["volumes"]
    assert services["worker"]["environment"]["MARKET_VAULT_DIR"] == VAULT
    # the image creates the directory for its user, so a fresh volume is writable by it
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"MARKET_VAULT_DIR={VAULT}" in dockerfile
    assert "USER market" in dockerfile


def test_image_is_python_311_slim_and_builds_the_contracts(services: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert stages[-1] == "python:3.11-slim"
    assert "node scripts/compile.mjs" in dockerfile
    assert "COPY --from=contracts /src/market/artifacts/ market/artifacts/" in dockerfile
    assert all(services[name]["build"] == "." for name in MARKET_SERVICES)
