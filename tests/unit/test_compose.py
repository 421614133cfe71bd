"""docker-compose.yml is a valid Compose file with the services production needs, wired safely.

Validated against the official Compose Specification schema (vendored: tests/data/README.md).
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
DEEPSCAN_SERVICES = ("migrate", "worker", "beat", "flower", "cli", "web")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def test_the_file_follows_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_the_validator_rejects_what_compose_would_reject(
    compose: dict[str, Any], validator: jsonschema.Draft7Validator
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_finished"
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0].pop("capabilities")
    assert not validator.is_valid(broken)


def test_every_service_is_there(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "postgres", *DEEPSCAN_SERVICES}


def test_the_worker_reserves_nvidia_gpus_and_reads_the_checkpoint_read_only(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert worker["command"][:3] == ["claim-gpu", "deepscan", "worker"]
    mounts = {m["target"]: m for m in worker["volumes"] if isinstance(m, dict)}
    assert mounts["/checkpoints"]["read_only"] is True
    assert worker["environment"]["DEEPSCAN_CHECKPOINT"].startswith("/checkpoints/")


def test_services_start_in_order_and_state_survives_restarts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["deepscan", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in ("worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["beat"]["command"] == ["deepscan", "beat"]
    assert services["flower"]["command"][:4] == ["celery", "-A", "workers.app", "flower"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    volumes = set(compose["volumes"])
    assert f"{_volume_of(services['redis'], '/data')}" in volumes
    assert f"{_volume_of(services['postgres'], '/var/lib/postgresql/data')}" in volumes


def test_deepscan_services_talk_to_postgres_and_redis(compose: dict[str, Any]) -> None:
    for name in DEEPSCAN_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["DEEPSCAN_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/" in env["DEEPSCAN_DATABASE_URL"]
        assert env["DEEPSCAN_BROKER_URL"].startswith("redis://redis:6379/"), name


def test_every_variable_the_file_uses_is_documented_in_env_example() -> None:
    # `$${NAME}` is an escaped dollar: the container's shell expands it, not compose.
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert used - documented == set()


def test_the_dockerfile_copies_only_what_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = [
        src for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE) for src in _copy_sources(line)
    ]
    assert "docker/claim-gpu.sh" in sources
    missing = [src for src in sources if not (ROOT / src).exists()]
    assert missing == []


def _copy_sources(line: str) -> list[str]:
    parts = [p for p in line.split() if not p.startswith("--")]
    return parts[:-1]


def _volume_of(service: dict[str, Any], target: str) -> str:
    for mount in service["volumes"]:
        source, _, path = str(mount).partition(":")
        if path.split(":")[0] == target:
            return source
    raise AssertionError(f"no volume mounted at {target}")


# --- claim-gpu: one GPU per worker replica -------------------------------------------------------


@pytest.fixture
def fake_gpus(tmp_path: Path) -> dict[str, str]:
    """An environment where `nvidia-smi --list-gpus` reports two GPUs and locks live in tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-0)'\necho 'GPU 1: Fake (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DEEPSCAN_WORKER_GPU"}
    env |= {"PATH": f"{bin_dir}:{env['PATH']}", "DEEPSCAN_GPU_LOCK_DIR": str(tmp_path / "locks")}
    return env


def _claim(env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    """Start a 'worker' that records the GPU it got, then keeps running (holding the lock)."""
    script = f'echo "$CUDA_VISIBLE_DEVICES" > {out}; exec sleep 30'
    return subprocess.Popen(["sh", str(ROOT / "docker" / "claim-gpu.sh"), "sh", "-c", script], env=env)


def _wait_for(path: Path) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} was never written")


def test_each_worker_replica_claims_a_different_gpu(fake_gpus: dict[str, str], tmp_path: Path) -> None:
    first, second = _claim(fake_gpus, tmp_path / "a"), None
    try:
        got_first = _wait_for(tmp_path / "a")
        second = _claim(fake_gpus, tmp_path / "b")
        assert {got_first, _wait_for(tmp_path / "b")} == {"0", "1"}
        third = subprocess.run(
            ["sh", str(ROOT / "docker" / "claim-gpu.sh"), "true"], env=fake_gpus, capture_output=True, check=False
        )
        assert third.returncode == 1
        assert b"all 2 GPUs already have a worker" in third.stderr
        first.kill()
        first.wait()
        replacement = _claim(fake_gpus, tmp_path / "c")  # a restarted worker gets the freed GPU
        try:
            assert _wait_for(tmp_path / "c") == got_first
        finally:
            replacement.kill()
            replacement.wait()
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_a_pinned_worker_uses_the_gpu_it_is_given(fake_gpus: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(ROOT / "docker" / "claim-gpu.sh"), "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"'],
        env=fake_gpus | {"DEEPSCAN_WORKER_GPU": "3"},
        capture_output=True,
        check=True,
    )
    assert result.stdout.strip() == b"3"


# --- health and secrets ------------------------------------------------------------------------


def _env_example() -> dict[str, str]:
    pairs = re.findall(r"^([A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    return dict(pairs)


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "migrate" or "profiles" in service:  # one-shot, or started on demand
            continue
        check = service.get("healthcheck")
        assert check is not None, name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check.get("retries", 0) >= 3, name


def test_the_worker_healthcheck_pings_the_worker_by_its_own_name(compose: dict[str, Any]) -> None:
    test = " ".join(compose["services"]["worker"]["healthcheck"]["test"])
    assert "inspect ping" in test
    assert '"deepscan-worker@$${HOSTNAME}"' in test
    pattern = compose["services"]["worker"]["environment"]["DEEPSCAN_WORKER_NAME"]
    from deepscan.cli.scan import worker_node_name

    # `deepscan worker` expands the container's host name into the name the healthcheck asks for.
    assert worker_node_name("deepscan", pattern) == f"deepscan-worker@{socket.gethostname()}"


def test_flower_asks_for_the_login_from_the_env_file(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert "FLOWER_BASIC_AUTH" in " ".join(flower["healthcheck"]["test"])
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_env_example_holds_no_usable_password() -> None:
    """Every variable compose guards with `:?` is empty in .env.example, so the guard stops a copy as is."""
    text = (ROOT / "docker-compose.yml").read_text()
    guarded = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"} <= guarded
    example = _env_example()
    for name in guarded:
        assert example.get(name, "") == "", f"{name} has a usable default in .env.example"
