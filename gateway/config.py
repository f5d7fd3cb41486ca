"""The gateway's YAML configuration, validated by pydantic; every error names its field."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from core.commands import WriteLimits
from core.contract import CODE_PATTERN, TAG_PATTERN, MachineState
from core.mqtt import MqttEndpoint, MqttTls, MqttTlsError, check_tls_port
from core.registers import REGISTER_COUNT, DataType, Order, RegisterType
from gateway.pki import (
    ClientApplication,
    Pki,
    default_application_uri,
    load_certificate_bytes,
    load_private_key_bytes,
)

Code = Annotated[str, Field(pattern=f"^{CODE_PATTERN}$")]
TagName = Annotated[str, Field(pattern=f"^{TAG_PATTERN}$")]


def _ordered_range(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    if math.isnan(low) or math.isnan(high):
        raise ValueError("a bound is not a number")
    if low > high:
        raise ValueError(f"min {low:g} is above max {high:g}")
    return bounds


# A tag's engineering range `[min, max]` (inclusive; `.inf` / `-.inf` for one side only): a number read outside it is
# published with quality bad "out_of_range" (gateway.plausibility).
EngineeringRange = Annotated[tuple[float, float], AfterValidator(_ordered_range)]
# Whose clock stamps an OPC-UA value: the device's (SourceTimestamp), the server's, or the gateway's read time.
TimestampMode = Literal["source", "server", "gateway"]


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BrokerTls(_Strict):
    """TLS towards the broker; its certificate and host name are always checked. Relative paths: from the file."""

    # None: the system's trust store.
    ca_file: Path | None = None
    # Both, for a listener that requires client certificates.
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: a client certificate needs both cert_file and key_file")
        return self

    def resolved(self, folder: Path) -> BrokerTls:
        """The same files, relative paths taken from `folder`."""
        paths = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return self.model_copy(
            update={name: folder / path for name, path in paths.items() if path is not None and not path.is_absolute()}
        )


class BrokerConfig(_Strict):
    """Where to publish."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    # `tls: true` (system trust store) or a mapping of BrokerTls fields; absent or false: plain MQTT.
    tls: BrokerTls | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # "5" (Mosquitto) or "3.1.1" (brokers without MQTT 5, such as the embedded demo broker). On 3.1.1 a PUBACK
    # carries no reason code, so "no matching subscribers" cannot hold a message back in the buffer.
    protocol: Literal["5", "3.1.1"] = "5"
    # Client id of the publisher connection; also keys the retained gateway status.
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_shorthand(cls, value: object) -> object:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _tls_port(self) -> Self:
        problem = check_tls_port(MqttTls() if self.tls is not None else None, self.port)
        if problem:
            raise ValueError(f"port: {problem}")
        return self

    def endpoint(self) -> MqttEndpoint:
        """The broker as this section describes it, for `core.mqtt.mqtt_client`."""
        tls = None
        if self.tls is not None:
            tls = MqttTls(ca_file=self.tls.ca_file, cert_file=self.tls.cert_file, key_file=self.tls.key_file)
        return MqttEndpoint(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            protocol=self.protocol,
            keepalive_s=self.keepalive_s,
            tls=tls,
        )


class BufferConfig(_Strict):
    """The on-disk store-and-forward queue (SQLite, WAL)."""

    path: Path = Path("data/gateway-buffer.db")
    max_messages: int = Field(default=1_000_000, ge=1)
    max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    max_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    # Replay after an outage is paced so the broker and the ingestor catch up without a burst.
    replay_rate_per_s: float = Field(default=500, gt=0)


class PublishConfig(_Strict):
    """How samples are grouped into messages and written to the disk buffer."""

    max_samples_per_message: int = Field(default=200, ge=1, le=1000)
    # Every completed poll is written to the disk buffer before the device's next poll starts. This is the longest
    # a poll waits for other devices' polls to share its SQLite transaction (0: write at once; polls that complete
    # while a write is running share the next one anyway). Small, because the device's next poll waits for it.
    flush_interval_s: float = Field(default=0.05, ge=0, le=0.25)


class ModbusTag(_Strict):
    """One value in a Modbus device: where it is and how to decode it (value = raw * scale + offset)."""

    name: TagName
    # `register` in YAML; the attribute has another name because pydantic models already have a `register`.
    table: RegisterType = Field(default=RegisterType.HOLDING, alias="register")
    address: int = Field(ge=0, le=65535)
    data_type: DataType = DataType.UINT16
    order: Order = Order.ABCD
    scale: float = 1.0
    offset: float = 0.0
    deadband: float | None = Field(default=None, ge=0)
    range: EngineeringRange | None = None
    # What a command may write here (holding registers and coils only); None: read-only, never written.
    writable: WriteLimits | None = None

    @property
    def count(self) -> int:
        """Registers (or bits) it spans."""
        return 1 if self.table in (RegisterType.COIL, RegisterType.DISCRETE) else REGISTER_COUNT[self.data_type]

    @model_validator(mode="after")
    def _bits_are_bool(self) -> Self:
        if self.table in (RegisterType.COIL, RegisterType.DISCRETE) and self.data_type is not DataType.BOOL:
            raise ValueError(f"data_type: a {self.table.value} is one bit, so it must be bool")
        return self

    @model_validator(mode="after")
    def _writable_table(self) -> Self:
        if self.writable is None:
            return self
        if self.table in (RegisterType.INPUT, RegisterType.DISCRETE):
            kind = "an input register" if self.table is RegisterType.INPUT else "a discrete input"
            raise ValueError(
                f"writable: {kind} is read-only in Modbus; only holding registers and coils can be written"
            )
        if (self.writable.type == "bool") != (self.data_type is DataType.BOOL):
            if self.data_type is DataType.BOOL:
                raise ValueError(f"writable: a {self.table.value} of data_type bool is written as type bool")
            raise ValueError(f"writable: type bool needs a coil (or data_type bool), not a {self.data_type.value}")
        return self


class OpcUaTag(_Strict):
    """One variable of an OPC-UA server, by node id (e.g. `ns=2;s=Machine.BarrelTemp` or `ns=2;i=1004`)."""

    name: TagName
    node_id: str = Field(min_length=3, max_length=512)
    deadband: float | None = Field(default=None, ge=0)
    range: EngineeringRange | None = None
    # None: the device's `timestamp`.
    timestamp: TimestampMode | None = None
    # What a command may write here, checked again against the node's own data type when written; None: read-only.
    writable: WriteLimits | None = None


class _Device(_Strict):
    machine: Code
    timeout_s: float = Field(default=3.0, gt=0, le=120)
    # The tag that carries the machine state; its raw value is mapped to a state name through state_map.
    state_tag: TagName | None = None
    state_map: dict[int, MachineState] = Field(default_factory=dict)

    @field_validator("state_map", mode="before")
    @classmethod
    def _yaml_states(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false (and `on` as true): take them back as the words that were written.
        if isinstance(value, dict):
            words = {False: "off", True: "on"}
            return {key: words.get(state, state) if isinstance(state, bool) else state for key, state in value.items()}
        return value

    @model_validator(mode="after")
    def _state_map_needs_state_tag(self) -> Self:
        if self.state_map and self.state_tag is None:
            raise ValueError("state_map: given without a state_tag to apply it to")
        return self


# Serial line speeds a Modbus RTU device is set to (the rates of the spec's table and of common converters).
STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
# The Modbus serial line spec's defaults: 9600 baud, 8 data bits, even parity, 1 stop bit.
RTU_LINE_DEFAULTS: dict[str, object] = {"baudrate": 9600, "bytesize": 8, "parity": "E", "stopbits": 1}
_RTU_LINE_SETTINGS = ("serial_port", "baudrate", "parity", "stopbits", "bytesize")


class ModbusDevice(_Device):
    """A Modbus device, polled: over TCP, on an RTU serial line, or RTU framed through a serial device server."""

    protocol: Literal["modbus"]
    # tcp: Modbus TCP at host:port. rtu: RTU frames on the serial line `serial_port` (RS-485/RS-232), shared with
    # every device of that line. rtu_over_tcp: RTU frames through a serial device server (a transparent RS-485 to
    # TCP converter) at host:port, shared with every device behind it.
    transport: Literal["tcp", "rtu", "rtu_over_tcp"] = "tcp"
    host: str | None = Field(default=None, min_length=1)
    # tcp: 502 when left out; rtu_over_tcp: required (serial device servers have no standard port).
    port: int | None = Field(default=None, ge=1, le=65535)
    # rtu only; the devices of one serial_port must agree on the line settings (RTU_LINE_DEFAULTS when left out).
    serial_port: str | None = Field(default=None, min_length=1)
    baudrate: int | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    bytesize: Literal[7, 8] | None = None
    # rtu and rtu_over_tcp: silence the line keeps after each request to this device, for slow devices and RS-485
    # converters. On rtu never less than the 3.5-character gap that ends an RTU frame (the default).
    inter_request_delay_ms: float | None = Field(default=None, ge=0, le=10_000)
    # On a serial line (rtu, rtu_over_tcp) 1..247: 0 is the broadcast address, which no device answers.
    unit_id: int = Field(default=1, ge=0, le=255)
    poll_interval_s: float = Field(default=1.0, ge=0.01, le=3600)
    # A gap of up to this many unused registers is read through rather than split into another request.
    max_gap: int = Field(default=8, ge=0, le=100)
    max_registers_per_request: int = Field(default=120, ge=1, le=125)
    # Pause between requests of one poll, so a small PLC is not flooded.
    request_pause_s: float = Field(default=0.0, ge=0, le=10)
    tags: list[ModbusTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_overlaps(self) -> Self:
        names: set[str] = set()
        used: dict[tuple[RegisterType, int], str] = {}
        for index, tag in enumerate(self.tags):
            if tag.name in names:
                raise ValueError(f"tags.{index}.name: {tag.name!r} appears twice")
            names.add(tag.name)
            for address in range(tag.address, tag.address + tag.count):
                clash = used.get((tag.table, address))
                if clash is not None:
                    raise ValueError(
                        f"tags.{index}: {tag.name!r} overlaps {clash!r} at {tag.table.value} register {address}"
                    )
                used[(tag.table, address)] = tag.name
            if tag.address + tag.count - 1 > 65535:
                raise ValueError(f"tags.{index}: {tag.name!r} runs past register 65535")
            if tag.count > self.max_registers_per_request:
                raise ValueError(
                    f"tags.{index}: {tag.name!r} spans {tag.count} registers, more than "
                    f"max_registers_per_request ({self.max_registers_per_request})"
                )
        _check_state_tag(self.state_tag, self.tags)
        return self

    @model_validator(mode="before")
    @classmethod
    def _transport_defaults(cls, data: object) -> object:
        # Defaults that depend on the transport are filled in before validation, so that a setting left out and a
        # setting that does not apply to the transport stay apart: `_transport_settings` refuses the second.
        if isinstance(data, dict):
            transport = data.get("transport", "tcp")
            if transport == "tcp":
                return {"port": 502, **data}
            if transport == "rtu":
                return {**RTU_LINE_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _transport_settings(self) -> Self:
        given = {name: getattr(self, name) for name in ("host", "port", *_RTU_LINE_SETTINGS)}
        if self.transport == "rtu":
            if self.serial_port is None:
                raise ValueError("serial_port: Field required (transport rtu)")
            for name in ("host", "port"):
                if given[name] is not None:
                    raise ValueError(f"{name}: not used by transport rtu (the line is serial_port)")
            if self.baudrate not in STANDARD_BAUDRATES:
                rates = ", ".join(str(rate) for rate in STANDARD_BAUDRATES)
                raise ValueError(f"baudrate: {self.baudrate} is not a standard rate ({rates})")
            gap_ms = self.silent_interval_s * 1000
            if self.inter_request_delay_ms is not None and self.inter_request_delay_ms < gap_ms:
                raise ValueError(
                    f"inter_request_delay_ms: {self.inter_request_delay_ms:g} is shorter than the 3.5-character gap "
                    f"of this line ({gap_ms:.2f} ms), which the gateway always keeps; leave it out for that minimum"
                )
        else:
            for name in _RTU_LINE_SETTINGS:
                if given[name] is not None:
                    raise ValueError(f"{name}: applies to transport rtu only, not {self.transport}")
            if self.host is None:
                raise ValueError("host: Field required")
            if self.port is None:
                why = " (a serial device server has no standard port)" if self.transport == "rtu_over_tcp" else ""
                raise ValueError(f"port: Field required{why}")
            if self.transport == "tcp" and self.inter_request_delay_ms is not None:
                raise ValueError(
                    "inter_request_delay_ms: applies to the shared lines of rtu and rtu_over_tcp; "
                    "a tcp device paces its own requests with request_pause_s"
                )
        if self.transport != "tcp" and not 1 <= self.unit_id <= 247:
            raise ValueError(f"unit_id: {self.unit_id} on a serial line; use 1..247 (0 is broadcast, never answered)")
        return self

    @property
    def line(self) -> str:
        """Where the requests go: `serial_port`, or `host:port`. Devices with the same line share one connection
        (rtu and rtu_over_tcp) and have one request on it at a time."""
        return self.serial_port if self.serial_port is not None else f"{self.host}:{self.port}"

    @property
    def line_settings(self) -> tuple[int | None, str | None, int | None, int | None]:
        """baudrate, parity, stopbits, bytesize: what the devices of one serial line must agree on."""
        return self.baudrate, self.parity, self.stopbits, self.bytesize

    @property
    def silent_interval_s(self) -> float:
        """rtu: the 3.5-character silence that ends a frame (a fixed 1.75 ms above 19200 baud, as the Modbus serial
        line spec says); 0 for the other transports."""
        if self.transport != "rtu" or self.baudrate is None:
            return 0.0
        if self.baudrate > 19200:
            return 0.00175
        bits = 1 + (self.bytesize or 8) + (self.parity != "N") + (self.stopbits or 1)
        return 3.5 * bits / self.baudrate

    @property
    def line_pause_s(self) -> float:
        """The silence the line keeps after each request to this device."""
        return max((self.inter_request_delay_ms or 0.0) / 1000, self.silent_interval_s)


def check_modbus_lines(devices: Sequence[object]) -> None:
    """Devices sharing a serial line (or serial device server) agree on its settings, one unit id each, and a
    host:port speaks one framing; ValueError names both devices."""
    first: dict[str, tuple[int, ModbusDevice]] = {}
    units: dict[tuple[str, int], ModbusDevice] = {}
    for index, device in enumerate(devices):
        if not isinstance(device, ModbusDevice):
            continue
        seen = first.setdefault(device.line, (index, device))[1]
        if device.transport != seen.transport and "tcp" in (device.transport, seen.transport):
            raise ValueError(
                f"devices.{index}.transport: {device.machine!r} ({device.transport}) and {seen.machine!r} "
                f"({seen.transport}) use the same {device.line}; one connection speaks one framing"
            )
        if device.transport == "tcp":
            continue
        for name, mine, theirs in zip(
            ("baudrate", "parity", "stopbits", "bytesize"), device.line_settings, seen.line_settings, strict=True
        ):
            if mine != theirs:
                raise ValueError(
                    f"devices.{index}.{name}: {device.machine!r} sets {mine} but {seen.machine!r} sets {theirs} on "
                    f"the same serial line {device.line}; a line has one setting"
                )
        clash = units.setdefault((device.line, device.unit_id), device)
        if clash is not device:
            raise ValueError(
                f"devices.{index}.unit_id: {device.machine!r} and {clash.machine!r} both use unit {device.unit_id} "
                f"on {device.line}"
            )


def _check_state_tag(state_tag: str | None, tags: Sequence[ModbusTag | OpcUaTag]) -> None:
    names = {tag.name for tag in tags}
    if state_tag is not None and state_tag not in names:
        raise ValueError(f"state_tag: {state_tag!r} is not one of the tags")
    # The contract reserves `state` for state names: a numeric tag of that name would be refused by the ingestor.
    if "state" in names and state_tag != "state":
        raise ValueError("tags: a tag named 'state' must be the state_tag (the contract reserves the name)")
    # The state tag is published as a state name through state_map: a command writing its raw code would bypass
    # the machine's own state logic.
    for index, tag in enumerate(tags):
        if tag.name == state_tag and tag.writable is not None:
            raise ValueError(f"tags.{index}.writable: the state tag {tag.name!r} cannot be writable")


def writable_tags(device: ModbusDevice | OpcUaDevice) -> dict[str, WriteLimits]:
    """The tags of a device that commands may write, with their limits (empty: the device takes no commands)."""
    return {tag.name: tag.writable for tag in device.tags if tag.writable is not None}


class SecurityPolicy(StrEnum):
    """OPC-UA security policies the gateway speaks (the older SHA-1 ones are deprecated by the spec and refused)."""

    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class SecurityMode(StrEnum):
    """OPC-UA message security mode of the secure channel."""

    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class OpcUaDevice(_Device):
    """An OPC-UA server, polled or subscribed."""

    protocol: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    mode: Literal["poll", "subscribe"] = "subscribe"
    poll_interval_s: float = Field(default=1.0, ge=0.01, le=3600)
    publishing_interval_ms: int = Field(default=500, ge=10, le=60_000)
    # A subscription silent this long is rebuilt; after repeated silence the device falls back to polling.
    watchdog_s: float = Field(default=10.0, gt=0, le=3600)
    # Whose time a value carries (falling back to the server's, then the gateway's, when absent), and how far from
    # the gateway's clock it may be before the gateway's read time replaces it (flagged uncertain "clock_skew").
    timestamp: TimestampMode = "source"
    max_clock_skew_s: float = Field(default=300.0, gt=0, le=86_400)
    # Both or neither: a policy without a mode (or the reverse) is refused, never guessed.
    security_policy: SecurityPolicy = SecurityPolicy.NONE
    security_mode: SecurityMode | None = None
    # User identity: anonymous (nothing), username + password (inline or from a file), or a user certificate.
    username: str | None = None
    password: SecretStr | None = None
    # A file holding only the password (one trailing newline ignored); relative paths: from the config file.
    password_file: Path | None = None
    user_certificate: Path | None = None
    user_key: Path | None = None
    # Lab use only: let the password travel readable on the network (security policy None, or a server whose
    # username token would carry it unencrypted over a Sign channel). Refused otherwise.
    allow_insecure_password: bool = False
    tags: list[OpcUaTag] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        # The endpoint is logged with every event of the device; a login in it would end up in the logs, and it
        # would bypass the username/password checks below. The value itself is left out of the message.
        if "@" in urlsplit(value).netloc:
            raise ValueError("a user name or password in the URL is not allowed; use username and password_file")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [tag.name for tag in self.tags]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tags: {', '.join(duplicates)} appear more than once")
        _check_state_tag(self.state_tag, self.tags)
        return self

    @model_validator(mode="after")
    def _security(self) -> Self:
        policy, mode = self.security_policy, self.security_mode
        if policy is SecurityPolicy.NONE and mode not in (None, SecurityMode.NONE):
            raise ValueError(f"security_mode: {mode} needs a security_policy other than None")
        if policy is not SecurityPolicy.NONE and mode in (None, SecurityMode.NONE):
            raise ValueError(f"security_mode: security_policy {policy} needs security_mode Sign or SignAndEncrypt")
        if self.password is not None and self.password_file is not None:
            raise ValueError("password_file: give password or password_file, not both")
        has_password = self.password is not None or self.password_file is not None
        if has_password and not self.username:
            raise ValueError("username: a password is given without a username")
        if (self.user_certificate is None) != (self.user_key is None):
            raise ValueError("user_certificate: a user certificate needs both user_certificate and user_key")
        if self.user_certificate is not None and self.username:
            raise ValueError("user_certificate: one user identity per device, a username or a user certificate")
        if self.username and not has_password:
            raise ValueError("password: a username needs a password (password or password_file)")
        if self.username and policy is SecurityPolicy.NONE and not self.allow_insecure_password:
            raise ValueError(
                "security_policy: with security policy None the password would travel in clear; use a secured "
                "policy (SignAndEncrypt), or set allow_insecure_password: true (lab use only)"
            )
        return self

    @property
    def secured(self) -> bool:
        """Whether the secure channel signs (and maybe encrypts): the gateway's certificate is then needed."""
        return self.security_policy is not SecurityPolicy.NONE

    def resolved(self, folder: Path) -> OpcUaDevice:
        """The same device, its relative file paths taken from `folder`."""
        paths = {
            "password_file": self.password_file,
            "user_certificate": self.user_certificate,
            "user_key": self.user_key,
        }
        return self.model_copy(
            update={name: folder / path for name, path in paths.items() if path is not None and not path.is_absolute()}
        )

    def password_value(self) -> str | None:
        """The password, read from `password_file` when that is how it is given; ConfigError if unreadable."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"password_file: cannot read {self.password_file}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"password_file: {self.password_file} is not UTF-8 text") from None
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigError(f"password_file: {self.password_file} is empty")
        return password


class OpcUaClientConfig(_Strict):
    """The gateway as an OPC-UA application: its ApplicationURI and the folder of its certificates."""

    # Written into the subjectAltName of the gateway's certificate; servers check that the two match.
    # None: `urn:<gateway_id>.<site>:shopfloor:gateway` (GatewayConfig.application_uri).
    application_uri: str | None = Field(default=None, pattern=r"^urn:\S+$")
    # own/, trusted/, rejected/, issuers/. Default: `opcua-pki` beside the buffer file. Relative: from the file.
    pki_dir: Path | None = None


Device = Annotated[ModbusDevice | OpcUaDevice, Field(discriminator="protocol")]


class GatewayConfig(_Strict):
    """Everything `shopfloor gateway --config FILE` reads."""

    site: Code
    gateway_id: Code
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    # Report by exception: unchanged values (within their deadband) are sent again only this often.
    full_refresh_s: float = Field(default=60.0, gt=0, le=86_400)
    metrics_port: int | None = Field(default=9102, ge=0, le=65535)
    # Loopback unless a scraper elsewhere needs it (0.0.0.0 in the containers, where the network is private).
    metrics_host: str = "127.0.0.1"
    opcua: OpcUaClientConfig = Field(default_factory=OpcUaClientConfig)
    devices: list[Device] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_machines(self) -> Self:
        machines = [device.machine for device in self.devices]
        duplicates = sorted({machine for machine in machines if machines.count(machine) > 1})
        if duplicates:
            raise ValueError(f"devices: machine {', '.join(duplicates)} is configured more than once")
        return self

    @model_validator(mode="after")
    def _modbus_lines(self) -> Self:
        check_modbus_lines(self.devices)
        return self

    @property
    def pki_dir(self) -> Path:
        """The OPC-UA certificate folder: the configured one, or `opcua-pki` beside the buffer file."""
        return self.opcua.pki_dir or self.buffer.path.parent / "opcua-pki"

    @property
    def application_uri(self) -> str:
        """The ApplicationURI the gateway announces: the configured one, or one made of gateway_id and site."""
        return self.opcua.application_uri or default_application_uri(self.site, self.gateway_id)

    def client_application(self, config_file: Path | None = None) -> ClientApplication:
        """The gateway as an OPC-UA client: its ApplicationURI and certificate folder."""
        return ClientApplication(self.application_uri, Pki(self.pki_dir), config_file)

    def to_yaml(self) -> str:
        """The config as the YAML `parse_config` reads back to an equal config (secrets written in clear)."""
        return yaml.safe_dump(_plain(self.model_dump(by_alias=True, exclude_none=True)), sort_keys=False)


def _plain(value: object) -> object:
    """YAML-safe data: secrets revealed, enums by value, paths as text."""
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


_PROTOCOLS = {"modbus", "opcua"}
_RELATIVE = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*): (.+)$", re.DOTALL)


def _describe(error: ValidationError) -> str:
    """`devices.0.tags.6.data_type: …`: the YAML path of each error, whichever validator found it."""
    lines = []
    for item in error.errors(include_url=False):
        # The discriminated union adds the protocol to the location; it is not a key of the file.
        parts = [
            str(part)
            for index, part in enumerate(item["loc"])
            if not (index >= 2 and item["loc"][index - 2] == "devices" and part in _PROTOCOLS)
        ]
        message = item["msg"].removeprefix("Value error, ")
        relative = _RELATIVE.match(message)
        if relative:  # a model validator names the field inside the model it checks
            parts.append(relative.group(1))
            message = relative.group(2)
        lines.append(f"{'.'.join(parts) or 'config'}: {message}")
    return "; ".join(lines)


def parse_config(text: str, *, source: str = "config") -> GatewayConfig:
    """Validate YAML text; ConfigError names every wrong field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a config file; a relative buffer path is taken relative to the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    config = parse_config(text, source=str(path))
    if not config.buffer.path.is_absolute():
        buffer = config.buffer.model_copy(update={"path": path.parent / config.buffer.path})
        config = config.model_copy(update={"buffer": buffer})
    if config.opcua.pki_dir is not None and not config.opcua.pki_dir.is_absolute():
        opcua = config.opcua.model_copy(update={"pki_dir": path.parent / config.opcua.pki_dir})
        config = config.model_copy(update={"opcua": opcua})
    devices = [device.resolved(path.parent) if isinstance(device, OpcUaDevice) else device for device in config.devices]
    config = config.model_copy(update={"devices": devices})
    for index, device in enumerate(devices):
        if isinstance(device, OpcUaDevice):
            try:
                device.password_value()
            except ConfigError as error:
                raise ConfigError(f"{path}: devices.{index}.{error}") from None
            problem = _user_certificate_problem(device)
            if problem:
                raise ConfigError(f"{path}: devices.{index}.{problem}")
    if config.broker.tls is not None:
        broker = config.broker.model_copy(update={"tls": config.broker.tls.resolved(path.parent)})
        config = config.model_copy(update={"broker": broker})
        try:
            tls = broker.endpoint().tls
            if tls is not None:
                tls.context()
        except MqttTlsError as error:
            raise ConfigError(f"{path}: broker.tls.{error.field}: {error}") from None
    return config


def _user_certificate_problem(device: OpcUaDevice) -> str | None:
    """Why the user certificate and key of a device cannot be used (`field: reason`), or None."""
    if device.user_certificate is None or device.user_key is None:
        return None
    for field, file in (("user_certificate", device.user_certificate), ("user_key", device.user_key)):
        try:
            data = file.read_bytes()
        except OSError as error:
            return f"{field}: cannot read {file}: {error.strerror}"
        try:
            if field == "user_certificate":
                load_certificate_bytes(data)
            else:
                load_private_key_bytes(data)
        except ValueError:
            return f"{field}: {file} is not a PEM or DER {field.removeprefix('user_').replace('_', ' ')}"
    return None
