"""The ingestor process: MQTT in, batches committed to the database, then (and only then) acknowledged.

Flow: one reader task per broker connection decodes each message and makes its COPY rows (`encode_copy`) into a
bounded queue; INGEST_WRITERS writer tasks take batches off it, each stores its batch in one transaction (its own
connection) through `core.ingest.write_batch` (with the sequence-gap record, ingestor/sequence.py), and only after
that commit acknowledges the batch's messages, batches in the order they were taken. The stages overlap: while
PostgreSQL commits batch N, batch N+1 is being written and the reader decodes and encodes what comes after.
Batches adapt (ingestor/batching.py): once free, a writer takes everything waiting, up to
INGEST_BATCH_MAX_READINGS / _MAX_BYTES, so a busy plant gets large batches and a quiet one its readings within
INGEST_BATCH_MAX_AGE_MS. Memory is bounded by the in-flight window: the broker sends at most INGEST_MAX_INFLIGHT
un-acknowledged messages (MQTT 5 Receive Maximum), and the queue and the batches being written hold no more.
Un-acknowledged messages stay with the broker (persistent session, fixed client id), so a crash
at any point loses nothing; storing twice is harmless because the tables are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import start_http_server
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.commands import COMMAND_RESULT_FILTER
from core.contract import GATEWAY_STATUS_FILTER, STATUS_FILTER, TELEMETRY_FILTER, Telemetry, shared
from core.db import TRANSIENT_DB_ERRORS, create_engine_from_settings
from core.ingest import (
    CommandResult,
    CopyRows,
    GatewayStatus,
    IngestBatch,
    MachineRegistry,
    RejectedMessage,
    StatusUpdate,
    WriteResult,
    encode_copy,
    plain_text,
    purge_dead_letters,
    write_batch,
)
from core.lifecycle import Readiness, readiness, stop_on_signals
from core.logging import get_logger
from core.lru import LruCache
from core.mqtt import SubscriptionRefused, mqtt_client, subscribe_or_raise
from core.retry import Backoff, keep_connected, retry
from core.settings import ConfigurationError, IngestorProcessSettings
from core.sparkplug import NAMESPACE, group_filter, ncmd_topic, rebirth_payload, state_payload, state_topic
from ingestor.ack import ack, enable_manual_ack
from ingestor.batching import next_batch
from ingestor.decode import Decoded, TopicRateLimit, decode_message
from ingestor.prometheus import IngestMetrics
from ingestor.sequence import SequenceTracker, Tracked
from ingestor.sparkplug import SparkplugHost

log = get_logger("shopfloor.ingestor")

# Connection trouble (core.db.TRANSIENT_DB_ERRORS) is worth waiting out; these in a batch are a poison message.
POISON_DB_ERRORS: tuple[type[BaseException], ...] = (DataError, IntegrityError)
# How often dead letters older than DEAD_LETTER_RETENTION_DAYS are deleted.
RETENTION_INTERVAL_S = 3600.0
NOTHING = WriteResult(0, 0, 0, 0, 0)


@dataclass(frozen=True)
class Pending:
    """A received message waiting for its batch to commit."""

    message: aiomqtt.Message
    epoch: int
    arrived: float
    decoded: Decoded | IngestBatch  # a batch: what one Sparkplug message gives
    copy_rows: CopyRows | None = None  # made on arrival when the machine's id is known, else by the writer

    @property
    def readings(self) -> int:
        """How many readings it carries."""
        if isinstance(self.decoded, IngestBatch):
            return self.decoded.reading_count
        return len(self.decoded.readings) if isinstance(self.decoded, Telemetry) else 0

    @property
    def size(self) -> int:
        """Bytes it holds: its payload and its COPY rows."""
        return len(_payload(self.message)) + (len(self.copy_rows.data) if self.copy_rows is not None else 0)


class Ingestor:
    """One ingestor: a broker session, a bounded queue, a batch writer."""

    def __init__(
        self,
        settings: IngestorProcessSettings,
        *,
        engine: AsyncEngine | None = None,
        metrics: IngestMetrics | None = None,
        ready: Readiness | None = None,
    ):
        self.settings = settings
        self.config = settings.ingest
        self.engine = engine or create_engine_from_settings(settings.database)
        self.metrics = metrics or IngestMetrics.create()
        self.registry = MachineRegistry(
            auto_register=settings.auto_register_machines,
            max_per_site_per_hour=self.config.ingest_auto_register_max_per_site_per_hour,
        )
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=self.config.ingest_max_inflight)
        self.window = settings.telemetry.window()
        self.sequences = SequenceTracker(reorder=timedelta(seconds=self.config.ingest_seq_reorder_s))
        self.dead_letter_limit = TopicRateLimit(self.config.dead_letter_max_per_topic_per_min)
        self.sparkplug: SparkplugHost | None = None
        if settings.sparkplug.sparkplug_enabled:
            self.sparkplug = SparkplugHost(
                host_id=settings.sparkplug.sparkplug_host_id,
                mapping=settings.sparkplug.mapping(),
                window=self.window,
                rebirth_interval_s=settings.sparkplug.sparkplug_rebirth_interval_s,
            )
        # The timestamp of this connection's Sparkplug STATE: its birth, its will and its death carry the same one.
        self._state_ms = 0
        caches: dict[str, LruCache[Any, Any]] = {"machines": self.registry.cache, "seq": self.sequences.known}
        self.metrics.watch_caches(caches | ({"sparkplug_nodes": self.sparkplug.sessions} if self.sparkplug else {}))
        self.subscribed = asyncio.Event()
        self.ready = ready or Readiness()
        self._client: aiomqtt.Client | None = None
        self._epoch = 0
        # Batches are numbered as they are taken; with several writers one may commit before an earlier one, but
        # acknowledgements go out in that order (MQTT 5, 4.6: PUBACKs in the order the PUBLISH packets arrived).
        self._taking = asyncio.Lock()
        self._taken = 0
        self._acked = 0
        self._ack_turn = asyncio.Condition()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain: commit and acknowledge what was received, and return.

        A configuration the broker refuses (ConfigurationError) leaves as itself, not inside an ExceptionGroup, so
        the command prints its one line.
        """
        try:
            async with asyncio.TaskGroup() as group:
                writers = [
                    group.create_task(self._write_loop(), name=f"ingest:writer-{index}")
                    for index in range(self.config.ingest_writers)
                ]
                retention = group.create_task(self._retention_loop(), name="ingest:dead-letter-retention")
                await self._mqtt_loop(stop)
                for writer in writers:
                    writer.cancel()
                retention.cancel()
        except* ConfigurationError as refused:
            raise refused.exceptions[0] from None

    # ---- broker side -------------------------------------------------------------------------------------------

    def _client_for_session(self) -> aiomqtt.Client:
        mqtt = self.settings.mqtt
        v5 = mqtt.mqtt_protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
            # Without a session expiry MQTT 5 discards the session at disconnect, and un-acked messages with it.
            properties.SessionExpiryInterval = self.config.ingest_session_expiry_s
            # The broker sends at most this many un-acknowledged messages: the queue can always take them.
            properties.ReceiveMaximum = self.config.ingest_max_inflight
        will = None
        if self.sparkplug is not None:
            # Sparkplug 3.0: the host's STATE will (retained, QoS 1) says offline if the connection is lost.
            self._state_ms = int(utcnow().timestamp() * 1000)
            will = aiomqtt.Will(
                state_topic(self.sparkplug.host_id),
                state_payload(online=False, timestamp_ms=self._state_ms),
                qos=1,
                retain=True,
            )
        client = mqtt_client(
            mqtt.endpoint(),
            identifier=self.config.ingest_client_id,
            will=will,
            # MQTT 3.1.1 has no session expiry: a persistent session there is `clean_session=False`.
            clean_session=None if v5 else False,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            timeout=10,
        )
        enable_manual_ack(client)
        return client

    async def _mqtt_loop(self, stop: asyncio.Event) -> None:
        def disconnected(_: BaseException) -> None:
            self.subscribed.clear()
            self.ready.not_ready()

        await keep_connected(
            lambda healthy: self._session(stop, healthy),
            transient=(aiomqtt.MqttError,),
            backoff=Backoff(base_s=0.5, cap_s=15.0),
            stop=stop,
            event="mqtt_disconnected",
            on_error=disconnected,
        )
        await self._drain()

    async def _session(self, stop: asyncio.Event, healthy: Callable[[], None]) -> None:
        async with self._client_for_session() as client:
            self._epoch += 1
            self._client = client
            # Shared subscriptions are an MQTT 5 feature (the embedded 3.1.1 broker has none): one ingestor then.
            group = self.config.ingest_shared_group if self.settings.mqtt.mqtt_protocol == "5" else None
            try:
                await subscribe_or_raise(client, shared(group, TELEMETRY_FILTER), qos=1)
                await subscribe_or_raise(client, shared(group, COMMAND_RESULT_FILTER), qos=1)
                # Retained statuses are never sent to shared subscriptions, so every ingestor follows them directly.
                await subscribe_or_raise(client, STATUS_FILTER, qos=1)
                await subscribe_or_raise(client, GATEWAY_STATUS_FILTER, qos=1)
                await self._subscribe_sparkplug(client)
            except SubscriptionRefused as refused:
                log.error("mqtt_subscription_refused", topic_filter=refused.topic_filter, code=refused.code)
                raise ConfigurationError(
                    f"{refused}: the broker login's rules must allow it (the `ingestor` login of "
                    "mosquitto/make-logins.sh may join the groups in MQTT_INGESTOR_GROUPS; "
                    "INGEST_SHARED_GROUP must be one of them; it may subscribe to spBv1.0/#)"
                ) from None
            self.subscribed.set()
            healthy()
            self.ready.ready(client_id=self.config.ingest_client_id, group=group)
            log.info("mqtt_subscribed", client_id=self.config.ingest_client_id, group=group, epoch=self._epoch)
            reader = asyncio.create_task(self._read(client, self._epoch), name="ingest:mqtt-reader")
            stopping = asyncio.create_task(stop.wait(), name="ingest:stop-watch")
            try:
                done, _ = await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not reader.done():
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
            if reader in done:
                reader.result()  # the connection dropped: raise its MqttError
                return
            # Stopping: commit and acknowledge everything received on this connection before disconnecting.
            await self._drain()
            if self.sparkplug is not None:
                # A clean disconnect sends no will: the host says it is offline itself (Sparkplug 3.0).
                await self._publish_state(client, online=False)

    async def _subscribe_sparkplug(self, client: aiomqtt.Client) -> None:
        """Sparkplug B: never a shared subscription (a host must see all of an edge node's messages, in order, to
        follow its aliases and seq), then the host's STATE birth, retained (Sparkplug 3.0)."""
        if self.sparkplug is None:
            return
        groups = self.settings.sparkplug.sparkplug_groups
        for topic_filter in [group_filter(group) for group in groups] or [group_filter()]:
            await subscribe_or_raise(client, topic_filter, qos=1)
        if groups:
            await subscribe_or_raise(client, state_topic(self.sparkplug.host_id), qos=1)
        await self._publish_state(client, online=True)
        log.info("sparkplug_host_online", host_id=self.sparkplug.host_id, groups=groups or ["#"])

    async def _publish_state(self, client: aiomqtt.Client, *, online: bool) -> None:
        assert self.sparkplug is not None  # noqa: S101 -- called only when Sparkplug is on
        payload = state_payload(online=online, timestamp_ms=self._state_ms)
        await client.publish(state_topic(self.sparkplug.host_id), payload, qos=1, retain=True)

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.config.ingest_drain_timeout_s):
                await self.queue.join()
            log.info("ingestor_drained")
        except TimeoutError:
            log.error("drain_timeout", pending=self.queue.qsize())

    async def _read(self, client: aiomqtt.Client, epoch: int) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            if self.sparkplug is not None and topic.startswith(f"{NAMESPACE}/"):
                decoded: Decoded | IngestBatch = await self._sparkplug_message(client, topic, _payload(message))
            else:
                decoded = decode_message(topic, _payload(message), received_at=utcnow(), window=self.window)
            self.metrics.received.labels(type(decoded).__name__).inc()
            if isinstance(decoded, GatewayStatus):
                log.info("gateway_status", site=decoded.site, gateway=decoded.gateway_id, online=decoded.online)
            if decoded is None:
                ack(client, message)
                continue
            if isinstance(decoded, RejectedMessage) and not self._dead_letter_allowed(decoded):
                ack(client, message)
                continue
            if isinstance(decoded, IngestBatch) and not decoded.telemetry and not decoded.statuses:
                decoded.rejected[:] = [letter for letter in decoded.rejected if self._dead_letter_allowed(letter)]
                if not decoded:
                    ack(client, message)
                    continue
            copy_rows = None
            if isinstance(decoded, Telemetry):
                # Made now, while the writer waits for the database: the batch is ready when the writer is free.
                machine_id = self.registry.cache.peek((decoded.site, decoded.machine))
                if machine_id is not None:
                    copy_rows = encode_copy(machine_id, decoded)
            await self.queue.put(Pending(message, epoch, time.monotonic(), decoded, copy_rows))
            self.metrics.uncommitted.inc()

    async def _sparkplug_message(self, client: aiomqtt.Client, topic: str, payload: bytes) -> IngestBatch | None:
        """What a Sparkplug message gives to store (None: nothing); sends the Rebirth request the host asks for."""
        assert self.sparkplug is not None  # noqa: S101 -- called only when Sparkplug is on
        outcome = self.sparkplug.handle(topic, payload, received_at=utcnow(), now=time.monotonic())
        for reason, count in outcome.skipped.items():
            self.metrics.sparkplug_skipped.labels(reason).inc(count)
        if outcome.rebirth is not None:
            group, edge_node = outcome.rebirth
            # QoS 0 as the specification has NCMD; the request is repeated while the births do not come.
            await client.publish(
                ncmd_topic(group, edge_node), rebirth_payload(timestamp_ms=int(utcnow().timestamp() * 1000)), qos=0
            )
            self.metrics.sparkplug_rebirths.inc()
            log.warning("sparkplug_rebirth_requested", group=group, edge_node=edge_node)
        if outcome.reassert_state:
            await self._publish_state(client, online=True)
        return outcome.batch if outcome.batch else None

    def _dead_letter_allowed(self, rejected: RejectedMessage) -> bool:
        """Within DEAD_LETTER_MAX_PER_TOPIC_PER_MIN; beyond it the message is counted, logged once, and dropped."""
        allowed, first_over = self.dead_letter_limit.allow(rejected.topic, now=time.monotonic())
        if not allowed:
            self.metrics.dead_letters_dropped.labels("rate_limit").inc()
            if first_over:
                log.warning(
                    "dead_letters_rate_limited",
                    topic=plain_text(rejected.topic, 200),
                    per_minute=self.dead_letter_limit.per_minute,
                )
        return allowed

    # ---- database side -----------------------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        days = self.config.dead_letter_retention_days
        if not days:
            return
        while True:
            try:
                async with self.engine.begin() as conn:
                    deleted = await purge_dead_letters(conn, before=utcnow() - timedelta(days=days))
                if deleted:
                    log.info("dead_letters_purged", rows=deleted, retention_days=days)
            except TRANSIENT_DB_ERRORS as error:
                log.warning("dead_letter_purge_failed", error=repr(error)[:500])
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def _write_loop(self) -> None:
        while True:
            async with self._taking:
                items = await next_batch(
                    self.queue,
                    min_readings=self.config.ingest_batch_min_readings,
                    max_readings=self.config.ingest_batch_max_readings,
                    max_bytes=self.config.ingest_batch_max_bytes,
                    max_age_s=self.config.ingest_batch_max_age_ms / 1000,
                    readings=lambda item: item.readings,
                    size=lambda item: item.size,
                    arrived=lambda item: item.arrived,
                )
                self._taken += 1
                number = self._taken
            try:
                await self._commit(items, number)
            finally:
                for _ in items:
                    self.queue.task_done()
                self.metrics.uncommitted.dec(len(items))

    async def _commit(self, items: list[Pending], number: int) -> None:
        started = time.perf_counter()
        try:
            result = await self._store(_batch_of(items), mode="batch")
        except POISON_DB_ERRORS as error:
            log.error("batch_refused", error=repr(error)[:500], messages=len(items))
            result = await self._store_split(items)
        self.registry.remember(result.machine_ids)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_readings.observe(result.readings_offered)
        self.metrics.readings_written.inc(result.readings_inserted)
        self.metrics.duplicates.inc(result.duplicates)
        self.metrics.conflicts.inc(result.conflicts)
        self.metrics.not_good.inc(result.not_good)
        self.metrics.out_of_range.inc(result.out_of_range)
        self.metrics.dead_letters.inc(result.dead_lettered)
        self.metrics.statuses_ignored.inc(result.statuses_ignored)
        self.metrics.command_results.inc(result.command_results)
        if result.conflicts:
            # Once per batch: a publisher reposting old times with new values must be visible, not folded into
            # the duplicates of ordinary redelivery.
            log.warning("readings_conflicting", conflicts=result.conflicts, kept_as_dead_letters=True)
        async with self._ack_turn:
            await self._ack_turn.wait_for(lambda: self._acked == number - 1)
            now = time.monotonic()
            client, epoch = self._client, self._epoch
            for item in items:
                self.metrics.lag_seconds.observe(now - item.arrived)
                # A message from an earlier connection cannot be acknowledged: its id may now name another message.
                # The broker redelivers it instead, and the idempotent tables make that harmless.
                if client is not None and item.epoch == epoch:
                    ack(client, item.message)
            self._acked = number
            self._ack_turn.notify_all()
        log.debug(
            "batch_written",
            messages=len(items),
            rows=result.readings_inserted,
            duplicates=result.duplicates,
            conflicts=result.conflicts,
            dead_letters=result.dead_lettered,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _store(self, batch: IngestBatch, *, mode: str) -> WriteResult:
        async def attempt() -> tuple[WriteResult, Tracked]:
            async with self.engine.begin() as conn:
                written = await write_batch(
                    conn,
                    batch,
                    registry=self.registry,
                    dead_letter_max_payload_bytes=self.config.dead_letter_max_payload_bytes,
                )
                tracked = await self.sequences.track(conn, batch.telemetry, written.machine_ids, now=utcnow())
            return written, tracked

        result, tracked = await retry(
            attempt,
            transient=TRANSIENT_DB_ERRORS,
            backoff=Backoff(base_s=0.2, cap_s=10.0),
            what="write_batch",
            on_error=lambda _: self.metrics.db_errors.inc(),
        )
        self.metrics.transactions.labels(mode).inc()
        self.sequences.committed(tracked)
        for (site, machine), missing in tracked.gaps.items():
            self.metrics.seq_gaps.inc(missing)
            log.warning("seq_gap", site=site, machine=machine, missing=missing)
        return result

    async def _store_split(self, items: list[Pending]) -> WriteResult:
        """After a refused batch: the good messages go in as one batch and the rejected ones as another, so
        what decoding rejected never sends the good ones one by one; only a part the database refuses is."""
        good = [item for item in items if not isinstance(item.decoded, RejectedMessage)]
        rejected = [item for item in items if isinstance(item.decoded, RejectedMessage)]
        total = NOTHING
        for part in (good, rejected):
            if not part:
                continue
            try:
                total += await self._store(_batch_of(part), mode="batch")
            except POISON_DB_ERRORS:
                for item in part:
                    total += await self._store_single(item)
        return total

    async def _store_single(self, item: Pending) -> WriteResult:
        """Store one message, else dead-letter it, else log it and let it be acknowledged: never retried forever."""
        topic, payload = str(item.message.topic), _payload(item.message)
        try:
            return await self._store(_batch_of([item]), mode="single")
        except POISON_DB_ERRORS as error:
            refused = RejectedMessage("mqtt", topic, payload, f"database refused: {error!r}")
        # The same per-topic limit as for what decoding rejects (counted once there): a device whose messages the
        # database refuses one by one must not fill the dead-letter table either.
        if not isinstance(item.decoded, RejectedMessage) and not self._dead_letter_allowed(refused):
            return NOTHING
        try:
            return await self._store(IngestBatch(rejected=[refused]), mode="single")
        except POISON_DB_ERRORS as error:
            self.metrics.dead_letters_dropped.labels("unstorable").inc()
            log.error(
                "dead_letter_unstorable", topic=plain_text(topic, 200), size=len(payload), error=repr(error)[:500]
            )
            return NOTHING


def _payload(message: aiomqtt.Message) -> bytes:
    return message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()


def _batch_of(items: list[Pending]) -> IngestBatch:
    batch = IngestBatch()
    for item in items:
        if isinstance(item.decoded, Telemetry):
            batch.telemetry.append(item.decoded)
            if item.copy_rows is not None:
                batch.copy_rows[id(item.decoded)] = item.copy_rows
        elif isinstance(item.decoded, StatusUpdate):
            batch.statuses.append(item.decoded)
        elif isinstance(item.decoded, GatewayStatus):
            batch.gateways.append(item.decoded)
        elif isinstance(item.decoded, CommandResult):
            batch.results.append(item.decoded)
        elif isinstance(item.decoded, RejectedMessage):
            batch.rejected.append(item.decoded)
        elif isinstance(item.decoded, IngestBatch):
            batch.telemetry.extend(item.decoded.telemetry)
            batch.statuses.extend(item.decoded.statuses)
            batch.gateways.extend(item.decoded.gateways)
            batch.rejected.extend(item.decoded.rejected)
    return batch


async def main(settings: IngestorProcessSettings, *, ready_file: Path | None = None) -> int:
    """`shopfloor ingest`: run until SIGTERM or SIGINT, then drain and exit 0."""
    with stop_on_signals() as stop:
        async with readiness(ready_file) as ready:
            ingestor = Ingestor(settings, ready=ready)
            port = settings.ingest.ingest_metrics_port
            if port:
                start_http_server(port, addr=settings.ingest.ingest_metrics_host, registry=ingestor.metrics.registry)
            broker = f"{settings.mqtt.mqtt_host}:{settings.mqtt.mqtt_port}"
            log.info(
                "ingestor_starting",
                broker=broker,
                metrics=f"{settings.ingest.ingest_metrics_host}:{port}" if port else None,
            )
            try:
                await ingestor.run(stop)
            finally:
                await ingestor.engine.dispose()
    log.info("ingestor_stopped")
    return 0
