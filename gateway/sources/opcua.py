"""OPC-UA device source (asyncua): a batched Read per poll, or a subscription watched by a watchdog.

Polling reads the Value attribute of every tag in one Read request (`Client.read_attributes`, which keeps the
DataValue with its timestamps; `read_values` would drop them) on a fixed grid of `poll_interval_s`, so slow reads
or a slow consumer never make the schedule drift: missed ticks are skipped and counted.

Subscribing creates one subscription at `publishing_interval_ms` with a monitored item per tag; asyncua calls the
handler for every data change and the handler only puts it into a bounded queue. `values()` yields what arrived
together as one batch. If nothing arrives for `watchdog_s` while the server still answers a read of its CurrentTime,
the subscription is rebuilt once; if the rebuilt one is silent for `watchdog_s` too, this connection falls back to
polling (`opcua_watchdog_fallback`). A machine whose values really do not change for `watchdog_s` therefore ends up
polled, which costs a read per poll interval and loses nothing.

Whose time a value carries is the tag's `timestamp` (else the device's): `source` (the DataValue's SourceTimestamp,
falling back to its ServerTimestamp, then to the gateway's read time, when absent), `server` (ServerTimestamp, then
read time) or `gateway` (the read time). A missing timestamp is counted in `stats.timestamp_fallbacks`. The skew
guard: a source or server time further than `max_clock_skew_s` from the gateway's clock is replaced by the read time,
counted (`stats.clock_skews`), logged once per tag, and the value flagged uncertain "clock_skew". One exception: a
polled value read again with the same old timestamp as at its previous read on this connection has not changed
since (its timestamp is that of its last change); it is reported at the read time without a flag
(`stats.unchanged_since`). A wrong clock that keeps stamping new values is flagged at every value.

The StatusCode becomes the value's quality: Good is good (no quality), Uncertain is published with quality uncertain,
Bad with quality bad (code and name of the status), its value kept when it is a finite number or a boolean, else
null. Numbers become floats, booleans stay booleans; the state tag's code is mapped through `state_map` (an unmapped
code is logged once, counted, and left out of the sample). A state has no quality in the contract, so a state whose
status is not Good is left out. Values the contract cannot carry with a Good or Uncertain status (text, NaN, arrays)
are left out. Everything left out is counted in `stats.skipped_values` and logged once per tag and reason; the
other values of the same read or notification are published as usual.

Security: with a policy other than None the source first asks the server for its endpoints over an unsecured channel
(the standard GetEndpoints step), picks the one with the configured policy and mode, and checks the server's
certificate: validity period and the ApplicationURI in its subjectAltName (asyncua's CertificateValidator), usable
as a server certificate (not a CA issued by another CA, serverAuth in its extended key usage if it has one), and
pinned: byte for byte one of the certificates in the gateway's trusted/ folder (see gateway.pki). A certificate that
is not trusted is copied into rejected/ and the connection fails with one log line naming the command that trusts
it. A password is sent only where it cannot be read on the network: over SignAndEncrypt, or encrypted by the
username token's policy; otherwise the connection is refused (unless the device sets allow_insecure_password, for
labs). Then it opens the secured session with the gateway's own certificate (made on first use, see gateway.pki) and
the configured user identity.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorMethod, CertificateValidatorOptions
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from core.clock import utcnow
from core.commands import WriteValue
from core.contract import MachineState, Quality, QualityLevel
from core.logging import get_logger
from gateway.config import ConfigError, OpcUaDevice, SecurityMode, SecurityPolicy, TimestampMode
from gateway.pki import (
    ClientApplication,
    Pki,
    default_client_application,
    file_format,
    server_certificate_problem,
    thumbprint,
)
from gateway.plausibility import CLOCK_SKEW, flagged
from gateway.sources.base import SourceError, TagValue, WriteFailed, WriteRefused, Written

log = get_logger("shopfloor.gateway.opcua")

# OPC-UA's "no timestamp" written as a value (DateTime MinValue, 1601-01-01) rather than left out.
_NO_TIME = datetime(1601, 1, 2, tzinfo=UTC)
# Data changes waiting for `values()`; beyond this the oldest are dropped (and counted).
QUEUE_SIZE = 10_000
# A quiet subscription still hears from the server this often (keep-alive), and dies after this long unpolled.
KEEP_ALIVE_MS = 10_000
LIFETIME_MS = 60_000

_POLICIES: dict[SecurityPolicy, type[security_policies.SecurityPolicy]] = {
    SecurityPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    SecurityPolicy.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicy.AES256_SHA256_RSAPSS: security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
# asyncua's part of the server certificate check: within its validity and naming the server's ApplicationURI.
# Trust is not asyncua's TrustStore (it accepts whatever a CA in trusted/ signed) but pinning, see gateway.pki.
_SERVER_CHECKS = (
    CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI | CertificateValidatorOptions.PEER_SERVER
)
# Status codes that mean the server refused the user, or the gateway's certificate, rather than the network failing.
_USER_REFUSED = {
    StatusCodes.BadUserAccessDenied,
    StatusCodes.BadIdentityTokenInvalid,
    StatusCodes.BadIdentityTokenRejected,
}
_CERTIFICATE_REFUSED = {
    StatusCodes.BadCertificateUntrusted,
    StatusCodes.BadSecurityChecksFailed,
    StatusCodes.BadCertificateInvalid,
}

# The built-in OPC-UA types a command may write, by the numeric id of their DataType node in namespace 0 (which is
# also their VariantType), with the range of the integer ones. Other types (text, dates, structures, enumerations
# and types derived from these) are refused.
_INTEGER_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
_WRITABLE_TYPES = frozenset({ua.VariantType.Boolean, ua.VariantType.Float, ua.VariantType.Double, *_INTEGER_RANGES})
_FLOAT32_MAX = 3.4028234663852886e38

# Connection-level failures of asyncua: transport gone, request timed out, or a Bad service result.
_FAILURES: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError, UaError)


@dataclass
class OpcUaStats:
    """Counters of one source object, over all its connections."""

    connects: int = 0
    timestamp_fallbacks: int = 0
    clock_skews: int = 0
    unchanged_since: int = 0
    uncertain_values: int = 0
    bad_values: int = 0
    unmapped_states: int = 0
    skipped_values: int = 0
    dropped_notifications: int = 0
    missed_polls: int = 0
    subscription_rebuilds: int = 0
    polling_fallbacks: int = 0


class _Lost:
    """Queue marker: the connection or the subscription is gone."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


_Item = tuple[str, ua.DataValue] | _Lost


def _put(queue: asyncio.Queue[_Item], item: _Item, stats: OpcUaStats) -> None:
    """Put without blocking the caller; a full queue loses its oldest entry."""
    if queue.full():
        queue.get_nowait()
        stats.dropped_notifications += 1
    queue.put_nowait(item)


class _Handler:
    """asyncua subscription handler: hands every data change to the queue, nothing else."""

    def __init__(self, queue: asyncio.Queue[_Item], tags: dict[ua.NodeId, str], stats: OpcUaStats) -> None:
        self.active = True
        self._queue = queue
        self._tags = tags
        self._stats = stats

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        """One monitored item changed."""
        tag = self._tags.get(node.nodeid)
        if self.active and tag is not None:
            _put(self._queue, (tag, data.monitored_item.Value), self._stats)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        """The server (or asyncua, on connection loss) reports the subscription's status."""
        if self.active and status.Status.is_bad():
            _put(self._queue, _Lost(f"subscription status {status.Status.name}"), self._stats)


class PasswordInClear(UaError):
    """The password would travel readable on the network; the gateway does not send it."""


class GuardedClient(Client):
    """asyncua's client, refusing at ActivateSession to send a password readable on the network.

    `OpcUaSource._identify` checks the endpoint from GetEndpoints, which travels unsigned (a man in the middle could
    change it); this checks the endpoint the server signed in its CreateSession answer, which is the one asyncua
    takes the username token policy from.
    """

    protect_password = False

    def server_policy(self, token_type: ua.UserTokenType) -> ua.UserTokenPolicy:
        """asyncua's choice of token policy; PasswordInClear for a username token it would send unencrypted."""
        policy = super().server_policy(token_type)
        clear = policy.SecurityPolicyUri in ("", security_policies.SecurityPolicyNone.URI)
        encrypted_channel = self.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
        if self.protect_password and token_type == ua.UserTokenType.UserName and clear and not encrypted_channel:
            raise PasswordInClear(
                "refused to send the password: the server's session endpoint has username token policy None on a "
                "channel that is not encrypted; use security_mode SignAndEncrypt"
            )
        return policy


def _parse_node_id(text: str) -> ua.NodeId:
    try:
        return ua.NodeId.from_string(text)
    except (UaError, ValueError) as error:
        raise ValueError(f"node id {text!r} is not valid: {error}") from None


class OpcUaSource:
    """One OPC-UA server, polled or subscribed; see the module docstring."""

    def __init__(
        self,
        device: OpcUaDevice,
        *,
        application: ClientApplication | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.device = device
        self.application = application or default_client_application()
        self.stats = OpcUaStats()
        # The mode of the current connection: the configured one, or "poll" after a watchdog fallback.
        self.mode: Literal["poll", "subscribe"] = device.mode
        self._clock = clock
        self._node_ids = {tag.name: _parse_node_id(tag.node_id) for tag in device.tags}
        self._timestamp_modes: dict[str, TimestampMode] = {
            tag.name: tag.timestamp or device.timestamp for tag in device.tags
        }
        self._max_skew = timedelta(seconds=device.max_clock_skew_s)
        self._log = log.bind(machine=device.machine, endpoint=device.endpoint)
        self._client: Client | None = None
        self._nodes: list[Node] = []
        self._tags: dict[ua.NodeId, str] = {}
        self._node_of: dict[str, Node] = {}
        # Each writable tag's node type on this connection, read at connect; None: not a type the gateway writes.
        self._write_types: dict[str, ua.VariantType | None] = {}
        self._max_read = 0
        self._max_monitor = 0
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._handler: _Handler | None = None
        self._subscription: Subscription | None = None
        self._lost: str | None = None
        self._warned: set[tuple[str, str]] = set()
        # Each tag's timestamp at its previous read on this connection, to tell an unchanged value from a wrong clock.
        self._stamps: dict[str, datetime] = {}

    # -- connection -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Connect and open a session within `timeout_s`; SourceError when the server cannot be reached or refuses."""
        client = GuardedClient(self.device.endpoint, timeout=self.device.timeout_s)
        client.application_uri = self.application.application_uri
        client.connection_lost_callback = self._connection_lost
        self._lost = None
        self._warned.clear()
        self._stamps.clear()
        self._queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.mode = self.device.mode
        connected = False
        try:
            async with asyncio.timeout(self.device.timeout_s):
                await self._identify(client)
                await client.connect()
            connected = True
            await self._prepare(client)
        except BaseException as error:
            # A refused or failed connect leaves nothing open (asyncua closes its socket, starts no task); a timeout
            # in the middle of the handshake or a failure after it does.
            if connected or client.state is not UaClientState.DISCONNECTED:
                await self._close(client)
            if isinstance(error, _FAILURES):
                raise SourceError(f"opc-ua {self.device.endpoint}: cannot connect: {self._refusal(error)}") from error
            if isinstance(error, ValueError | AssertionError) and not connected:
                # What the server sent in the handshake could not be read: this device's problem, so it reconnects
                # with backoff instead of ending the gateway.
                raise SourceError(
                    f"opc-ua {self.device.endpoint}: cannot connect: {self._unreadable(error)}"
                ) from error
            raise
        self._client = client
        self.stats.connects += 1
        self._log.info("opcua_connected", mode=self.mode, tags=len(self._nodes))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the session (which deletes its subscriptions) and the socket; asyncua's tasks end with it."""
        if self._handler is not None:
            self._handler.active = False
        self._handler, self._subscription = None, None
        client, self._client = self._client, None
        if client is not None:
            # Closing the session deletes its subscriptions on the server; no separate request needed.
            await self._close(client)
            self._log.info("opcua_disconnected")

    async def _identify(self, client: GuardedClient) -> None:
        """Set the user identity and, for a secured device, the channel's security (after checking the server)."""
        device = self.device
        try:
            password = await asyncio.to_thread(device.password_value)
        except ConfigError as error:
            raise SourceError(f"opc-ua {device.endpoint}: {error}") from None
        if device.username:
            client.set_user(device.username)
        if password is not None:
            client.set_password(password)
            client.protect_password = not device.allow_insecure_password
        if device.user_certificate is not None and device.user_key is not None:
            # asyncua picks PEM or DER by the file's suffix; the content decides here (a PEM key is often `.key`).
            certificate_format = await asyncio.to_thread(file_format, device.user_certificate)
            key_format = await asyncio.to_thread(file_format, device.user_key)
            await client.load_client_certificate(str(device.user_certificate), certificate_format)
            await client.load_private_key(device.user_key, extension=key_format)
        if not device.secured or device.security_mode is None:
            if password is not None:
                # Only reachable with allow_insecure_password (the config refuses it otherwise).
                self._log.warning("opcua_password_in_clear", reason="security policy None (allow_insecure_password)")
            return
        policy, mode = _POLICIES[device.security_policy], _MODES[device.security_mode]
        pki = self.application.pki
        _, reason = await asyncio.to_thread(self.application.ensure_certificate)
        if reason is not None:
            own = await asyncio.to_thread(pki.certificates, "own")
            self._log.warning(
                "opcua_certificate_created",
                reason=reason,
                path=str(pki.own_certificate),
                thumbprint=own[0].thumbprint if own else None,
                application_uri=self.application.application_uri,
            )
        endpoints = await client.connect_and_get_server_endpoints()
        offered = [e for e in endpoints if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode]
        if not offered:
            choices = sorted({f"{e.SecurityPolicyUri.rpartition('#')[2]}/{e.SecurityMode.name}" for e in endpoints})
            raise SourceError(
                f"opc-ua {device.endpoint}: the server offers no {device.security_policy}/{device.security_mode} "
                f"endpoint (it offers {', '.join(choices) or 'none'})"
            )
        endpoint = offered[0]
        if password is not None:
            self._check_password_protected(endpoint)
        server_der = _first_certificate(endpoint.ServerCertificate)
        if not server_der:
            raise SourceError(f"opc-ua {device.endpoint}: the server sent no certificate with its secured endpoint")
        try:
            server_certificate = x509.load_der_x509_certificate(server_der)
        except ValueError:
            raise SourceError(
                f"opc-ua {device.endpoint}: the server sent a certificate that is not a valid DER certificate"
            ) from None
        await self._check_server(pki, server_certificate, endpoint.Server)
        # Checked again against the certificate the server signs its session with (asyncua also insists it is the same).
        client.certificate_validator = self._validator(pki)
        await client.set_security(
            policy,
            certificate=str(pki.own_certificate),
            private_key=str(pki.own_key),
            server_certificate=server_der,
            mode=mode,
        )

    def _check_password_protected(self, endpoint: ua.EndpointDescription) -> None:
        """SourceError when the endpoint's username token would carry the password readable on the network.

        asyncua encrypts the password with the token policy's SecurityPolicyUri, the endpoint's own policy when that
        is empty; a token policy of None sends it as plain UTF-8, which only a SignAndEncrypt channel then hides.
        """
        if endpoint.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt:
            return
        tokens = [token for token in endpoint.UserIdentityTokens if token.TokenType == ua.UserTokenType.UserName]
        if not tokens:
            return  # the server will refuse the login (BadIdentityTokenInvalid), the password is not sent
        effective = tokens[0].SecurityPolicyUri or endpoint.SecurityPolicyUri
        if effective and effective != security_policies.SecurityPolicyNone.URI:
            return
        if self.device.allow_insecure_password:
            self._log.warning("opcua_password_in_clear", reason="username token policy None on a Sign channel")
            return
        self._log.error(
            "opcua_password_would_travel_in_clear",
            security_mode=self.device.security_mode,
            token_policy=effective or "(empty)",
        )
        raise SourceError(
            f"opc-ua {self.device.endpoint}: refused to send the password: the server's username token policy is "
            f"None on this {self.device.security_policy}/{self.device.security_mode} endpoint, so the password "
            "would travel unencrypted; use security_mode SignAndEncrypt"
        )

    def _validator(self, pki: Pki) -> CertificateValidatorMethod:
        """The server certificate check: validity period and ApplicationURI (asyncua), usable as a server
        certificate, and pinned in trusted/ (re-read at every check, so `trust` needs no restart)."""
        basic = CertificateValidator(_SERVER_CHECKS)

        async def validate(certificate: x509.Certificate, server: ua.ApplicationDescription) -> None:
            await basic.validate(certificate, server)
            problem = server_certificate_problem(certificate)
            if problem is not None:
                self._log.error(
                    "opcua_server_certificate_not_usable", thumbprint=thumbprint(certificate), problem=problem
                )
                raise ServiceError(StatusCodes.BadCertificateUseNotAllowed)
            pinned, skipped = await asyncio.to_thread(pki.scan, "trusted")
            for item in skipped:
                # Checked twice per connect (endpoint, then session): one warning per file and connection.
                if ("trusted", str(item.path)) not in self._warned:
                    self._warned.add(("trusted", str(item.path)))
                    self._log.warning("opcua_trusted_file_skipped", path=str(item.path), reason=item.reason)
            der = certificate.public_bytes(serialization.Encoding.DER)
            if not any(info.certificate.public_bytes(serialization.Encoding.DER) == der for info in pinned):
                raise ServiceError(StatusCodes.BadCertificateUntrusted)

        return validate

    async def _check_server(self, pki: Pki, certificate: x509.Certificate, server: ua.ApplicationDescription) -> None:
        """SourceError unless the server's certificate is valid and trusted; an untrusted one goes to rejected/."""
        try:
            await self._validator(pki)(certificate, server)
        except ServiceError as error:
            status = ua.StatusCode(ua.UInt32(error.code))
            digest = thumbprint(certificate)
            if error.code == StatusCodes.BadCertificateUseNotAllowed:
                raise SourceError(
                    f"opc-ua {self.device.endpoint}: server certificate {digest} refused: "
                    f"{server_certificate_problem(certificate) or status.name}"
                ) from None
            if error.code != StatusCodes.BadCertificateUntrusted:
                raise SourceError(
                    f"opc-ua {self.device.endpoint}: server certificate {digest} refused: {status.name} ({status.doc})"
                ) from None
            path = await asyncio.to_thread(pki.reject, certificate)
            command = self.application.trust_command(str(path))
            self._log.error(
                "opcua_server_certificate_untrusted",
                thumbprint=digest,
                rejected=str(path),
                fix=command,
            )
            raise SourceError(
                f"opc-ua {self.device.endpoint}: server certificate {digest} is not trusted; "
                f"it was saved as {path}; to trust it run: {command}"
            ) from None

    def _refusal(self, error: BaseException) -> str:
        """The connect failure, with what to do when the server refused the user or the gateway's certificate."""
        if isinstance(error, PasswordInClear):
            return str(error)
        if isinstance(error, UaStatusCodeError):
            if error.code in _USER_REFUSED:
                who = f"user {self.device.username!r}" if self.device.username else "the user identity"
                return f"the server refused {who}: {_describe(error)} (check the username and password)"
            if error.code in _CERTIFICATE_REFUSED and self.device.secured:
                return (
                    f"the server refused the gateway's certificate ({self.application.pki.own_certificate}): "
                    f"{_describe(error)}; trust it on the server"
                )
        return _describe(error)

    def _unreadable(self, error: ValueError | AssertionError) -> str:
        """A handshake answer asyncua could not read: a malformed certificate (ValueError from cryptography), or a
        fault in answer to OpenSecureChannel, which asyncua 2.1 trips an internal assertion on (node-opcua answers
        that way when it does not trust the gateway's certificate)."""
        if isinstance(error, AssertionError) and self.device.secured:
            return (
                "the server refused to open the secure channel; most often it does not trust the gateway's "
                f"certificate ({self.application.pki.own_certificate}): trust it on the server"
            )
        return f"the server's answer could not be read: {_describe(error)}"

    async def _prepare(self, client: Client) -> None:
        """Resolve `nsu=` node ids against the server's namespace array and learn its per-request limits."""
        node_ids = dict(self._node_ids)
        if any(isinstance(node, ua.ExpandedNodeId) and node.NamespaceUri for node in node_ids.values()):
            namespaces = await client.get_namespace_array()
            for tag, node in node_ids.items():
                if isinstance(node, ua.ExpandedNodeId) and node.NamespaceUri:
                    if node.NamespaceUri not in namespaces:
                        raise UaError(f"tag {tag}: namespace {node.NamespaceUri!r} is not on the server")
                    index = ua.Int16(namespaces.index(node.NamespaceUri))
                    node_ids[tag] = ua.NodeId(node.Identifier, index, node.NodeIdType)
        self._nodes = [client.get_node(node) for node in node_ids.values()]
        self._tags = {node: tag for tag, node in node_ids.items()}
        self._node_of = {tag: client.get_node(node) for tag, node in node_ids.items()}
        limits = await client.read_attributes(
            [
                client.get_node(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead),
                client.get_node(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall),
            ]
        )
        self._max_read, self._max_monitor = (_limit(value) for value in limits)
        writable = [tag.name for tag in self.device.tags if tag.writable is not None]
        self._write_types = {}
        if writable:
            # The node's own type decides how a command's value is encoded: the server refuses another one.
            types = await client.read_attributes([self._node_of[tag] for tag in writable], AttributeIds.DataType)
            self._write_types = {tag: _variant_type(value) for tag, value in zip(writable, types, strict=True)}

    async def _close(self, client: Client) -> None:
        try:
            async with asyncio.timeout(self.device.timeout_s):
                await client.disconnect()
        except _FAILURES as error:
            self._log.debug("opcua_disconnect_failed", error=_describe(error))
        finally:
            # Whatever the server did, the socket is closed; asyncua's own tasks were cancelled by disconnect().
            client.disconnect_socket()

    async def _connection_lost(self, error: Exception) -> None:
        self._lost = _describe(error)
        _put(self._queue, _Lost(self._lost), self.stats)

    def _connected(self) -> Client:
        if self._client is None:
            raise SourceError(f"opc-ua {self.device.endpoint}: not connected")
        if self._lost is not None:
            raise SourceError(f"opc-ua {self.device.endpoint}: connection lost: {self._lost}")
        return self._client

    # -- values -----------------------------------------------------------------------------------------------

    async def values(self) -> AsyncGenerator[list[TagValue], None]:
        """One list per poll or per batch of data changes, until the connection fails (SourceError)."""
        self._connected()
        if self.mode == "subscribe":
            async for batch in self._subscribed():
                yield batch
        else:
            async for batch in self._polled():
                yield batch

    async def _polled(self) -> AsyncGenerator[list[TagValue], None]:
        loop = asyncio.get_running_loop()
        interval = self.device.poll_interval_s
        deadline = loop.time()
        while True:
            batch = await self._read()
            if batch:
                yield batch
            deadline += interval
            now = loop.time()
            if now > deadline:
                # Late (slow read or slow consumer): skip the missed ticks and stay on the grid.
                missed = math.ceil((now - deadline) / interval)
                self.stats.missed_polls += missed
                deadline += missed * interval
            await asyncio.sleep(deadline - now)

    async def _read(self) -> list[TagValue]:
        client = self._connected()
        datavalues: list[ua.DataValue] = []
        try:
            for chunk in _chunks(self._nodes, self._max_read):
                datavalues += await client.read_attributes(chunk)
        except _FAILURES as error:
            raise SourceError(f"opc-ua {self.device.endpoint}: read failed: {_describe(error)}") from error
        if len(datavalues) != len(self._nodes):
            raise SourceError(f"opc-ua {self.device.endpoint}: read {len(self._nodes)} nodes, got {len(datavalues)}")
        now = self._clock()
        pairs = zip(self._nodes, datavalues, strict=True)
        converted = (self._convert(self._tags[node.nodeid], datavalue, now) for node, datavalue in pairs)
        return [value for value in converted if value is not None]

    async def _subscribed(self) -> AsyncGenerator[list[TagValue], None]:
        loop = asyncio.get_running_loop()
        await self._unsubscribe()  # a subscription left by an earlier call of values() on this connection
        await self._subscribe()
        rebuilt = False
        heard_at = loop.time()
        while True:
            remaining = max(0.0, heard_at + self.device.watchdog_s - loop.time())
            try:
                # What already waits is taken first: wait_for with no time left would time out even on a full queue.
                if self._queue.empty():
                    async with asyncio.timeout(remaining):  # not wait_for: see core.retry.wait_or_stop
                        first = await self._queue.get()
                else:
                    first = self._queue.get_nowait()
            except TimeoutError:
                await self._check_alive()
                await self._unsubscribe()
                if rebuilt:
                    self.stats.polling_fallbacks += 1
                    self.mode = "poll"
                    self._log.warning("opcua_watchdog_fallback", silent_s=self.device.watchdog_s)
                    async for batch in self._polled():
                        yield batch
                    return
                self.stats.subscription_rebuilds += 1
                self._log.warning("opcua_watchdog_rebuild", silent_s=self.device.watchdog_s)
                await self._subscribe()
                rebuilt = True
                heard_at = loop.time()
                continue
            items = [first]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            changes: list[tuple[str, ua.DataValue]] = []
            for item in items:
                if isinstance(item, _Lost):
                    raise SourceError(f"opc-ua {self.device.endpoint}: connection lost: {item.reason}")
                changes.append(item)
            heard_at = loop.time()
            now = self._clock()
            converted = (self._convert(tag, datavalue, now) for tag, datavalue in changes)
            batch = [value for value in converted if value is not None]
            if batch:
                yield batch

    async def _subscribe(self) -> None:
        client = self._connected()
        handler = _Handler(self._queue, self._tags, self.stats)
        interval = self.device.publishing_interval_ms
        try:
            subscription = await client.create_subscription(_subscription_parameters(interval), handler)
            self._handler, self._subscription = handler, subscription
            results: list[int | ua.StatusCode] = []
            for chunk in _chunks(self._nodes, self._max_monitor):
                results += await subscription.subscribe_data_change(chunk, sampling_interval=ua.Double(interval))
        except _FAILURES as error:
            raise SourceError(f"opc-ua {self.device.endpoint}: subscribe failed: {_describe(error)}") from error
        for node, result in zip(self._nodes, results, strict=False):
            if isinstance(result, ua.StatusCode):
                self._warn_once(self._tags[node.nodeid], "opcua_monitor_failed", result.name, status=result.name)

    async def _unsubscribe(self) -> None:
        if self._handler is not None:
            self._handler.active = False
        subscription, self._handler, self._subscription = self._subscription, None, None
        if subscription is None:
            return
        try:
            await subscription.delete()
        except UaStatusCodeError as error:
            # The server may have dropped the subscription already; that is why it is being replaced.
            self._log.debug("opcua_subscription_delete_failed", error=_describe(error))
        except _FAILURES as error:
            raise SourceError(f"opc-ua {self.device.endpoint}: unsubscribe failed: {_describe(error)}") from error

    async def _check_alive(self) -> None:
        """A cheap read proves the connection still works while the subscription is silent."""
        client = self._connected()
        try:
            await client.get_node(ObjectIds.Server_ServerStatus_CurrentTime).read_value()
        except _FAILURES as error:
            raise SourceError(f"opc-ua {self.device.endpoint}: server silent: {_describe(error)}") from error

    # -- writes -----------------------------------------------------------------------------------------------

    def check_write(self, tag: str, value: WriteValue) -> None:
        """WriteRefused when the tag is not writable or its node's data type cannot hold `value`."""
        self._variant(tag, value)

    async def write(self, tag: str, value: WriteValue) -> Written:
        """Read the node, write the value as the node's own type, and read it back."""
        variant = self._variant(tag, value)
        client = self._connected()
        node = self._node_of[tag]
        previous: WriteValue | None = None
        try:
            previous = _plain(await self._read_one(client, node, tag))
            # Without timestamps: many PLCs (S7-1500 among them) refuse a write that carries a SourceTimestamp,
            # which asyncua's write_value would add.
            await node.write_attribute(AttributeIds.Value, ua.DataValue(variant))
            read_back = _plain(await self._read_one(client, node, tag))
        except _FAILURES as error:
            raise WriteFailed(
                f"opc-ua {self.device.endpoint}: writing {tag} failed: {_describe(error)}", previous=previous
            ) from error
        if read_back is None:
            raise WriteFailed(f"opc-ua {self.device.endpoint}: {tag} reads back no number", previous=previous)
        return Written(previous, read_back)

    async def _read_one(self, client: Client, node: Node, tag: str) -> ua.Variant:
        (datavalue,) = await client.read_attributes([node])
        status = datavalue.StatusCode or ua.StatusCode()
        if not status.is_good():
            raise UaError(f"{tag} reads status {status.name}")
        return datavalue.Value or ua.Variant()

    def _variant(self, tag: str, value: WriteValue) -> ua.Variant:
        """The value as its node's type; WriteRefused when the tag is not writable or its node cannot hold it."""
        if tag not in self._write_types:
            raise WriteRefused(f"not a writable tag of {self.device.machine}")
        return variant_for(self._write_types[tag], value)

    # -- conversion -------------------------------------------------------------------------------------------

    def _convert(self, tag: str, datavalue: ua.DataValue, now: datetime) -> TagValue | None:
        status = datavalue.StatusCode or ua.StatusCode()
        quality = _quality(status)
        if quality is not None:
            # Once per tag, status and connection: a sensor that stays failed must not flood the log.
            self._warn_once(
                tag,
                "opcua_status_not_good",
                str(quality.code),
                status=quality.detail,
                code=quality.code,
                doc=status.doc,
            )
        raw = datavalue.Value.Value if datavalue.Value is not None else None
        value: float | bool | str | None
        if tag == self.device.state_tag:
            if quality is not None:
                # The contract gives a state no quality: a doubtful state is left out rather than passed as sure.
                return self._skip(tag, f"{quality.level.name.lower()}_status", status=status.name)
            state = self._state(tag, raw)
            if state is None:
                return None
            value = state.value
        elif isinstance(raw, bool):
            value = raw
        elif isinstance(raw, int | float) and math.isfinite(raw):
            value = float(raw)
        elif quality is not None and quality.level is QualityLevel.BAD:
            value = None  # a bad value the server could not give: null, its quality says why
        elif isinstance(raw, int | float):
            return self._skip(tag, "not_finite", value=repr(raw))
        else:
            return self._skip(tag, "unsupported_type", type=type(raw).__name__)
        ts, skewed = self._timestamp(tag, datavalue, now)
        if skewed and tag != self.device.state_tag:  # a state cannot carry it; the skew is counted and logged
            quality = flagged(quality, CLOCK_SKEW)
        if quality is not None:
            if quality.level is QualityLevel.BAD:
                self.stats.bad_values += 1
            elif quality.level is QualityLevel.UNCERTAIN:
                self.stats.uncertain_values += 1
        return TagValue(tag=tag, value=value, ts=ts, quality=quality)

    def _state(self, tag: str, raw: object) -> MachineState | None:
        code: int | None = None
        # A bool is an int here: some PLCs expose a running flag as their only state.
        if isinstance(raw, int) or (isinstance(raw, float) and raw.is_integer()):
            code = int(raw)
        state = self.device.state_map.get(code) if code is not None else None
        if state is None:
            self.stats.unmapped_states += 1
            # Same event as the Modbus source; once per code and connection, not once per sample.
            self._warn_once(tag, "unmapped_state", repr(raw), code=raw, unmapped_states=self.stats.unmapped_states)
        return state

    def _timestamp(self, tag: str, datavalue: ua.DataValue, now: datetime) -> tuple[datetime, bool]:
        """The value's time by the tag's timestamp mode, and whether the skew guard replaced it by `now`."""
        mode = self._timestamp_modes[tag]
        if mode == "gateway":
            return now, False
        server = _present(datavalue.ServerTimestamp)
        first = _present(datavalue.SourceTimestamp) if mode == "source" else server
        if first is None:
            self.stats.timestamp_fallbacks += 1
        chosen = first or server
        if chosen is None:
            return now, False
        previous, self._stamps[tag] = self._stamps.get(tag), chosen
        if chosen == previous and now - chosen > self._max_skew:
            # Read again unchanged: its time is that of its last change, long ago, not a wrong clock; it holds now.
            self.stats.unchanged_since += 1
            return now, False
        if abs(chosen - now) > self._max_skew:
            self.stats.clock_skews += 1
            # Once per tag and connection: a PLC clock that is off stays off, and every value would repeat it.
            self._warn_once(
                tag,
                "opcua_clock_skew",
                "",
                timestamp=chosen.isoformat(),
                gateway_time=now.isoformat(),
                max_clock_skew_s=self.device.max_clock_skew_s,
                clock_skews=self.stats.clock_skews,
            )
            return now, True
        return chosen, False

    def _skip(self, tag: str, reason: str, **context: object) -> TagValue | None:
        """Count and log (once per tag and reason) a value the contract cannot carry; it is left out."""
        self.stats.skipped_values += 1
        self._warn_once(tag, "opcua_value_skipped", reason, reason=reason, **context)
        return None

    def _warn_once(self, tag: str, event: str, what: str, **context: object) -> None:
        """Log `event` for this tag once per connection and `what`: a PLC stuck on a problem must not flood the log."""
        key = (tag, f"{event}:{what}")
        if key not in self._warned:
            self._warned.add(key)
            self._log.warning(event, tag=tag, **context)


def _quality(status: ua.StatusCode) -> Quality | None:
    """The quality an OPC-UA status code gives a value: None for Good, else its level, code and name."""
    if status.is_good():
        return None
    # The low 16 bits are info bits (limits, overflow) that asyncua's name table does not know.
    name = ua.StatusCode(ua.UInt32(status.value & 0xFFFF0000)).name
    level = QualityLevel.BAD if status.is_bad() else QualityLevel.UNCERTAIN
    return Quality(level, int(status.value), name)


def _present(ts: datetime | None) -> datetime | None:
    """An aware timestamp, or None when the server gave none (left out, or OPC-UA's MinValue)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return None if ts < _NO_TIME else ts


def _subscription_parameters(interval_ms: int) -> ua.CreateSubscriptionParameters:
    """A keep-alive every ~10 s of silence and a lifetime of ~60 s (at least 3 keep-alives, as the spec asks).

    asyncua's default derives the keep-alive count from the session timeout (tens of minutes between keep-alives),
    which servers often revise down, costing a warning and a ModifySubscription round trip on every subscribe.
    """
    keep_alive = max(3, math.ceil(KEEP_ALIVE_MS / interval_ms))
    return ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=ua.Double(interval_ms),
        RequestedLifetimeCount=ua.UInt32(max(3 * keep_alive, math.ceil(LIFETIME_MS / interval_ms))),
        RequestedMaxKeepAliveCount=ua.UInt32(keep_alive),
        MaxNotificationsPerPublish=ua.UInt32(0),  # no limit
        PublishingEnabled=True,
        Priority=ua.Byte(0),
    )


def variant_for(variant_type: ua.VariantType | None, value: WriteValue) -> ua.Variant:
    """A command's value as a node of this type holds it; WriteRefused when it cannot (None: a type the gateway
    does not write)."""
    if variant_type is None:
        raise WriteRefused("its node's data type is not a boolean or number type the gateway can write")
    if variant_type is ua.VariantType.Boolean:
        if not isinstance(value, bool):
            raise WriteRefused(f"{value!r} is not a boolean, which its node holds")
        return ua.Variant(value, variant_type)
    if isinstance(value, bool):
        raise WriteRefused(f"a boolean cannot be written to its {variant_type.name} node")
    bounds = _INTEGER_RANGES.get(variant_type)
    if bounds is not None:
        if not float(value).is_integer():
            raise WriteRefused(f"{value!r} is not a whole number, which its {variant_type.name} node holds")
        low, high = bounds
        if not low <= int(value) <= high:
            raise WriteRefused(f"{value!r} is outside the range of its {variant_type.name} node ({low}..{high})")
        return ua.Variant(int(value), variant_type)
    if variant_type is ua.VariantType.Float and abs(value) > _FLOAT32_MAX:
        raise WriteRefused(f"{value!r} is beyond the range of its Float node")
    return ua.Variant(float(value), variant_type)


def _variant_type(datavalue: ua.DataValue) -> ua.VariantType | None:
    """The VariantType of a node whose DataType attribute was read; None unless a built-in type a command may write."""
    data_type = datavalue.Value.Value if datavalue.Value is not None else None
    if not isinstance(data_type, ua.NodeId) or data_type.NamespaceIndex != 0:
        return None
    identifier = data_type.Identifier
    if not isinstance(identifier, int) or identifier not in {member.value for member in _WRITABLE_TYPES}:
        return None
    return ua.VariantType(identifier)


def _plain(variant: ua.Variant) -> WriteValue | None:
    """A value read as the command result carries it: a boolean, a whole or a finite number; None otherwise."""
    value = variant.Value
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _limit(datavalue: ua.DataValue) -> int:
    value = datavalue.Value.Value if datavalue.Value is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _chunks(nodes: Sequence[Node], size: int) -> Iterable[list[Node]]:
    step = size or len(nodes) or 1
    for start in range(0, len(nodes), step):
        yield list(nodes[start : start + step])


def _first_certificate(der: bytes | None) -> bytes:
    """The leading certificate of a DER chain (servers may send their certificate followed by its issuers)."""
    if not der:
        return b""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        # A chain: the first certificate is the outer SEQUENCE, whose two-byte length follows 0x30 0x82.
        return der[: int.from_bytes(der[2:4], "big") + 4]
    return certificate.public_bytes(serialization.Encoding.DER)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
