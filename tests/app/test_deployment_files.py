"""docker-compose.yml cannot be run on the CI machines (no Docker engine), so it is checked against
the code it starts: every setting it passes exists, every command parses with Tailor's CLI, and the
services wait for what they need."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _tailor_commands(service: dict) -> list[list[str]]:
    command = service.get("command") or []
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in command[2].split("&&")]
    return [command]


def test_the_stack_has_every_part():
    assert {"web", "worker", "redis", "postgres", "migrate"} <= set(SERVICES)


@pytest.mark.parametrize("name", ["web", "worker", "migrate"])
def test_each_tailor_service_passes_only_real_settings_and_valid_commands(name):
    service = SERVICES[name]
    fields = {f"TAILOR_{field.upper()}" for field in Settings.model_fields}
    passed = {key for key in service["environment"] if key.startswith("TAILOR_")}
    assert passed <= fields, f"unknown settings: {passed - fields}"
    assert {"TAILOR_DATABASE_URL", "TAILOR_REDIS_URL", "TAILOR_SECRET_KEY"} <= passed
    parser = build_parser()
    for argv in _tailor_commands(service):
        assert argv[0] == "tailor"
        parser.parse_args(argv[1:])  # exits (fails the test) on an unknown subcommand or option


def test_services_start_in_order_and_workers_get_a_gpu():
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in SERVICES["worker"] and "ports" not in SERVICES["worker"]  # --scale worker=N works
    for name, port in (("web", 8000), ("worker", 8001)):  # both probed on their health endpoints
        assert f"http://127.0.0.1:{port}/health" in " ".join(SERVICES[name]["healthcheck"]["test"])
    assert SERVICES["worker"]["environment"]["TAILOR_WORKER_HEALTH_PORT"] == "8001"
