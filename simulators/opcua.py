"""An OPC-UA server (asyncua) exposing one simulated injection-moulding machine.

Address space: the object `Machine` (`ns=2;s=Machine`) under Objects, in the namespace registered as
`urn:shopfloor:simulator:injection` (index 2: index 0 is the OPC-UA namespace, index 1 the server's own
application URI). Variables, all with stable string node ids:

| node id                              | type   | gateway tag              |
|--------------------------------------|--------|--------------------------|
| `ns=2;s=Machine.State`               | Int32  | `state` (see STATE_CODES)|
| `ns=2;s=Machine.CycleCount`          | UInt32 | `cycle_count`            |
| `ns=2;s=Machine.GoodCount`           | UInt32 | `good_count`             |
| `ns=2;s=Machine.ScrapCount`          | UInt32 | `scrap_count`            |
| `ns=2;s=Machine.BarrelTempC`         | Double | `barrel_temp_c`          |
| `ns=2;s=Machine.MoldTempC`           | Double | `mold_temp_c`            |
| `ns=2;s=Machine.InjectionPressureBar`| Double | `injection_pressure_bar` |
| `ns=2;s=Machine.CycleTimeS`          | Double | `cycle_time_s`           |

Setpoints a plant writes as job data, writable by clients (`SETPOINTS`; `setpoint_tags()` gives them as gateway
tags with their command limits, `setpoints()` reads them); the machine's cycles follow the cycle time setpoint:

| node id                              | type   | gateway tag              |
|--------------------------------------|--------|--------------------------|
| `ns=2;s=Machine.CycleTimeSetpointS`  | Double | `cycle_time_setpoint_s`  |
| `ns=2;s=Machine.TargetQty`           | UInt32 | `target_qty`             |
| `ns=2;s=Machine.JobId`               | UInt32 | `job_id`                 |

Every `update_interval_s` of wall time the machine advances `update_interval_s * speed` simulated seconds; each value
that changed is written with its source and server timestamp set to the wall-clock time of that update, and recorded
in `record`. Tests write single values with chosen timestamps and status codes through `expose()`.
Standalone: `python -m simulators.opcua --port 4840 --seed 1 --speed 1` prints
`READY opcua opc.tcp://127.0.0.1:4840` once it serves and exits cleanly on SIGTERM or SIGINT.

Security is off by default (one endpoint with security mode None, anonymous access). `--security
Basic256Sha256:SignAndEncrypt` (repeatable) offers those endpoints instead, with the server certificate and key kept
in `--certificate-dir` (`cert.der`, `key.pem`; made on first start, subjectAltName URI = APPLICATION_URI);
`--user NAME:PASSWORD` (repeatable) adds logins, `--user-certificate FILE` (repeatable) X.509 user identities, and
`--no-anonymous` refuses anonymous sessions. Client (application) certificates are all accepted unless
`--trusted-clients DIR` lists the ones that are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorMethod, CertificateValidatorOptions
from asyncua.server.internal_server import InternalServer
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from core.clock import utcnow
from core.contract import MachineState
from core.lifecycle import add_ready_file_option, readiness, stop_on_signals
from core.logging import configure_logging, get_logger
from core.settings import LogSettings, RuntimeSettings
from simulators.injection import InjectionMachine, InjectionParams

log = get_logger("shopfloor.simulators.opcua")

NAMESPACE_URI = "urn:shopfloor:simulator:injection"
APPLICATION_URI = "urn:shopfloor:simulator:injection:server"
OBJECT_NAME = "Machine"

# The machine's state as the Int32 code a PLC would expose; the gateway maps it back through `state_map`.
STATE_CODES: dict[int, str] = {
    0: MachineState.OFF.value,
    1: MachineState.IDLE.value,
    2: MachineState.RUNNING.value,
    3: MachineState.SETUP.value,
    4: MachineState.ALARM.value,
}
_CODE_OF_STATE = {name: code for code, name in STATE_CODES.items()}

# gateway tag -> (browse name, OPC-UA type); the node id is `ns=<idx>;s=Machine.<browse name>`.
VARIABLES: dict[str, tuple[str, ua.VariantType]] = {
    "state": ("State", ua.VariantType.Int32),
    "cycle_count": ("CycleCount", ua.VariantType.UInt32),
    "good_count": ("GoodCount", ua.VariantType.UInt32),
    "scrap_count": ("ScrapCount", ua.VariantType.UInt32),
    "barrel_temp_c": ("BarrelTempC", ua.VariantType.Double),
    "mold_temp_c": ("MoldTempC", ua.VariantType.Double),
    "injection_pressure_bar": ("InjectionPressureBar", ua.VariantType.Double),
    "cycle_time_s": ("CycleTimeS", ua.VariantType.Double),
}

# Writable setpoints: gateway tag -> (browse name, OPC-UA type, command limits as WriteLimits fields). Not in
# VARIABLES (nor `record` / `current()`): the machine does not change them, a client does.
SETPOINTS: dict[str, tuple[str, ua.VariantType, dict[str, Any]]] = {
    "cycle_time_setpoint_s": ("CycleTimeSetpointS", ua.VariantType.Double, {"type": "float", "min": 2.0, "max": 120.0}),
    "target_qty": ("TargetQty", ua.VariantType.UInt32, {"type": "int", "min": 0, "max": 100_000}),
    "job_id": ("JobId", ua.VariantType.UInt32, {"type": "int", "min": 0, "max": 999_999_999}),
}

# The index the namespace gets on this server (checked at start-up); real servers may differ, see the docs.
EXPECTED_NAMESPACE_INDEX = 2

Exposed = int | float


def node_id(tag: str, namespace_index: int = EXPECTED_NAMESPACE_INDEX) -> str:
    """The string node id of a gateway tag (a variable or a setpoint), e.g. `ns=2;s=Machine.BarrelTempC`."""
    browse_name = VARIABLES[tag][0] if tag in VARIABLES else SETPOINTS[tag][0]
    return f"ns={namespace_index};s={OBJECT_NAME}.{browse_name}"


def machine_tags() -> list[dict[str, str]]:
    """The simulator's tags as the gateway YAML writes them: `{"name": …, "node_id": …}`."""
    return [{"name": tag, "node_id": node_id(tag)} for tag in VARIABLES]


def setpoint_tags() -> list[dict[str, Any]]:
    """The writable setpoints as gateway YAML tags: `{"name": …, "node_id": …, "writable": {…}}`."""
    return [
        {"name": tag, "node_id": node_id(tag), "writable": dict(limits)} for tag, (_, _, limits) in SETPOINTS.items()
    ]


def exposed_values(values: Mapping[str, float | int | str]) -> dict[str, Exposed]:
    """The machine's values as the server exposes them (the state as its Int32 code)."""
    exposed: dict[str, Exposed] = {}
    for tag, value in values.items():
        if tag == "state":
            exposed[tag] = _CODE_OF_STATE[str(value)]
        elif isinstance(value, str):
            raise TypeError(f"{tag}: text is only allowed for the state")
        else:
            exposed[tag] = value
    return exposed


# `--security` policy names (as the gateway's config writes them) -> asyncua's names; modes: Sign, SignAndEncrypt.
SECURITY_POLICIES = {
    "Basic256Sha256": "Basic256Sha256",
    "Aes128_Sha256_RsaOaep": "Aes128Sha256RsaOaep",
    "Aes256_Sha256_RsaPss": "Aes256Sha256RsaPss",
}
SECURITY_MODES = ("Sign", "SignAndEncrypt")


def security_policy_type(policy: str, mode: str) -> ua.SecurityPolicyType:
    """asyncua's endpoint type for a policy and mode; ValueError naming what is not supported."""
    if policy not in SECURITY_POLICIES:
        raise ValueError(f"security policy {policy!r} is not one of {', '.join(SECURITY_POLICIES)}")
    if mode not in SECURITY_MODES:
        raise ValueError(f"security mode {mode!r} is not one of {', '.join(SECURITY_MODES)}")
    return ua.SecurityPolicyType[f"{SECURITY_POLICIES[policy]}_{mode}"]


def ensure_server_certificate(folder: Path) -> tuple[Path, Path]:
    """The server's certificate and key in `folder` (`cert.der`, `key.pem`), made when missing; their paths.

    Self-signed, valid 5 years, subjectAltName: APPLICATION_URI, this host's name, localhost and 127.0.0.1.
    """
    cert_file, key_file = folder / "cert.der", folder / "key.pem"
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    folder.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(APPLICATION_URI),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
        x509.IPAddress(ip_address("127.0.0.1")),
    ]
    certificate = cert_gen.generate_self_signed_app_certificate(
        key,
        "Shopfloor injection-moulding simulator",
        {"organizationName": "Shopfloor"},
        names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=5 * 365,
    )
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(cert_gen.dump_private_key_as_pem(key))
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    return cert_file, key_file


def _string_node(identifier: str, namespace_index: int) -> ua.NodeId:
    return ua.NodeId(ua.String(identifier), ua.Int16(namespace_index))


class _PasswordUsers(UserManager):
    """Accepts the listed username/password pairs and user certificates, and anonymous sessions if allowed."""

    def __init__(
        self, users: Mapping[str, str], *, allow_anonymous: bool, certificates: Sequence[x509.Certificate] = ()
    ) -> None:
        self._users = dict(users)
        self._allow_anonymous = allow_anonymous
        self._certificates = {_der(certificate): certificate for certificate in certificates}

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        """The session's user, or None (the server then answers BadUserAccessDenied)."""
        if username is not None:
            return User(role=UserRole.User, name=username) if self._users.get(username) == password else None
        # asyncua passes the channel's client certificate here for anonymous sessions too, so a certificate alone
        # does not mean an X.509 user token: a known one is that user, anything else is an anonymous session.
        # On an unsecured channel it is empty bytes.
        known = self._certificates.get(_der(certificate)) if certificate else None
        if known is not None:
            return User(role=UserRole.User, name=known.subject.rfc4514_string())
        return User(role=UserRole.User) if self._allow_anonymous else None


def _der(certificate: x509.Certificate | bytes) -> bytes:
    if isinstance(certificate, bytes):
        try:
            certificate = x509.load_der_x509_certificate(certificate)
        except ValueError:
            return b""
    return certificate.public_bytes(serialization.Encoding.DER)


class InjectionMachineServer:
    """The simulator in-process: `async with InjectionMachineServer(port=0) as server: server.endpoint`.

    `port=0` takes a free port (read `endpoint` after start). `record` lists `(timestamp, tag, value)` for every
    value written, initial values included; `current()` is the latest exposed value of each tag.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4840,
        seed: int = 1,
        speed: float = 1.0,
        update_interval_s: float = 1.0,
        params: InjectionParams | None = None,
        users: Mapping[str, str] | None = None,
        allow_anonymous: bool = True,
        keep_record: bool = True,
        security: Sequence[tuple[str, str]] = (),
        certificate_dir: Path | None = None,
        trusted_clients: Path | None = None,
        user_certificates: Sequence[x509.Certificate] = (),
    ) -> None:
        """`security`: (policy, mode) pairs such as ("Basic256Sha256", "SignAndEncrypt"); empty: mode None only.

        A secured server keeps its certificate in `certificate_dir` (required then). `trusted_clients`: a folder of
        the client certificates it accepts; None accepts every client certificate. `user_certificates`: X.509 user
        identities it accepts (secured only: the token is signed with the channel's policy).
        """
        if speed <= 0 or update_interval_s <= 0:
            raise ValueError("speed and update_interval_s must be > 0")
        self.security_types = [security_policy_type(policy, mode) for policy, mode in security]
        if self.security_types and certificate_dir is None:
            raise ValueError("a secured simulator needs certificate_dir for its certificate")
        self.certificate_dir = certificate_dir
        self.trusted_clients = trusted_clients
        if user_certificates and not self.security_types:
            raise ValueError("user certificates need a secured endpoint to sign their token")
        self.user_certificates = list(user_certificates)
        self.host = host
        self.port = port
        self.speed = speed
        self.update_interval_s = update_interval_s
        self.machine = InjectionMachine(seed=seed, params=params)
        self.record: list[tuple[datetime, str, Exposed]] = []
        self.namespace_index = -1
        # A wrong PLC clock: added to every source timestamp written (tests use it to see the gateway's fallback).
        self.clock_offset = timedelta(0)
        self._keep_record = keep_record
        self._users = users
        self._allow_anonymous = allow_anonymous
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._setpoint_nodes: dict[str, ua.NodeId] = {}
        self._current: dict[str, Exposed] = {}
        self._muted: dict[ua.NodeId, ua.DataValue] | None = None
        self._paused = False
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        """The URL clients connect to, e.g. `opc.tcp://127.0.0.1:4840`."""
        return f"opc.tcp://{self.host}:{self.port}"

    def current(self) -> dict[str, Exposed]:
        """The latest value of each tag as exposed (the state as its code)."""
        return dict(self._current)

    def setpoints(self) -> dict[str, Exposed]:
        """The setpoints as the server holds them now (what clients wrote, or the initial values)."""
        server = self._require_server()
        values: dict[str, Exposed] = {}
        for tag, node in self._setpoint_nodes.items():
            value = server.read_attribute_value(node).Value
            if value is not None and isinstance(value.Value, int | float):
                values[tag] = value.Value
        return values

    def pause(self) -> None:
        """Stop advancing and writing: the values freeze, the server keeps serving."""
        self._paused = True

    def resume(self) -> None:
        """Advance and write again after `pause()`."""
        self._paused = False

    async def mute_data_changes(self, muted: bool = True) -> None:
        """Keep values changing and readable but send no data-change notifications (a stale PLC subscription).

        While muted, new values are served through a read callback, which asyncua does not report to monitored
        items: subscriptions get keep-alives only. A subscription created while muted gets the current values
        once (as every new monitored item does), then nothing. Unmuting writes the values back the normal way.
        """
        server = self._require_server()
        if muted and self._muted is None:
            self._muted = {}
            for node in self._nodes.values():
                self._muted[node] = server.read_attribute_value(node)
                server.set_attribute_value_callback(node, self._read_muted)
        elif not muted and self._muted is not None:
            muted_values, self._muted = self._muted, None
            for node, datavalue in muted_values.items():
                await server.write_attribute_value(node, datavalue)

    async def expose(
        self,
        tag: str,
        value: Exposed | None,
        *,
        source_time: datetime | None,
        server_time: datetime | None,
        status: int = StatusCodes.Good,
    ) -> None:
        """Write one value as a PLC would: a chosen status code and timestamps (None leaves one out), for the tests
        of the gateway's timestamp modes, skew guard and qualities. Pause the simulator first, or its next update
        overwrites the value.

        asyncua's write nulls the value of a Bad status, as the spec asks; some PLCs send their last value along
        anyway, so a Bad value given here is also served to reads (not to subscriptions) until the next write.
        """
        server = self._require_server()
        node = self._nodes[tag]
        variant = ua.Variant(value, VARIABLES[tag][1]) if value is not None else ua.Variant()
        code = ua.StatusCode(ua.UInt32(status))
        datavalue = ua.DataValue(
            variant,
            StatusCode=code,
            SourceTimestamp=_opcua_time(source_time),
            ServerTimestamp=_opcua_time(server_time),
        )
        await server.write_attribute_value(node, datavalue)
        if value is not None and code.is_bad():
            server.set_attribute_value_callback(node, lambda _node, _attribute: datavalue)
        if value is not None:
            self._current[tag] = value

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the address space, write the initial values and start serving and updating."""
        user_manager = None
        if self._users or self.user_certificates:
            user_manager = _PasswordUsers(
                self._users or {}, allow_anonymous=self._allow_anonymous, certificates=self.user_certificates
            )
        server = Server(user_manager=user_manager)
        await server.init()
        server.set_server_name("Shopfloor injection-moulding simulator")
        await server.set_application_uri(APPLICATION_URI)
        server.set_endpoint(self.endpoint)
        if self.security_types and self.certificate_dir is not None:
            cert_file, key_file = await asyncio.to_thread(ensure_server_certificate, self.certificate_dir)
            await server.load_certificate(str(cert_file))
            await server.load_private_key(str(key_file))
            server.set_security_policy(self.security_types)
            if self.trusted_clients is not None:
                server.set_certificate_validator(_client_validator(self.trusted_clients))
        else:
            # No certificates: only the unencrypted endpoint is offered (asyncua warns about the others otherwise).
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        # No certificate tokens (they would need a signing endpoint); user names only when users are configured.
        logins = bool(self._users or self.user_certificates)
        tokens: list[type] = [ua.AnonymousIdentityToken] if self._allow_anonymous or not logins else []
        if self._users:
            tokens.append(ua.UserNameIdentityToken)
        if self.user_certificates:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        idx = self.namespace_index
        machine = await server.nodes.objects.add_object(
            _string_node(OBJECT_NAME, idx), ua.QualifiedName(OBJECT_NAME, idx)
        )
        initial = exposed_values(self.machine.values())
        for tag, (browse_name, variant_type) in VARIABLES.items():
            variable = await machine.add_variable(
                _string_node(f"{OBJECT_NAME}.{browse_name}", idx),
                ua.QualifiedName(browse_name, idx),
                ua.Variant(initial[tag], variant_type),
            )
            self._nodes[tag] = variable.nodeid
        initial_setpoints = {"cycle_time_setpoint_s": self.machine.params.ideal_cycle_time_s}
        for tag, (browse_name, variant_type, _) in SETPOINTS.items():
            variable = await machine.add_variable(
                _string_node(f"{OBJECT_NAME}.{browse_name}", idx),
                ua.QualifiedName(browse_name, idx),
                ua.Variant(initial_setpoints.get(tag, 0), variant_type),
            )
            await variable.set_writable()
            self._setpoint_nodes[tag] = variable.nodeid
        if idx != EXPECTED_NAMESPACE_INDEX:
            log.warning("opcua_simulator_namespace_index", expected=EXPECTED_NAMESPACE_INDEX, got=idx)
        self._server = server
        await self._write(initial, force=True)
        try:
            await server.start()
        except BaseException:
            self._server = None
            raise
        if self.port == 0 and server.bserver is not None:
            self.port = server.bserver.port
        self._task = asyncio.create_task(self._run(), name=f"opcua-sim:update:{self.port}")
        self._task.add_done_callback(_log_failure)
        log.info("opcua_simulator_started", endpoint=self.endpoint, namespace_index=idx)

    async def stop(self) -> None:
        """Stop updating, close every client connection and stop serving."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()
            log.info("opcua_simulator_stopped", endpoint=self.endpoint)

    def _require_server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return self._server

    def _follow_setpoints(self) -> None:
        """The machine takes a new cycle time setpoint written by a client (from its next cycle on)."""
        wanted = self.setpoints().get("cycle_time_setpoint_s")
        if wanted is not None and wanted > 0 and wanted != self.machine.params.ideal_cycle_time_s:
            self.machine.set_ideal_cycle_time(float(wanted))
            log.info("opcua_simulator_cycle_time_setpoint", cycle_time_s=wanted)

    def _read_muted(self, node: ua.NodeId, attribute: AttributeIds) -> ua.DataValue:
        assert self._muted is not None  # noqa: S101 -- installed only while muted
        return self._muted[node]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * self.update_interval_s - loop.time()))
            if self._paused:
                continue
            self._follow_setpoints()
            # Simulated time follows the tick count, not the wall clock, so a seed gives the same machine history.
            self.machine.step(self.machine.now_s + self.update_interval_s * self.speed)
            await self._write(exposed_values(self.machine.values()))

    async def _write(self, values: Mapping[str, Exposed], *, force: bool = False) -> None:
        server = self._require_server()
        ts = utcnow() + self.clock_offset
        for tag, value in values.items():
            if not force and self._current.get(tag) == value:
                continue
            variant = ua.Variant(value, VARIABLES[tag][1])
            stamp = ua.DateTime.combine(ts.date(), ts.timetz())
            datavalue = ua.DataValue(variant, SourceTimestamp=stamp, ServerTimestamp=stamp)
            node = self._nodes[tag]
            if self._muted is not None:
                self._muted[node] = datavalue
            else:
                await server.write_attribute_value(node, datavalue)
            self._current[tag] = value
            if self._keep_record:
                self.record.append((ts, tag, value))


def _opcua_time(ts: datetime | None) -> ua.DateTime | None:
    return None if ts is None else ua.DateTime.combine(ts.date(), ts.timetz())


def _client_validator(folder: Path) -> CertificateValidatorMethod:
    """Accept only client certificates in `folder` (re-read at every session, so one can be added while serving)."""
    store = TrustStore([folder], [])
    checks = (
        CertificateValidatorOptions.TIME_RANGE
        | CertificateValidatorOptions.URI
        | CertificateValidatorOptions.TRUSTED
        | CertificateValidatorOptions.PEER_CLIENT
    )
    validator = CertificateValidator(checks, store)

    async def validate(certificate: x509.Certificate, client: ua.ApplicationDescription) -> None:
        try:
            await store.load()
        except ValueError:  # cryptography refuses to build an empty store: nothing is trusted yet
            raise ServiceError(StatusCodes.BadCertificateUntrusted) from None
        await validator.validate(certificate, client)

    return validate


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("opcua_simulator_update_failed", error=repr(task.exception()))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.opcua", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4840, help="TCP port; 0 takes a free one (default 4840)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the machine (default 1)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (default 1)")
    parser.add_argument("--update-interval", type=float, default=1.0, help="seconds between updates (default 1)")
    parser.add_argument("--ideal-cycle-time", type=float, default=12.0, help="ideal cycle time in s (default 12)")
    parser.add_argument(
        "--security",
        action="append",
        default=[],
        type=_security_pair,
        metavar="POLICY:MODE",
        help="offer this secured endpoint instead of the unsecured one (repeatable), e.g. "
        f"Basic256Sha256:SignAndEncrypt; policies {', '.join(SECURITY_POLICIES)}, modes {', '.join(SECURITY_MODES)}",
    )
    parser.add_argument(
        "--certificate-dir", type=Path, help="folder of the server's cert.der and key.pem, made if missing"
    )
    parser.add_argument(
        "--trusted-clients", type=Path, help="accept only the client certificates in this folder (default: any)"
    )
    parser.add_argument(
        "--user", action="append", default=[], type=_user_pair, metavar="NAME:PASSWORD", help="a login (repeatable)"
    )
    parser.add_argument(
        "--user-certificate",
        action="append",
        default=[],
        type=_certificate_file,
        metavar="FILE",
        help="accept this X.509 user identity, PEM or DER (repeatable; needs --security)",
    )
    parser.add_argument(
        "--no-anonymous", action="store_true", help="refuse anonymous sessions (needs --user or --user-certificate)"
    )
    add_ready_file_option(parser)
    args = parser.parse_args(argv)
    if args.security and args.certificate_dir is None:
        parser.error("--security needs --certificate-dir (where the server's certificate is kept)")
    if args.no_anonymous and not (args.user or args.user_certificate):
        parser.error("--no-anonymous needs at least one --user or --user-certificate")
    if args.user_certificate and not args.security:
        parser.error("--user-certificate needs --security (the user token is signed with the channel's policy)")
    return args


def _security_pair(text: str) -> tuple[str, str]:
    policy, _, mode = text.partition(":")
    try:
        security_policy_type(policy, mode)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return policy, mode


def _certificate_file(text: str) -> x509.Certificate:
    try:
        data = Path(text).read_bytes()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a PEM or DER certificate") from None


def _user_pair(text: str) -> tuple[str, str]:
    name, colon, password = text.partition(":")
    if not name or not colon or not password:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD")
    return name, password


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM or SIGINT."""
    simulator = InjectionMachineServer(
        host=args.host,
        port=args.port,
        seed=args.seed,
        speed=args.speed,
        update_interval_s=args.update_interval,
        params=InjectionParams(ideal_cycle_time_s=args.ideal_cycle_time),
        keep_record=False,
        users=dict(args.user) or None,
        allow_anonymous=not args.no_anonymous,
        security=args.security,
        certificate_dir=args.certificate_dir,
        trusted_clients=args.trusted_clients,
        user_certificates=args.user_certificate,
    )
    with stop_on_signals() as stop:
        async with simulator, readiness(args.ready_file) as ready:
            ready.ready(endpoint=simulator.endpoint)
            print(f"READY opcua {simulator.endpoint}", flush=True)
            await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    configure_logging(LogSettings(), RuntimeSettings().shopfloor_env)
    # asyncua logs every request and publish at INFO.
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(args))
    except OSError as error:
        print(f"opcua simulator: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
