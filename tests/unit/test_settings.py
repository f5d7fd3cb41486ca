"""Settings validation: production refuses unsafe secrets; CORS never pairs a wildcard with credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.db import async_url, sync_url
from core.settings import (
    ApiProcessSettings,
    ApiSettings,
    AuthSettings,
    CommandSettings,
    ConfigurationError,
    DatabaseSettings,
    Environment,
    IngestorProcessSettings,
    IngestorSettings,
    LogSettings,
    MqttSettings,
    OeeSettings,
    PasswordSettings,
    RuntimeSettings,
    SparkplugSettings,
    TelemetrySettings,
    TimeseriesSettings,
    TrackingSettings,
    check_secret,
)

SETTINGS_PIECES = (
    RuntimeSettings,
    DatabaseSettings,
    LogSettings,
    AuthSettings,
    PasswordSettings,
    TrackingSettings,
    TelemetrySettings,
    OeeSettings,
    TimeseriesSettings,
    MqttSettings,
    IngestorSettings,
    ApiSettings,
    SparkplugSettings,
    CommandSettings,
)
ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_cwd: Path) -> None:
    """No variable of the developer's shell or `.env` leaks in."""
    for piece in SETTINGS_PIECES:
        for name in piece.model_fields:
            monkeypatch.delenv(name.upper(), raising=False)


RANDOM_KEY = "q0Vx3N8mKfL2aR7tYw9ZpB4cJ6hD1gE5uS0iO8nM"
API_PASSWORD = "Zq8vN2mX7kR4tY1wP9sLb3Hc6Jd0Ke5Mf"


def production(secret: str | None, *, api: dict[str, object] | None = None, **auth: object) -> ApiProcessSettings:
    return ApiProcessSettings(
        runtime=RuntimeSettings(shopfloor_env=Environment.PRODUCTION),
        auth=AuthSettings.model_validate({"secret_key": secret, **auth}),
        api=ApiSettings.model_validate(api if api is not None else {"api_metrics_token": RANDOM_KEY[::-1]}),
    )


def test_production_without_secret_key_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"^SECRET_KEY is required"):
        production(None)


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "short-but-random-Zx81",
        "change-me-change-me-change-me-change-me",
        "my-super-secret-key-for-the-api-xyz",
        "a" * 32,
        "ab" * 24,
        "0123456789abcdef" * 3,
        "k3Jq" * 10,
        "aaaaabbbbbcccccdddddeeeeefffffgg",
    ],
)
def test_production_refuses_unsafe_secret_keys(secret: str) -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        production(secret)


def test_production_accepts_a_long_random_key() -> None:
    settings = production(RANDOM_KEY)
    assert settings.auth.signing_key == RANDOM_KEY


def test_a_guessable_key_is_refused_with_one_line_naming_it() -> None:
    with pytest.raises(ConfigurationError, match=r"^SECRET_KEY is guessable \(few distinct characters"):
        production("a" * 32)


def test_self_registration_is_off_by_default_in_production_and_refused_when_turned_on() -> None:
    assert production(RANDOM_KEY).self_registration is False
    assert production(RANDOM_KEY, allow_self_registration=False).self_registration is False
    with pytest.raises(ConfigurationError, match=r"^ALLOW_SELF_REGISTRATION=true is refused"):
        production(RANDOM_KEY, allow_self_registration=True)
    development = ApiProcessSettings(runtime=RuntimeSettings(shopfloor_env=Environment.DEVELOPMENT))
    assert development.self_registration is True


def test_production_metrics_need_a_token_unless_turned_off() -> None:
    with pytest.raises(ConfigurationError, match=r"^API_METRICS_TOKEN is required"):
        production(RANDOM_KEY, api={})
    with pytest.raises(ConfigurationError, match=r"^API_METRICS_TOKEN is guessable"):
        production(RANDOM_KEY, api={"api_metrics_token": "m" * 40})
    assert production(RANDOM_KEY, api={"api_metrics_enabled": False}).api.api_metrics_token is None


def test_production_commands_need_tls_and_the_apis_own_login() -> None:
    def with_commands(**mqtt: object) -> ApiProcessSettings:
        return production(RANDOM_KEY).model_validate(
            production(RANDOM_KEY).model_dump()
            | {"commands": {"commands_enabled": True}, "mqtt": {"mqtt_port": 8883, **mqtt}}
        )

    assert production(RANDOM_KEY).commands.commands_enabled is False  # off by default: nothing to check
    with pytest.raises(ConfigurationError, match=r"^COMMANDS_ENABLED=true .* needs MQTT_TLS=true"):
        with_commands(mqtt_username="shopfloor-api", mqtt_password=API_PASSWORD)
    with pytest.raises(ConfigurationError, match=r"^COMMANDS_ENABLED=true .* needs MQTT_TLS=true"):
        with_commands(mqtt_tls=True)
    with pytest.raises(ConfigurationError, match=r"^MQTT_PASSWORD is too short"):
        with_commands(mqtt_tls=True, mqtt_username="shopfloor-api", mqtt_password="short")
    settings = with_commands(mqtt_tls=True, mqtt_username="shopfloor-api", mqtt_password=API_PASSWORD)
    assert settings.commands.commands_enabled


def test_trust_forwarded_for_is_refused_in_favour_of_trusted_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUST_FORWARDED_FOR", "true")
    with pytest.raises(ConfigurationError, match="TRUSTED_PROXIES"):
        ApiProcessSettings.load()
    monkeypatch.delenv("TRUST_FORWARDED_FOR")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.1, 172.16.0.0/12 ,fd00::/8")
    proxies = ApiProcessSettings.load().api.trusted_proxies
    assert [str(network) for network in proxies] == ["10.0.0.1/32", "172.16.0.0/12", "fd00::/8"]
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.1,proxy.local")
    with pytest.raises(ConfigurationError, match="TRUSTED_PROXIES"):
        ApiProcessSettings.load()


def test_development_without_key_gets_a_random_one_per_process() -> None:
    one, two = AuthSettings(), AuthSettings()
    assert len(one.signing_key) >= 32
    assert one.signing_key == one.signing_key
    assert one.signing_key != two.signing_key


def test_secret_checks_do_not_apply_in_development() -> None:
    check_secret("SECRET_KEY", None, Environment.DEVELOPMENT)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPFLOOR_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", RANDOM_KEY)  # production settings need one
    monkeypatch.setenv("API_METRICS_TOKEN", RANDOM_KEY[::-1])  # and, while metrics are on, this one
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/shopfloor")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    settings = ApiProcessSettings()
    assert settings.env is Environment.PRODUCTION
    assert settings.database.database_url == "postgresql://u:p@db:5432/shopfloor"
    assert settings.api.cors_origins == ["https://a.example", "https://b.example"]


def test_dotenv_file_is_read(tmp_cwd: Path) -> None:
    (tmp_cwd / ".env").write_text("DATABASE_URL=sqlite:///./elsewhere.db\nLOG_LEVEL=debug\n")
    settings = ApiProcessSettings()
    assert settings.database.database_url == "sqlite:///./elsewhere.db"
    assert settings.log.log_level == "DEBUG"


def test_default_database_is_a_sqlite_file_under_data() -> None:
    assert DatabaseSettings().database_url == "sqlite:///./data/shopfloor.db"


def test_wildcard_origin_with_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        ApiSettings(cors_origins=["*"], cors_allow_credentials=True)


def test_wildcard_origin_without_credentials_is_allowed() -> None:
    assert ApiSettings(cors_origins=["*"], cors_allow_credentials=False).cors_origins == ["*"]


def test_unknown_database_scheme_is_refused() -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        DatabaseSettings(database_url="mysql://localhost/x")


@pytest.mark.parametrize(
    ("given", "async_driver", "sync_driver"),
    [
        ("sqlite:///./data/x.db", "sqlite+aiosqlite", "sqlite+pysqlite"),
        ("postgresql://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
    ],
)
def test_database_urls_get_the_right_drivers(given: str, async_driver: str, sync_driver: str) -> None:
    assert async_url(given).drivername == async_driver
    assert sync_url(given).drivername == sync_driver


def test_env_example_documents_every_setting() -> None:
    documented = {
        line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    }
    fields = {name.upper() for piece in SETTINGS_PIECES for name in piece.model_fields}
    assert documented == fields


def test_env_example_as_is_gives_a_working_development_setup(tmp_cwd: Path) -> None:
    (tmp_cwd / ".env").write_text(ENV_EXAMPLE.read_text())
    settings = ApiProcessSettings()
    assert settings.env is Environment.DEVELOPMENT
    assert len(settings.auth.signing_key) >= 32
    assert settings.api.cors_origins == []
    assert settings.log.log_file is None


def test_env_example_in_production_fails_on_the_empty_secret(tmp_cwd: Path) -> None:
    (tmp_cwd / ".env").write_text(
        ENV_EXAMPLE.read_text().replace("SHOPFLOOR_ENV=development", "SHOPFLOOR_ENV=production")
    )
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        ApiProcessSettings()


def test_default_stages_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_STAGES", "Kalıp hazırlık:15, Enjeksiyon:45 ,Montaj")
    stages = TrackingSettings().default_stages
    assert [(stage.name, stage.duration_min) for stage in stages] == [
        ("Kalıp hazırlık", 15),
        ("Enjeksiyon", 45),
        ("Montaj", None),
    ]


@pytest.mark.parametrize("value", ["A,B:30", "A:0,B", "A:x,B", "A:10,A", " , "])
def test_bad_default_stages_name_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DEFAULT_STAGES", value)
    with pytest.raises(ValidationError, match="DEFAULT_STAGES"):
        TrackingSettings()


def test_ingestor_in_production_needs_broker_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPFLOOR_ENV", "production")
    with pytest.raises(ConfigurationError, match="MQTT_USERNAME"):
        IngestorProcessSettings()
    monkeypatch.setenv("MQTT_USERNAME", "ingestor")
    monkeypatch.setenv("MQTT_PASSWORD", "short")
    with pytest.raises(ConfigurationError, match="MQTT_PASSWORD"):
        IngestorProcessSettings()
    monkeypatch.setenv("MQTT_PASSWORD", "a-long-random-broker-password-5f2c9e1d7a")
    assert IngestorProcessSettings().mqtt.mqtt_username == "ingestor"


def test_timeseries_intervals_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMESCALE_COMPRESS_AFTER", "7 days'; DROP TABLE reading; --")
    with pytest.raises(ValidationError, match="timescale_compress_after"):
        TimeseriesSettings()
