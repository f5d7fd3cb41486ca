"""The one way our processes build an MQTT client: protocol, login, client id, keep-alive and TLS.

The ingestor, the gateway and the MQTT-native simulator describe their broker with an `MqttEndpoint` (from
`MqttSettings` or the gateway's YAML) and get their `aiomqtt.Client` from `mqtt_client`, so a setting such as
TLS cannot be honoured by one process and forgotten by another.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    import aiomqtt

# IANA's ports: 1883 is plain MQTT, 8883 is MQTT over TLS. A TLS client on 1883 only ever sees handshake
# failures, retried forever; refusing it at start says what is wrong.
PLAIN_PORT = 1883
TLS_PORT = 8883


class MqttTlsError(ValueError):
    """A TLS file is missing, unreadable or not what it should be; `field` names which one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class MqttTls:
    """TLS towards the broker: whom to trust and, for client-certificate listeners, who we are."""

    # None: the system's trust store (a broker with a public certificate).
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that checks the broker's certificate and host name; MqttTlsError names a bad file."""
        for name in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise MqttTlsError(name, f"{path} does not exist or is not a file")
        if (self.cert_file is None) != (self.key_file is None):
            field = "key_file" if self.key_file is None else "cert_file"
            raise MqttTlsError(field, "a client certificate needs both cert_file and key_file")
        # create_default_context: TLS 1.2+, CERT_REQUIRED and check_hostname, the server-name check.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (ssl.SSLError, OSError) as error:
                raise MqttTlsError("ca_file", f"{self.ca_file}: not a PEM CA certificate ({error})") from None
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(certfile=str(self.cert_file), keyfile=str(self.key_file))
            except (ssl.SSLError, OSError) as error:
                raise MqttTlsError(
                    "cert_file",
                    f"{self.cert_file} with {self.key_file}: not a matching PEM certificate and key ({error})",
                ) from None
        return context


def check_tls_port(tls: MqttTls | None, port: int) -> str | None:
    """Why this TLS / port pair cannot work, or None."""
    if tls is not None and port == PLAIN_PORT:
        return f"TLS is on but the port is {PLAIN_PORT}, the plain MQTT port (the TLS listener is {TLS_PORT})"
    return None


@dataclass(frozen=True)
class MqttEndpoint:
    """Where a process connects and as whom."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = 30
    tls: MqttTls | None = None


@cache
def _client_class() -> type[aiomqtt.Client]:
    """aiomqtt's client with one race closed (built on first use: see `mqtt_client` for why it is imported late).

    When paho asks for write readiness, aiomqtt schedules `loop.add_writer(fd, …)` onto the event loop; if the
    connection drops before that runs (a broker stopping while we publish or acknowledge), paho has closed the
    socket and `add_writer` raises `OSError: Bad file descriptor` inside the loop, which asyncio logs at ERROR with a
    traceback. The drop itself is already reported to the caller (as an MqttError), so the late registration is
    simply skipped. aiomqtt 2.5.1; the callback body is aiomqtt's own.
    """
    import aiomqtt
    import paho.mqtt.client as paho

    class Client(aiomqtt.Client):
        def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
            fileno = sock.fileno()

            def callback() -> None:
                try:
                    client.loop_write()
                except Exception as exc:  # aiomqtt's own handling: a broken link ends the session
                    if not self._disconnected.done():
                        self._disconnected.set_exception(exc)

            def register() -> None:
                with contextlib.suppress(OSError, ValueError):  # the socket closed meanwhile: nothing to write
                    self._loop.add_writer(fileno, callback)

            self._loop.call_soon_threadsafe(register)

    return Client


def mqtt_client(endpoint: MqttEndpoint, *, identifier: str, **options: Any) -> aiomqtt.Client:
    """An aiomqtt client for `endpoint` with this client id; `options` are aiomqtt's (will, clean_start, …)."""
    # Imported here: core.settings uses this module, and the API, which never speaks MQTT, should not load it.
    import aiomqtt

    return _client_class()(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5 if endpoint.protocol == "5" else aiomqtt.ProtocolVersion.V311,
        keepalive=endpoint.keepalive_s,
        tls_context=endpoint.tls.context() if endpoint.tls is not None else None,
        **options,
    )


class SubscriptionRefused(Exception):
    """The broker refused a SUBSCRIBE: the login's rules do not allow the topic filter. Retrying cannot help."""

    def __init__(self, topic_filter: str, code: int) -> None:
        super().__init__(f"the broker refused the subscription to {topic_filter} (reason code {code})")
        self.topic_filter = topic_filter
        self.code = code


async def subscribe_or_raise(client: aiomqtt.Client, topic_filter: str, *, qos: int) -> None:
    """SUBSCRIBE and check the SUBACK: a refusal (code 0x80 or above) raises SubscriptionRefused.

    aiomqtt returns the SUBACK's codes without judging them, so a refused subscription would otherwise look
    like a working one that never receives anything.
    """
    for granted in await client.subscribe(topic_filter, qos=qos):
        code = granted if isinstance(granted, int) else granted.value
        if code >= 0x80:
            raise SubscriptionRefused(topic_filter, code)


def certificate_common_name(path: Path) -> str | None:
    """The Common Name of a PEM client certificate (the broker's login on its certificate listener); None when the
    file cannot be read as one (the TLS settings check reports that on its own)."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
