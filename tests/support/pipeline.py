"""Helpers for the pipeline tests: settings, the ingestor as a process, publishing, counting."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.contract import encode_telemetry
from core.db import session_factory
from core.lifecycle import read_ready_file
from core.models import Reading
from core.settings import (
    DatabaseSettings,
    IngestorProcessSettings,
    IngestorSettings,
    LogSettings,
    MqttSettings,
    RuntimeSettings,
    SparkplugSettings,
)
from ingestor.service import Ingestor
from tests.support.mosquitto import MosquittoBroker

SITE = "plant1"
# Broker logins (mosquitto/make-logins.sh): one per gateway or publisher, each bound to its client id (= the
# login). `SITE` is the gateways' and devices' login of site plant1, PUBLISHER a second one of the same site for
# the tests' own publisher, so both can be connected at once.
PUBLISHER = "plant1-pub"
# A Sparkplug B edge node of site plant1 (group plant1, edge node id = the login; tests/integration/test_sparkplug.py).
EDGE = "plant1-edge"
# The API's login (the only one that may publish commands), and a gateway login that takes the commands of two
# machines of plant1 (tests/integration/test_commands.py).
API_LOGIN = "shopfloor-api"
COMMAND_GATEWAY = "plant1-cmd"
COMMAND_MACHINES = ("press-cmd", "assembly-cmd")
PASSWORDS = {
    "ingestor": "ingestor-secret-pw",
    SITE: "plant1-secret-pw!",
    PUBLISHER: "plant1-pub-secret-pw",
    "plant2": "plant2-secret-pw!",
    EDGE: "plant1-edge-secret-pw",
    API_LOGIN: "api-commands-secret-pw",
    COMMAND_GATEWAY: "plant1-cmd-secret-pw",
}
LOGIN_SITES = {PUBLISHER: SITE, EDGE: SITE, COMMAND_GATEWAY: f"{SITE}/{'+'.join(COMMAND_MACHINES)}"}
SHOPFLOOR = str(Path(sys.executable).parent / "shopfloor")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# The broker lets the `ingestor` login subscribe to the shared groups its rules name (make-logins.sh), so the
# tests' broker names a pool of them and each test's ingestors take a fresh one (one broker per worker process).
INGESTOR_GROUPS = ("ingestors", *(f"test-group-{number}" for number in range(400)))
_next_group = itertools.count(1)


def fresh_group() -> str:
    """A shared-subscription group no earlier test of this process used."""
    number = next(_next_group)
    if number >= len(INGESTOR_GROUPS):
        raise RuntimeError("the test broker's ingestor groups are used up: raise the pool in tests/support/pipeline.py")
    return INGESTOR_GROUPS[number]


@dataclass(frozen=True)
class Identity:
    """A client id and a shared-subscription group of one test's ingestor(s): stale sessions of earlier tests
    must not hold a share of this test's messages."""

    client_id: str = field(default_factory=lambda: unique("ingestor"))
    group: str = field(default_factory=fresh_group)


def tls_settings(broker: MosquittoBroker, *, certificate: bool = False) -> dict[str, Any]:
    """MqttSettings fields for the broker's TLS listener: with the password, or with the ingestor's certificate."""
    fields: dict[str, Any] = {"mqtt_tls": True, "mqtt_ca_file": broker.certs / "ca.crt", "mqtt_port": broker.tls_port}
    if certificate:
        fields |= {"mqtt_port": broker.cert_port, "mqtt_cert_file": broker.certs / "ingestor.crt"}
        fields |= {"mqtt_key_file": broker.certs / "ingestor.key"}
    return fields


def ingestor_settings(
    broker: MosquittoBroker,
    database_url: str,
    identity: Identity,
    *,
    mqtt: dict[str, Any] | None = None,
    **ingest: Any,
) -> IngestorProcessSettings:
    """`mqtt` overrides MqttSettings fields (see tls_settings)."""
    return IngestorProcessSettings(
        runtime=RuntimeSettings(),
        database=DatabaseSettings(database_url=database_url),
        log=LogSettings(),
        mqtt=MqttSettings.model_validate(
            {"mqtt_host": broker.host, "mqtt_port": broker.port, "mqtt_username": "ingestor",
             "mqtt_password": PASSWORDS["ingestor"], **(mqtt or {})}
        ),
        ingest=IngestorSettings.model_validate(
            {"ingest_client_id": identity.client_id, "ingest_shared_group": identity.group,
             "ingest_metrics_port": None, **ingest}
        ),
    )  # fmt: skip


def ingestor_env(broker: MosquittoBroker, database_url: str, identity: Identity, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SHOPFLOOR_", "INGEST_", "MQTT_"))}
    env.update(
        SHOPFLOOR_ENV="test",
        DATABASE_URL=database_url,
        MQTT_HOST=broker.host,
        MQTT_PORT=str(broker.port),
        MQTT_USERNAME="ingestor",
        MQTT_PASSWORD=PASSWORDS["ingestor"],
        INGEST_CLIENT_ID=identity.client_id,
        INGEST_SHARED_GROUP=identity.group,
        INGEST_METRICS_PORT="0",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


class IngestorProcess:
    """`shopfloor ingest` as its own process, as production runs it."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.ready_file = log_path.with_suffix(".ready")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 -- our own console script
                [SHOPFLOOR, "ingest", "--ready-file", str(self.ready_file)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_subscribed(self, timeout: float = 30) -> None:
        """Until the ingestor says it is ready: subscribed to the broker (its readiness file)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if read_ready_file(self.ready_file) is not None:
                return
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"ingestor exited: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"ingestor did not subscribe: {self.log_path.read_text()[-3000:]}")

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def stream_payloads(machine: str, messages: int, samples: int, tags: int, *, offset: int = 0) -> list[bytes]:
    """Deterministic telemetry: message i carries `samples` consecutive milliseconds of `tags` tags each."""
    payloads = []
    for index in range(offset, offset + messages):
        body = [
            {
                "ts": (T0 + timedelta(milliseconds=index * samples + sample)).isoformat(),
                "values": {f"t{tag}": float(index * 1000 + sample * 10 + tag) for tag in range(tags)},
            }
            for sample in range(samples)
        ]
        payloads.append(encode_telemetry(body, seq=index))
    return payloads


async def publish(
    broker: MosquittoBroker, topic: str, payloads: list[bytes], *, pause_every: int = 0, pause_s: float = 0
) -> None:
    """Publish at QoS 1 as the site's gateway would, waiting for every PUBACK."""
    async with aiomqtt.Client(
        broker.host, broker.port, username=PUBLISHER, password=PASSWORDS[PUBLISHER], identifier=PUBLISHER,
        protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=200,
    ) as client:  # fmt: skip
        for index, payload in enumerate(payloads, start=1):
            await client.publish(topic, payload, qos=1)
            if pause_every and index % pause_every == 0:
                await asyncio.sleep(pause_s)


async def reading_count(engine: AsyncEngine) -> int:
    async with session_factory(engine)() as session:
        return int(await session.scalar(select(func.count()).select_from(Reading)) or 0)


async def wait_for_count(engine: AsyncEngine, expected: int, within_s: float = 60) -> int:
    """Poll until the table holds `expected` readings (or time runs out); returns the last count."""
    deadline = time.monotonic() + within_s
    count = await reading_count(engine)
    while count < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        count = await reading_count(engine)
    return count


@contextlib.asynccontextmanager
async def running_ingestor(
    broker: MosquittoBroker,
    database_url: str,
    engine: AsyncEngine,
    identity: Identity | None = None,
    *,
    mqtt: dict[str, Any] | None = None,
    sparkplug: SparkplugSettings | None = None,
    **ingest: object,
) -> AsyncIterator[Ingestor]:
    """An in-process ingestor on the test engine; stopped (drained) at the end. `mqtt`: see ingestor_settings;
    `sparkplug`: its Sparkplug B host settings (off when None)."""
    settings = ingestor_settings(broker, database_url, identity or Identity(), mqtt=mqtt, **ingest)
    if sparkplug is not None:
        settings = settings.model_copy(update={"sparkplug": sparkplug})
    ingestor = Ingestor(settings, engine=engine)
    stop = asyncio.Event()
    task = asyncio.create_task(ingestor.run(stop), name="test:ingestor")
    await asyncio.wait_for(ingestor.subscribed.wait(), timeout=15)
    try:
        yield ingestor
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
