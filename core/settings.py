"""Settings for every process, read from the environment or `.env` (and nowhere else)."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.contract import TimeWindow
from core.mqtt import MqttEndpoint, MqttTls, MqttTlsError, certificate_common_name, check_tls_port
from core.sparkplug import SparkplugMapping, is_code, is_tag

MIN_SECRET_LENGTH = 32
MIN_SECRET_DISTINCT_CHARACTERS = 10
# Values copied from examples or left from development must never sign production tokens.
PLACEHOLDER_MARKERS = ("change", "placeholder", "secret", "example", "insecure", "dev-", "xxx", "todo")


class Environment(StrEnum):
    """Where the process runs; production turns on every safety check."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ConfigurationError(Exception):
    """A setting is missing or unsafe; the message names the variable and fits on one line."""


def _config() -> SettingsConfigDict:
    # An empty variable (`SECRET_KEY=` as in .env.example) means "not set", never an empty secret.
    return SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)


class RuntimeSettings(BaseSettings):
    """Which environment this is."""

    model_config = _config()

    shopfloor_env: Environment = Environment.DEVELOPMENT


class DatabaseSettings(BaseSettings):
    """Where the data lives; PostgreSQL pool sizing and statement timeout do not apply to SQLite."""

    model_config = _config()

    database_url: str = "sqlite:///./data/shopfloor.db"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    db_pool_recycle_s: int = Field(default=1800, ge=-1)
    # PostgreSQL only: the server cancels a statement running longer (the API answers 503 database_timeout); 0
    # leaves the server's own statement_timeout. SQLite has no statement timeout: this does not apply there.
    db_statement_timeout_ms: int = Field(default=15000, ge=0, le=24 * 3600 * 1000)
    db_echo: bool = False

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql://")
        return value


_INTERVAL = r"^[1-9][0-9]{0,5} (second|minute|hour|day|week|month|year)s?$"


class TimeseriesSettings(BaseSettings):
    """How readings are kept on PostgreSQL with TimescaleDB (read by the migrations)."""

    model_config = _config()

    # auto: use TimescaleDB when the extension is available; off: plain tables even when it is.
    timescaledb: str = Field(default="auto", pattern="^(auto|off)$")
    timescale_chunk_interval: str = Field(default="1 day", pattern=_INTERVAL)
    timescale_compress_after: str = Field(default="7 days", pattern=_INTERVAL)
    timescale_retention: str | None = Field(default=None, pattern=_INTERVAL)


class LogSettings(BaseSettings):
    """One logging configuration for all processes."""

    model_config = _config()

    log_level: str = "INFO"
    log_format: str | None = Field(default=None, pattern="^(json|console)$")
    log_file: str | None = None
    log_file_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    log_file_backups: int = Field(default=5, ge=0)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value


class PasswordSettings(BaseSettings):
    """argon2id cost and the password policy; the defaults follow RFC 9106's second recommendation."""

    model_config = _config()

    password_min_length: int = Field(default=8, ge=6, le=128)
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65536, ge=8, le=4 * 1024 * 1024)
    # argon2id hashes one API process computes at once (logins, password changes); more wait their turn. Each takes
    # ARGON2_MEMORY_KIB and, with two lanes, up to two cores while it runs, so a burst of logins at a shift change
    # would otherwise take every core (and its memory) from the requests behind it.
    password_hash_concurrency: int = Field(default=1, ge=1, le=64)


class AuthSettings(BaseSettings):
    """Tokens, passwords and login throttling."""

    model_config = _config()

    secret_key: SecretStr | None = None
    jwt_issuer: str = "shopfloor"
    jwt_audience: str = "shopfloor-api"
    # Short access tokens; a refresh token (rotated at each use) keeps a worker signed in for a whole shift.
    access_token_ttl_s: int = Field(default=15 * 60, ge=60, le=24 * 3600)
    refresh_token_ttl_s: int = Field(default=13 * 3600, ge=300, le=90 * 24 * 3600)
    # How long an API process remembers the user behind a bearer token (one user-row read per token and period, not
    # per request). A revocation reaches the other API processes within this; 0: the user is read on every request.
    auth_user_cache_s: float = Field(default=5.0, ge=0, le=60)
    # Unset: on in development and test, off in production (where turning it on is refused).
    allow_self_registration: bool | None = None
    # Failed logins of one username from one address (the victim at their own address is never locked out by
    # someone else's guesses), and of one address over every username.
    login_max_failures_per_user: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_s: int = Field(default=300, ge=1)
    # Past this many failures of one username from all addresses, attempts on it are queued this far apart (however
    # many arrive at once): slowed down, never locked out.
    login_slowdown_after: int = Field(default=25, ge=1)
    login_slowdown_s: float = Field(default=2.0, ge=0, le=60)
    # Self-registrations accepted from one address per window (each costs a password hash).
    registration_max_per_address: int = Field(default=5, ge=1)
    registration_window_s: int = Field(default=3600, ge=1)

    @cached_property
    def signing_key(self) -> str:
        """The HS256 key; outside production a missing key gets a random one per process."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return secrets.token_urlsafe(48)


class StageTemplate(BaseModel):
    """A default stage: its name and length; no length means "until the work order's planned end"."""

    name: str
    duration_min: int | None = None


def _parse_stage_templates(value: object) -> object:
    # "Enjeksiyon:30,Montaj" -> Enjeksiyon for 30 minutes, then Montaj until the planned end.
    if not isinstance(value, str):
        return value
    templates = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, _, minutes = item.partition(":")
        templates.append({"name": name.strip(), "duration_min": int(minutes) if minutes.strip() else None})
    return templates


class TrackingSettings(BaseSettings):
    """Production tracking rules."""

    model_config = _config()

    default_stages: Annotated[list[StageTemplate], NoDecode] = Field(
        default_factory=lambda: [
            StageTemplate(name="Enjeksiyon", duration_min=30),
            StageTemplate(name="Montaj"),
        ]
    )
    require_previous_stage_started: bool = True
    issue_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["machine_breakdown", "material_shortage", "quality", "safety", "other"]
    )
    # IANA name of the plant's zone: naive times (the API's input, the original app's data) are read in it, and
    # one-day history buckets and the default /metrics/summary window are its local days.
    plant_timezone: str = "UTC"

    @field_validator("default_stages", mode="before")
    @classmethod
    def _split_stages(cls, value: object) -> object:
        try:
            return _parse_stage_templates(value)
        except ValueError:
            raise ValueError("DEFAULT_STAGES is a list like 'Enjeksiyon:30,Montaj' (minutes after ':')") from None

    @field_validator("default_stages")
    @classmethod
    def _check_stages(cls, value: list[StageTemplate]) -> list[StageTemplate]:
        if not value:
            raise ValueError("DEFAULT_STAGES needs at least one stage")
        names = [template.name for template in value]
        if any(not name or len(name) > 64 for name in names) or len(set(names)) != len(names):
            raise ValueError("DEFAULT_STAGES names must be unique, 1 to 64 characters")
        if any(template.duration_min is None for template in value[:-1]):
            raise ValueError("DEFAULT_STAGES: only the last stage may omit its minutes")
        if any(template.duration_min is not None and template.duration_min <= 0 for template in value):
            raise ValueError("DEFAULT_STAGES: minutes must be positive")
        return value

    @field_validator("issue_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("issue_types")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        if not value or any(len(item) > 64 for item in value):
            raise ValueError("ISSUE_TYPES needs at least one type, each up to 64 characters")
        return value

    @property
    def plant_zone(self) -> ZoneInfo:
        """PLANT_TIMEZONE as a zone."""
        return ZoneInfo(self.plant_timezone)

    @field_validator("plant_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("PLANT_TIMEZONE must be an IANA time zone name such as Europe/Istanbul") from None
        return value


class TelemetrySettings(BaseSettings):
    """How far a sample's source time may be from when it arrives (MQTT and HTTP alike)."""

    model_config = _config()

    telemetry_max_past_s: int = Field(default=7 * 24 * 3600, ge=1)
    telemetry_max_future_s: int = Field(default=300, ge=0)

    def window(self) -> TimeWindow:
        """The accepted window around the receiving time."""
        return TimeWindow(
            max_past=timedelta(seconds=self.telemetry_max_past_s),
            max_future=timedelta(seconds=self.telemetry_max_future_s),
        )


_TAG_NAME = r"^[a-z0-9_.-]{1,64}$"


class OeeSettings(BaseSettings):
    """Which counter tags OEE counts parts from, and how long a machine may be silent before its state is unknown."""

    model_config = _config()

    oee_total_count_tag: str = Field(default="cycle_count", pattern=_TAG_NAME)
    oee_good_count_tag: str = Field(default="good_count", pattern=_TAG_NAME)
    oee_scrap_count_tag: str = Field(default="scrap_count", pattern=_TAG_NAME)
    # A state row or counter reading vouches for the machine's state this long; 0: a state holds until the next.
    oee_max_silence_s: int = Field(default=300, ge=0, le=7 * 24 * 3600)
    # A stop longer than this is a downtime event someone classifies; a shorter one is a minor stop (performance loss).
    micro_stop_s: float = Field(default=120, ge=0, le=3600)


class ApiSettings(BaseSettings):
    """The HTTP layer."""

    model_config = _config()

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # uvicorn worker processes of `shopfloor api` on one listening socket (each with its own pool and stream limits).
    api_workers: int = Field(default=1, ge=1, le=64)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = True
    # Reverse proxies (addresses or CIDRs) whose X-Forwarded-For is believed: the client is the rightmost entry that
    # is not one of them. Empty: the peer address is the client.
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(default_factory=list)
    # Replaced by TRUSTED_PROXIES (believing the first, client-written entry let clients pick their address).
    trust_forwarded_for: bool = False
    # Request bodies, counted as they arrive (chunked included): 413 past these sizes, before anything is parsed.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # The live machine stream (GET /machines/{id}/stream, server-sent events).
    stream_poll_interval_s: float = Field(default=0.5, ge=0.05, le=60)
    stream_heartbeat_s: float = Field(default=15.0, ge=0.1, le=300)
    stream_max_clients: int = Field(default=200, ge=1, le=100_000)
    stream_retry_ms: int = Field(default=3000, ge=100, le=600_000)
    # One user's open streams (more get 429), so one account cannot take every place of STREAM_MAX_CLIENTS.
    stream_max_clients_per_user: int = Field(default=5, ge=1, le=10_000)
    # A client whose send does not complete within this (it stopped reading) is dropped and its place freed.
    stream_send_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # How long a stream ticket (POST /machines/{id}/stream/ticket, single use) may wait before it is used.
    stream_ticket_ttl_s: int = Field(default=30, ge=1, le=60)
    # Prometheus text at GET /metrics; with a token, scrapers must send `Authorization: Bearer <token>`.
    api_metrics_enabled: bool = True
    api_metrics_token: SecretStr | None = None

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, list):
            try:
                return [ip_network(item, strict=False) if isinstance(item, str) else item for item in value]
            except ValueError as error:
                raise ValueError(f"TRUSTED_PROXIES lists addresses or CIDRs, comma-separated: {error}") from None
        return value

    @field_validator("trust_forwarded_for")
    @classmethod
    def _replaced(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "TRUST_FORWARDED_FOR was replaced by TRUSTED_PROXIES: list your proxies' addresses instead"
            )
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Self:
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError("CORS_ORIGINS may not contain '*' while CORS_ALLOW_CREDENTIALS is true; list the origins")
        return self


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def _is_low_entropy(value: str) -> bool:
    # `'a' * 32`, `'ab' * 16`, `0123456789` repeated: long enough, guessable all the same.
    if len(set(value)) < MIN_SECRET_DISTINCT_CHARACTERS:
        return True
    return any(value == (value[:period] * (len(value) // period + 1))[: len(value)] for period in range(1, 17))


def check_secret(name: str, value: SecretStr | None, env: Environment) -> None:
    """Refuse a missing, placeholder or short secret in production."""
    if env is not Environment.PRODUCTION:
        return
    if value is None or not value.get_secret_value():
        raise ConfigurationError(f"{name} is required when SHOPFLOOR_ENV=production")
    raw = value.get_secret_value()
    if len(raw) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"{name} is too short: use at least {MIN_SECRET_LENGTH} random characters in production"
        )
    if _is_placeholder(raw):
        raise ConfigurationError(f"{name} looks like a placeholder: set a random value in production")
    if _is_low_entropy(raw):
        raise ConfigurationError(
            f"{name} is guessable (few distinct characters or a repeated pattern): set a random value in production"
        )


class MqttSettings(BaseSettings):
    """The broker connection shared by the ingestor, the gateway and the simulators."""

    model_config = _config()

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600)
    # TLS towards the broker; the broker's certificate and host name are always checked. No CA file: the system's
    # trust store. A client certificate (both files) for listeners that require one.
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    # 5 for Mosquitto and other MQTT 5 brokers; 3.1.1 for brokers without MQTT 5 (the embedded demo broker, amqtt):
    # then no shared subscription and no session-expiry or receive-maximum properties.
    mqtt_protocol: Literal["5", "3.1.1"] = "5"

    @model_validator(mode="after")
    def _tls_holds_together(self) -> Self:
        # ConfigurationError passes through pydantic as it is: one line naming the variable.
        files = {"ca_file": self.mqtt_ca_file, "cert_file": self.mqtt_cert_file, "key_file": self.mqtt_key_file}
        if not self.mqtt_tls:
            given = [f"MQTT_{name.upper()}" for name, path in files.items() if path is not None]
            if given:
                raise ConfigurationError(f"{', '.join(given)} set but MQTT_TLS is false: set MQTT_TLS=true or unset it")
            return self
        tls = MqttTls(**files)
        try:
            tls.context()
        except MqttTlsError as error:
            raise ConfigurationError(f"MQTT_{error.field.upper()}: {error}") from None
        problem = check_tls_port(tls, self.mqtt_port)
        if problem:
            raise ConfigurationError(f"MQTT_PORT: {problem}")
        return self

    def endpoint(self) -> MqttEndpoint:
        """The broker as these settings describe it, for `core.mqtt.mqtt_client`."""
        tls = None
        if self.mqtt_tls:
            tls = MqttTls(ca_file=self.mqtt_ca_file, cert_file=self.mqtt_cert_file, key_file=self.mqtt_key_file)
        return MqttEndpoint(
            host=self.mqtt_host,
            port=self.mqtt_port,
            username=self.mqtt_username,
            password=self.mqtt_password.get_secret_value() if self.mqtt_password else None,
            protocol=self.mqtt_protocol,
            keepalive_s=self.mqtt_keepalive_s,
            tls=tls,
        )


class CommandSettings(BaseSettings):
    """Commands to machines (POST /machines/{id}/commands): the API publishes them on the broker (MQTT_* settings,
    the API's own login), the machine's gateway writes them."""

    model_config = _config()

    # Off: no command is published and the route answers 503 saying so.
    commands_enabled: bool = False
    # How long a command may wait to be executed when the request does not say (a gateway refuses it after that).
    command_expiry_s: int = Field(default=60, ge=1, le=3600)


class ProcessSettings(BaseSettings):
    """What every process reads: the environment, the database, logging."""

    model_config = _config()

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @property
    def env(self) -> Environment:
        """Shorthand for the runtime environment."""
        return self.runtime.shopfloor_env

    @classmethod
    def load(cls) -> Self:
        """The settings of this process from the environment; ConfigurationError (one line) when one is wrong.

        Building the settings validates them, secrets included: an unsafe production secret never gets as far
        as a running process, whoever builds the settings.
        """
        try:
            return cls()
        except ValidationError as error:
            first = error.errors()[0]
            name = ".".join(str(part) for part in first["loc"]).upper() or "settings"
            raise ConfigurationError(f"{name}: {first['msg']}") from None


class ApiProcessSettings(ProcessSettings):
    """Everything `shopfloor api` reads."""

    auth: AuthSettings = Field(default_factory=AuthSettings)
    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    oee: OeeSettings = Field(default_factory=OeeSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    commands: CommandSettings = Field(default_factory=CommandSettings)
    # Read only when COMMANDS_ENABLED: the broker the API publishes commands to, as its own login.
    mqtt: MqttSettings = Field(default_factory=MqttSettings)

    @model_validator(mode="after")
    def _safe_secrets(self) -> Self:
        # ConfigurationError is not a ValueError: pydantic lets it through as it is, with its one-line message.
        check_secret("SECRET_KEY", self.auth.secret_key, self.env)
        if self.env is Environment.PRODUCTION and self.commands.commands_enabled:
            if not self.mqtt.mqtt_tls or not self.mqtt.mqtt_username:
                raise ConfigurationError(
                    "COMMANDS_ENABLED=true when SHOPFLOOR_ENV=production needs MQTT_TLS=true and the API's own "
                    "MQTT_USERNAME (the broker lets only that login publish commands)"
                )
            if self.mqtt.mqtt_cert_file is None:
                check_secret("MQTT_PASSWORD", self.mqtt.mqtt_password, self.env)
        if self.env is Environment.PRODUCTION:
            if self.auth.allow_self_registration:
                raise ConfigurationError(
                    "ALLOW_SELF_REGISTRATION=true is refused when SHOPFLOOR_ENV=production: admins create accounts"
                )
            if self.api.api_metrics_enabled:
                check_secret("API_METRICS_TOKEN", self.api.api_metrics_token, self.env)
        return self

    @property
    def self_registration(self) -> bool:
        """Whether anyone may create a worker account (ALLOW_SELF_REGISTRATION, by default off in production)."""
        if self.auth.allow_self_registration is None:
            return self.env is not Environment.PRODUCTION
        return self.auth.allow_self_registration


class IngestorSettings(BaseSettings):
    """How the ingestor consumes, batches and stores telemetry."""

    model_config = _config()

    # A fixed id plus a persistent session: the broker keeps what was not acknowledged until this id returns. The
    # prefix is reserved for ingestors (mosquitto/make-logins.sh refuses gateway logins named so), so no gateway login,
    # which is bound to a client id of its own name, can ever hold an ingestor's id.
    ingest_client_id: str = Field(
        default="shopfloor-ingestor-1", pattern=r"^(ingestor|shopfloor-ingestor)[A-Za-z0-9_.:-]{0,46}$"
    )
    ingest_shared_group: str | None = Field(default="ingestors", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    ingest_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=60)
    # Adaptive batches (docs/performance.md): the writer takes whatever waits once it is free, up to the maximum
    # readings or bytes; below the minimum it waits for more, but never past the age of the oldest message.
    ingest_batch_min_readings: int = Field(default=1000, ge=1, le=1_000_000)
    ingest_batch_max_readings: int = Field(default=50_000, ge=1, le=1_000_000)
    ingest_batch_max_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    ingest_batch_max_age_ms: int = Field(default=200, ge=1, le=60_000)
    # Batches written at once, each on its own connection (acknowledged in order all the same).
    ingest_writers: int = Field(default=1, ge=1, le=4)
    # A sequence number still missing this long after a later one arrived is counted as a gap (seq_gap).
    ingest_seq_reorder_s: float = Field(default=60.0, ge=1, le=86_400)
    # Messages received but not yet committed; also the MQTT 5 Receive Maximum, so the broker never sends more.
    ingest_max_inflight: int = Field(default=1000, ge=10, le=65535)
    # Register unknown machines on first telemetry; unset: on in development and test, off in production (a device
    # login must not be able to fill the machine table). When on, capped per site per hour; the excess is
    # dead-lettered. Retained statuses never register machines.
    ingest_auto_register_machines: bool | None = None
    ingest_auto_register_max_per_site_per_hour: int = Field(default=50, ge=1, le=100_000)
    # Dead letters: the payload is cut to this many bytes (its size and SHA-256 are kept), letters older than the
    # retention are deleted (0 keeps them), and at most this many per topic per minute are stored (the rest are
    # acknowledged, counted and dropped).
    dead_letter_max_payload_bytes: int = Field(default=4096, ge=0, le=1024 * 1024)
    dead_letter_retention_days: int = Field(default=30, ge=0)
    dead_letter_max_per_topic_per_min: int = Field(default=60, ge=1)
    ingest_drain_timeout_s: float = Field(default=20.0, gt=0)
    ingest_metrics_port: int | None = Field(default=9101, ge=0, le=65535)
    # Loopback unless a scraper elsewhere needs it (0.0.0.0 in the containers, where the network is private).
    ingest_metrics_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _batch_bounds_hold_together(self) -> Self:
        if self.ingest_batch_min_readings > self.ingest_batch_max_readings:
            raise ConfigurationError(
                f"INGEST_BATCH_MIN_READINGS ({self.ingest_batch_min_readings}) is above INGEST_BATCH_MAX_READINGS "
                f"({self.ingest_batch_max_readings})"
            )
        return self


# A Sparkplug group, edge node, device or host id is one MQTT topic level: no separator, no wildcard.
_SPARKPLUG_NAME = r"^[^/+#\s][^/+#]{0,127}$"


class SparkplugSettings(BaseSettings):
    """The ingestor as a Sparkplug B host application (docs/machine_integration.md, "Sparkplug B")."""

    model_config = _config()

    sparkplug_enabled: bool = False
    # Its STATE topic is spBv1.0/STATE/<id> (the broker login must be allowed to publish it: MQTT_SPARKPLUG_HOST_IDS).
    sparkplug_host_id: str = Field(default="shopfloor", pattern=_SPARKPLUG_NAME)
    # The groups this host follows; empty: every group (spBv1.0/#).
    sparkplug_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # JSON objects: group -> site; "group/edge_node" or "group/edge_node/device" -> machine; metric name -> tag.
    # Unmapped ones get the defaults (site = group, machine = device or edge node, lower-cased; tag: lower-cased with
    # "/" -> "." and " " -> "_").
    sparkplug_sites: dict[str, str] = Field(default_factory=dict)
    sparkplug_machines: dict[str, str] = Field(default_factory=dict)
    sparkplug_tags: dict[str, str] = Field(default_factory=dict)
    # At most one Rebirth request per edge node in this interval (while its births do not come).
    sparkplug_rebirth_interval_s: float = Field(default=10.0, ge=1, le=3600)

    @field_validator("sparkplug_groups", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _mapping_holds_together(self) -> Self:
        # ConfigurationError passes through pydantic as it is: one line naming the variable.
        name = re.compile(_SPARKPLUG_NAME)
        for group in self.sparkplug_groups:
            if not name.match(group):
                raise ConfigurationError(f"SPARKPLUG_GROUPS: {group[:80]!r} is not a Sparkplug group id")
        # Listing a default (as .env.example does) is fine; anything else while Sparkplug is off would do nothing.
        fields = type(self).model_fields
        used = {
            name
            for name in self.model_fields_set - {"sparkplug_enabled"}
            if getattr(self, name) != fields[name].get_default(call_default_factory=True)
        }
        if used and not self.sparkplug_enabled:
            names = ", ".join(sorted(field.upper() for field in used))
            raise ConfigurationError(f"{names} set but SPARKPLUG_ENABLED is false: set SPARKPLUG_ENABLED=true or unset")
        for group, site in self.sparkplug_sites.items():
            if not name.match(group) or not is_code(site):
                raise ConfigurationError(
                    f"SPARKPLUG_SITES: {group[:80]!r} -> {site[:80]!r} needs a group id and a site code"
                )
            if self.sparkplug_groups and group not in self.sparkplug_groups:
                raise ConfigurationError(f"SPARKPLUG_SITES: group {group[:80]!r} is not in SPARKPLUG_GROUPS")
        for path, machine in self.sparkplug_machines.items():
            parts = path.split("/")
            if len(parts) not in (2, 3) or not all(name.match(part) for part in parts) or not is_code(machine):
                raise ConfigurationError(
                    f"SPARKPLUG_MACHINES: {path[:160]!r} -> {machine[:80]!r} needs group/edge_node[/device] and a code"
                )
            if self.sparkplug_groups and parts[0] not in self.sparkplug_groups:
                raise ConfigurationError(f"SPARKPLUG_MACHINES: group {parts[0][:80]!r} is not in SPARKPLUG_GROUPS")
        for metric, tag in self.sparkplug_tags.items():
            if not metric or not is_tag(tag):
                raise ConfigurationError(f"SPARKPLUG_TAGS: {metric[:80]!r} -> {tag[:80]!r} needs a tag name")
        return self

    def mapping(self) -> SparkplugMapping:
        """The configured mapping (defaults for what is not listed)."""
        return SparkplugMapping(
            sites=dict(self.sparkplug_sites), machines=dict(self.sparkplug_machines), tags=dict(self.sparkplug_tags)
        )


class IngestorProcessSettings(ProcessSettings):
    """Everything `shopfloor ingest` reads."""

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestorSettings = Field(default_factory=IngestorSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    sparkplug: SparkplugSettings = Field(default_factory=SparkplugSettings)

    @model_validator(mode="after")
    def _certificate_names_the_client(self) -> Self:
        # On the client-certificate listener the broker replaces the client id by the certificate's name, so a
        # different INGEST_CLIENT_ID would be silently ignored (and two ingestors with one certificate would keep
        # throwing each other off): refuse it at start instead.
        if self.mqtt.mqtt_cert_file is not None:
            name = certificate_common_name(self.mqtt.mqtt_cert_file)
            if name is not None and name != self.ingest.ingest_client_id:
                raise ConfigurationError(
                    f"MQTT_CERT_FILE is the certificate of {name!r}, but INGEST_CLIENT_ID is "
                    f"{self.ingest.ingest_client_id!r}: the broker uses the certificate's name as the client id, "
                    f"so set INGEST_CLIENT_ID={name} (one certificate per ingestor process)"
                )
        return self

    @model_validator(mode="after")
    def _safe_secrets(self) -> Self:
        if self.env is Environment.PRODUCTION and self.mqtt.mqtt_username:
            check_secret("MQTT_PASSWORD", self.mqtt.mqtt_password, self.env)
        if self.env is Environment.PRODUCTION and not self.mqtt.mqtt_username:
            raise ConfigurationError(
                "MQTT_USERNAME is required when SHOPFLOOR_ENV=production (the broker refuses anonymous)"
            )
        return self

    @property
    def auto_register_machines(self) -> bool:
        """Whether telemetry of unknown machines registers them (INGEST_AUTO_REGISTER_MACHINES, off in production)."""
        if self.ingest.ingest_auto_register_machines is None:
            return self.env is not Environment.PRODUCTION
        return self.ingest.ingest_auto_register_machines


class ToolSettings(ProcessSettings):
    """What the maintenance commands (`migrate`, `seed`, `user`, `gateway`) read."""

    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    timeseries: TimeseriesSettings = Field(default_factory=TimeseriesSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
