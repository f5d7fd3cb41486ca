"""The gateway process: one supervised task per device, report by exception, disk buffer, one MQTT publisher.

Every outgoing message is written to the disk buffer first and deleted only after the broker's PUBACK, so a broker
outage, a gateway restart or a SIGKILL loses nothing that was buffered. Each completed poll is written (one SQLite
transaction, shared with other devices' polls that complete within `publish.flush_interval_s`) before the device's
next poll starts, and the publisher is woken at once: a SIGKILL loses only the poll in progress, and a reading is
on the wire within tens of milliseconds when the broker is up. After an outage the backlog is replayed oldest
first, paced by `buffer.replay_rate_per_s`, interleaved with the live messages, which go first. A device that fails
is retried with capped exponential backoff and jitter without touching the others; its online/offline status is
published (retained).

Commands (`core.commands`): when a device has writable tags, the publisher's MQTT session also subscribes (QoS 1)
to that machine's command topic, and the session is persistent (MQTT 5: clean_start false with a session expiry;
3.1.1: clean_session false), so commands published while the gateway was away are delivered when it is back.
Commands are executed one at a time in arrival order by one worker (`gateway.commands` decides), through the
machine's live source; each result goes through the disk buffer like every other message, so an outage delays it
but does not lose it. aiomqtt acknowledges a command as it arrives: a gateway killed in the middle of one does not
execute it a second time after its restart (the API sees it expire instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import start_http_server

from core.clock import utcnow
from core.commands import command_result_topic, command_topic, decode_command, encode_result, parse_command_topic
from core.contract import (
    ContractError,
    encode_status,
    encode_telemetry,
    gateway_status_topic,
    status_topic,
    telemetry_topic,
)
from core.lifecycle import Readiness, cancel_and_wait, readiness, stop_on_signals
from core.logging import get_logger
from core.lru import LruCache
from core.mqtt import SubscriptionRefused, mqtt_client, subscribe_or_raise
from core.puback import NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED, SUCCESS, PubackTracker, settle
from core.retry import Backoff, keep_connected, wait_or_stop
from gateway.backlog import EMPTY, Backlog, BacklogMeter
from gateway.buffer import AsyncDiskBuffer, BufferedMessage, BufferStats, MessageTooLarge, OutgoingMessage, message_size
from gateway.commands import CommandOutcome, command_id_of, execute_command
from gateway.config import GatewayConfig, ModbusDevice, OpcUaDevice, writable_tags
from gateway.pki import ClientApplication
from gateway.plausibility import check_ranges
from gateway.prometheus import GatewayMetrics
from gateway.report import ChangeFilter, group_samples
from gateway.sources.base import TRANSIENT_DEVICE_ERRORS, Source, TagValue, WritableSource

log = get_logger("shopfloor.gateway")

PUBLISH_WINDOW = 100
# After the broker refused the login's messages (135), wait this long before offering them again.
NOT_AUTHORIZED_RETRY_S = 10.0
# While the broker is unreachable, a plain TCP connect tells when it listens again: cheap enough to try this often,
# so the gateway is back within about this long of the broker instead of after its capped backoff.
BROKER_PROBE_S = 1.0
# The backlog gauges are refreshed this often; the retained gateway status this often while a backlog waits
# (and once more when it has emptied).
BACKLOG_REFRESH_S = 1.0
STATUS_REFRESH_S = 10.0
# Replay bursts: at most this many seconds of `replay_rate_per_s` go out in one round. Small, because a round waits
# for all its PUBACKs and live messages wait for the round in flight.
REPLAY_BURST_S = 0.05
# Commands waiting for the worker (executed one at a time; one more is answered `refused` at once), and the answered
# ids remembered so that a QoS 1 redelivery is answered again instead of executed twice. Also aiomqtt's incoming
# queue, which the receiver keeps empty; 1,000 commands of at most 16 KiB is 16 MiB at worst.
COMMAND_QUEUE = 1000
RECENT_COMMANDS = 1000
# How long the broker keeps the gateway's session (its command subscriptions and the commands arriving meanwhile)
# while it is away: longer than a command may wait; one that waited past its expiry is answered `expired`.
SESSION_EXPIRY_S = 24 * 3600
# A command's `expires_at` and its MQTT 5 message expiry disagreeing by more than this means this gateway's clock
# is off: logged (the message expiry decides, see `gateway.commands.execute_command`).
COMMAND_CLOCK_SKEW_WARN_S = 5.0


def make_source(device: ModbusDevice | OpcUaDevice, *, application: ClientApplication | None = None) -> Source:
    """The protocol's source for a device (imported lazily: each pulls in its own library)."""
    if isinstance(device, ModbusDevice):
        from gateway.sources.modbus import ModbusSource

        return ModbusSource(device)
    from gateway.sources.opcua import OpcUaSource

    return OpcUaSource(device, application=application)


class Gateway:
    """All devices of one gateway, its buffer and its publisher."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        metrics: GatewayMetrics | None = None,
        source_factory: Callable[[ModbusDevice | OpcUaDevice], Source] | None = None,
        observer: Callable[[str, list[TagValue]], None] | None = None,
        ready: Readiness | None = None,
        config_file: Path | None = None,
    ):
        self.config = config
        self.metrics = metrics or GatewayMetrics.create()
        # OPC-UA sources share the gateway's certificate folder; the config file names it in the `trust` hint.
        self.source_factory = source_factory or partial(make_source, application=config.client_application(config_file))
        # Sees every value that passed report-by-exception, before it is buffered (tests compare with the database).
        self.observer = observer
        self.buffer = AsyncDiskBuffer(
            config.buffer.path,
            max_messages=config.buffer.max_messages,
            max_bytes=config.buffer.max_bytes,
            max_age_s=config.buffer.max_age_s,
        )
        self.connected = asyncio.Event()
        self.ready = ready or Readiness()
        # Per publisher and machine, in the order messages are made (the replay may deliver them out of order).
        self._seq: dict[str, int] = {device.machine: 0 for device in config.devices}
        self._new_data = asyncio.Event()
        self._online: dict[str, bool | None] = dict.fromkeys(self._seq)
        # Polls waiting to be written: their messages, and the future their devices wait on (one per write).
        self._to_write: list[OutgoingMessage] = []
        self._written: asyncio.Future[None] | None = None
        self._write_wanted = asyncio.Event()
        self._intake_closed = asyncio.Event()
        # Running totals for the backlog's growth estimate and the outage report.
        self.appended_messages = self.appended_bytes = 0
        self.acked_messages = self.acked_bytes = 0
        self._empty = replace(EMPTY, max_bytes=config.buffer.max_bytes)
        self.backlog: Backlog = self._empty
        self._meter = BacklogMeter(max_bytes=config.buffer.max_bytes, max_messages=config.buffer.max_messages)
        self._status_due = False
        self._status_sent_with_backlog = False
        # When the broker became unreachable (monotonic); None while connected.
        self._outage: float | None = None
        # Commands: the writable tags of each machine that has some, its live source while connected, the commands
        # received and not yet executed, the answers of recent ids, and the refused subscriptions (logged once).
        self._writable = {device.machine: writable_tags(device) for device in config.devices if writable_tags(device)}
        self._sources: dict[str, Source] = {}
        # (machine, payload, the monotonic time its message expiry runs out, when it carried one)
        self._commands: asyncio.Queue[tuple[str, bytes, float | None]] = asyncio.Queue(maxsize=COMMAND_QUEUE)
        self._answers: LruCache[uuid.UUID, OutgoingMessage] = LruCache(RECENT_COMMANDS)
        self._refused_subscriptions: set[str] = set()

    async def run(self, stop: asyncio.Event, *, drain_timeout_s: float = 5.0) -> None:
        """Poll, buffer and publish until `stop` is set; then buffer what was read, try for a few seconds to
        publish what is waiting (whatever is left stays on disk for the next start), and return."""
        publishing_done = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                devices = [
                    group.create_task(self._supervise(device, stop), name=f"poll:{device.protocol}:{device.machine}")
                    for device in self.config.devices
                ]
                if self._writable:  # stopped with the devices: its writes need their connections
                    devices.append(group.create_task(self._command_loop(), name="gateway:commands"))
                writer = group.create_task(self._write_loop(), name="gateway:write")
                group.create_task(self._backlog_loop(publishing_done), name="gateway:backlog")
                publisher = group.create_task(self._publish_loop(publishing_done), name="gateway:publish")
                await stop.wait()
                await cancel_and_wait(devices)
                # Not cancelled: a write in progress finishes with its bookkeeping, then what is left is written.
                self._intake_closed.set()
                self._write_wanted.set()
                await writer
                if self.connected.is_set():
                    await self._wait_empty(drain_timeout_s)
                publishing_done.set()
                # A publish still waiting for its PUBACK would hold the stop for up to its ack timeout: whatever it
                # carries is still on disk (deleted only once acknowledged), so it is cut short.
                _, late = await asyncio.wait({publisher}, timeout=drain_timeout_s)
                await cancel_and_wait(late)
        finally:
            await self._write_pending()
            await self.buffer.close()

    async def _wait_empty(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.connected.is_set():
            messages, _ = await self.buffer.depth()
            if messages == 0:
                return
            await asyncio.sleep(0.05)
        log.warning("stopped_with_buffered_messages", messages=(await self.buffer.depth())[0])

    # ---- devices -----------------------------------------------------------------------------------------------

    async def _supervise(self, device: ModbusDevice | OpcUaDevice, stop: asyncio.Event) -> None:
        """Poll one device for as long as the gateway runs, reconnecting after device and network errors only: any
        other exception is a bug, and it fails the gateway rather than looping."""
        machine = device.machine
        deadbands = {tag.name: tag.deadband for tag in device.tags}
        ranges = {tag.name: tag.range for tag in device.tags if tag.range is not None}
        changes = ChangeFilter(self.config.full_refresh_s, deadbands)
        warned_ranges: set[str] = set()

        async def poll(healthy: Callable[[], None]) -> None:
            async with self.source_factory(device) as source, self._live(machine, source):
                async for values in source.values():
                    if self._online[machine] is not True:
                        await self._set_online(machine, True)
                        healthy()
                    self.metrics.values_read.labels(machine).inc(len(values))
                    # Before report by exception: leaving the range is a change of quality, reported at once.
                    values, outside = check_ranges(values, ranges)
                    if outside:
                        self.metrics.values_out_of_range.labels(machine).inc(len(outside))
                        for item in outside:
                            if item.tag not in warned_ranges:  # once per tag: a broken sensor must not flood the log
                                warned_ranges.add(item.tag)
                                log.warning(
                                    "value_out_of_range",
                                    machine=machine,
                                    tag=item.tag,
                                    value=item.value,
                                    range=list(ranges[item.tag]),
                                )
                    accepted = changes.accept(values, time.monotonic())
                    self.metrics.values_reported.labels(machine).inc(len(accepted))
                    await self._add(machine, accepted)
                    # Counted once written: a poll counted here survives a SIGKILL of the gateway.
                    self.metrics.polls.labels(machine).inc()

        async def failed(_: BaseException) -> None:
            self.metrics.poll_errors.labels(machine).inc()
            if self._online[machine] is not False:
                await self._set_online(machine, False)

        await keep_connected(
            poll,
            transient=TRANSIENT_DEVICE_ERRORS,
            backoff=Backoff(base_s=0.5, cap_s=30.0),
            stop=stop,
            event="device_error",
            on_error=failed,
            machine=machine,
        )

    @contextlib.asynccontextmanager
    async def _live(self, machine: str, source: Source) -> AsyncIterator[None]:
        """While open, the machine's source is where its commands are written."""
        self._sources[machine] = source
        try:
            yield
        finally:
            del self._sources[machine]

    async def _set_online(self, machine: str, online: bool) -> None:
        self._online[machine] = online
        self.metrics.device_online.labels(machine).set(1 if online else 0)
        log.info("device_status", machine=machine, online=online)
        # Values read before the change were written before it (each poll is), so they stay in order before it.
        await self._write([OutgoingMessage(status_topic(self.config.site, machine), encode_status(online), 1, True)])

    async def _add(self, machine: str, values: list[TagValue]) -> None:
        """One completed poll: its messages are on disk when this returns (the device's next poll waits for it)."""
        if not values:
            return
        if self.observer is not None:
            self.observer(machine, values)
        topic = telemetry_topic(self.config.site, machine)
        messages = []
        for chunk in group_samples(values, self.config.publish.max_samples_per_message):
            self._seq[machine] += 1
            readings = sum(len(sample["values"]) for sample in chunk)
            messages.append(OutgoingMessage(topic, encode_telemetry(chunk, seq=self._seq[machine]), 1, False, readings))
        await self._write(messages)

    async def _write(self, messages: list[OutgoingMessage]) -> None:
        """Hand messages to the writer and wait until they are committed to the buffer file."""
        for message in messages:  # checked here, so one oversized poll cannot fail the other devices' writes
            size = message_size(message.topic, message.payload)
            if size > self.config.buffer.max_bytes:
                raise MessageTooLarge(f"a {size}-byte message cannot fit a buffer of {self.config.buffer.max_bytes}")
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
        written = self._written
        self._to_write.extend(messages)
        self._write_wanted.set()
        await asyncio.shield(written)  # a cancelled poll leaves its messages to be written all the same

    async def _write_loop(self) -> None:
        """Write what the polls handed over, one transaction per round; polls arriving meanwhile share the next."""
        wait_s = self.config.publish.flush_interval_s
        while True:
            await self._write_wanted.wait()
            if wait_s > 0:  # let other devices' polls join this transaction (cut short at shutdown)
                await wait_or_stop(self._intake_closed, wait_s)
            await self._write_pending()
            if self._intake_closed.is_set() and not self._to_write:
                return

    async def _write_pending(self) -> None:
        self._write_wanted.clear()
        messages, self._to_write = self._to_write, []
        written, self._written = self._written, None
        if not messages:
            if written is not None and not written.done():
                written.set_result(None)
            return
        try:
            results = await self.buffer.append_many(messages, now=time.time())
        except BaseException as error:
            if written is not None and not written.done():
                if isinstance(error, Exception):
                    written.set_exception(error)
                    written.exception()  # the polls waiting on it raise it; nobody may be waiting any more
                else:
                    written.cancel()
            raise
        if written is not None and not written.done():
            written.set_result(None)
        self.metrics.buffered.inc(len(messages))
        self.appended_messages += len(messages)
        self.appended_bytes += sum(message_size(message.topic, message.payload) for message in messages)
        dropped = sum(result.dropped for result in results)
        if dropped:
            log.warning("buffer_dropped_oldest", dropped=dropped)
        self._new_data.set()

    # ---- broker ------------------------------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        broker = self.config.broker
        topic = gateway_status_topic(self.config.site, self.config.gateway_id)
        session: dict[str, Any] = {}
        if self._writable:
            # Persistent, so that the broker keeps the command subscriptions and queues the commands published
            # while the gateway is away. The publish path is unchanged by it: every message is offered again from
            # the disk buffer after a reconnect, never from the session.
            if broker.protocol == "5":
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
                properties.SessionExpiryInterval = SESSION_EXPIRY_S
                session = {"clean_start": False, "properties": properties}
            else:
                session = {"clean_session": False}
        return mqtt_client(
            broker.endpoint(),
            # The broker binds a login to its client id (mosquitto/make-logins.sh), so with a login the id is the login.
            identifier=broker.client_id or broker.username or f"gateway-{self.config.site}-{self.config.gateway_id}",
            will=aiomqtt.Will(topic, encode_status(False, will=True), qos=1, retain=True),
            max_inflight_messages=PUBLISH_WINDOW,
            max_queued_incoming_messages=COMMAND_QUEUE,
            timeout=10,
            **session,
        )

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        broker = self.config.broker

        async def session(healthy: Callable[[], None]) -> None:
            if self._outage is not None:
                await self._wait_reachable(stop)
            client = self._client()
            try:
                async with client:
                    tracker = PubackTracker(client)
                    # Messages up to here are the backlog (replayed paced); newer ones are live (sent first).
                    stats = await self._refresh_backlog()
                    await self._publish_status(tracker)
                    await self._subscribe_commands(client)
                    self.connected.set()
                    healthy()
                    self.ready.ready(broker=f"{broker.host}:{broker.port}")
                    self._report_connected()
                    if self._writable:
                        await self._drain_and_receive(client, tracker, stop, live_after=stats.last_id)
                    else:
                        await self._drain_buffer(tracker, stop, live_after=stats.last_id)
            finally:
                settle(client)

        def lost(error: BaseException) -> None:
            self.connected.clear()
            self.ready.not_ready()
            if self._outage is None:
                self._outage = time.monotonic()
                # Once per outage; the retries are quiet until broker_reconnected.
                log.warning("broker_unreachable", host=broker.host, port=broker.port, error=repr(error)[:300])

        await keep_connected(
            session,
            transient=(aiomqtt.MqttError,),
            backoff=Backoff(base_s=0.5, cap_s=15.0),
            stop=stop,
            event="broker_unreachable",
            on_error=lost,
            quiet=True,
        )

    def _report_connected(self) -> None:
        broker = self.config.broker
        if self._outage is None:
            log.info("broker_connected", host=broker.host, port=broker.port)
            return
        since, self._outage = self._outage, None
        # What waits in the buffer now (the backlog just refreshed): what the outage piled up, and what had not been
        # acknowledged when it began.
        log.info(
            "broker_reconnected",
            host=broker.host,
            port=broker.port,
            outage_s=round(time.monotonic() - since, 1),
            buffered_messages=self.backlog.messages,
            buffered_readings=self.backlog.readings,
        )

    async def _wait_reachable(self, stop: asyncio.Event) -> None:
        """Until the broker accepts a TCP connection (probed every BROKER_PROBE_S); MqttError if stopped first."""
        broker = self.config.broker
        while not stop.is_set():
            try:
                async with asyncio.timeout(BROKER_PROBE_S):
                    _, writer = await asyncio.open_connection(broker.host, broker.port)
            except (OSError, TimeoutError):
                await wait_or_stop(stop, BROKER_PROBE_S)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise aiomqtt.MqttError("stopped while the broker was unreachable")

    async def _publish_status(self, tracker: PubackTracker) -> None:
        """The retained gateway status, online, with the backlog figures."""
        self._status_due = False
        self._status_sent_with_backlog = self.backlog.waiting
        topic = gateway_status_topic(self.config.site, self.config.gateway_id)
        await tracker.publish(topic, encode_status(True, backlog=self.backlog.as_status()), retain=True)

    async def _backlog_loop(self, stop: asyncio.Event) -> None:
        """Refresh the backlog figures every BACKLOG_REFRESH_S, connected or not."""
        last_status = time.monotonic()
        while not stop.is_set():
            await wait_or_stop(stop, BACKLOG_REFRESH_S)
            await self._refresh_backlog()
            now = time.monotonic()
            if self._status_due:
                last_status = now
            elif self.backlog.waiting and now - last_status >= STATUS_REFRESH_S:
                self._status_due, last_status = True, now
            elif self._status_sent_with_backlog and not self.backlog.waiting:
                self._status_due, last_status = True, now  # once more, to say it has emptied

    async def _refresh_backlog(self) -> BufferStats:
        """Read the buffer's figures into `backlog` and the gauges; the figures read."""
        stats = await self.buffer.stats()
        self.backlog = self._meter.update(
            stats,
            now=time.monotonic(),
            wall_now=time.time(),
            appended_bytes=self.appended_bytes,
            acked_bytes=self.acked_bytes,
            appended_messages=self.appended_messages,
            acked_messages=self.acked_messages,
        )
        self._show_backlog(self.backlog)
        # The buffer keeps its drop counters on disk, so they survive restarts; the metric mirrors them.
        for reason, count in (await self.buffer.dropped_total()).items():
            self.metrics.dropped.labels(reason).set(count)
        return stats

    def _show_backlog(self, backlog: Backlog) -> None:
        self.metrics.queue_messages.set(backlog.messages)
        self.metrics.queue_readings.set(backlog.readings)
        self.metrics.queue_bytes.set(backlog.bytes)
        self.metrics.queue_oldest_age.set(backlog.oldest_age_s)
        self.metrics.queue_max_bytes.set(self.config.buffer.max_bytes)
        self.metrics.queue_seconds_to_full.set(backlog.seconds_to_full)

    async def _drain_buffer(self, tracker: PubackTracker, stop: asyncio.Event, *, live_after: int) -> None:
        """Publish rounds until `stop`: each takes the newest live messages (ids above `live_after`) and a slice of
        the oldest backlog within `replay_rate_per_s`, and deletes what the broker acknowledged."""
        pace = _TokenBucket(self.config.buffer.replay_rate_per_s, burst_s=REPLAY_BURST_S)
        backlog_left = True
        acked: list[int] = []  # deleted by the next round's read (one call to the buffer's thread per round)
        try:
            while not stop.is_set():
                backlog_left, acked = await self._drain_round(tracker, stop, pace, live_after, backlog_left, acked)
        finally:
            if acked:
                await self.buffer.delete(acked)

    async def _drain_round(
        self,
        tracker: PubackTracker,
        stop: asyncio.Event,
        pace: _TokenBucket,
        live_after: int,
        backlog_left: bool,
        acked: list[int],
    ) -> tuple[bool, list[int]]:
        """One round of `_drain_buffer`: whether backlog may be left, and the ids acknowledged, to delete."""
        if self._status_due:
            await self._publish_status(tracker)
        budget = min(pace.available(), PUBLISH_WINDOW) if backlog_left else 0
        self._new_data.clear()  # before the read: a write committed after it wakes the wait below
        live, backlog = await self.buffer.peek_round(
            live_after=live_after, live_limit=PUBLISH_WINDOW, backlog_limit=budget, delete=acked
        )
        if budget > 0 and len(backlog) < budget:
            backlog_left = False  # nothing older than the connect is left: everything is live from now on
        if not live and not backlog:
            if not backlog_left and self.backlog.messages:
                self.backlog = self._empty
                self._show_backlog(self._empty)  # shown at once, without waiting for the next refresh
            wait_s = 0.5 if not backlog_left else min(0.5, pace.wait_s())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._new_data.wait()
            return backlog_left, []
        pace.take(len(backlog))
        batch = live + backlog
        done, pause_s = await self._publish_round(tracker, batch)
        if done:
            self.metrics.published.inc(len(done))
            self.acked_messages += len(done)
            self.acked_bytes += sum(message_size(message.topic, message.payload) for message in done)
        if len(done) < len(batch):
            await self.buffer.delete([message.id for message in done])
            await wait_or_stop(stop, pause_s)
            return True, []
        return backlog_left, [message.id for message in done]

    async def _publish_round(
        self, tracker: PubackTracker, batch: list[BufferedMessage]
    ) -> tuple[list[BufferedMessage], float]:
        """Publish a round and wait for every PUBACK: the messages to delete, and how long to pause if some stay."""
        if len(batch) == 1:  # the usual live round: no task per publish
            (only,) = batch
            codes = [await tracker.publish(only.topic, only.payload, qos=only.qos, retain=only.retain)]
        else:
            codes = await asyncio.gather(
                *(tracker.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in batch)
            )
        done: list[BufferedMessage] = []
        pause_s = 1.0
        for message, code in zip(batch, codes, strict=True):
            if code == NO_MATCHING_SUBSCRIBERS and not message.retain:
                break  # nobody took it (an ingestor not subscribed yet): keep it and the rest, retry soon
            if code == NOT_AUTHORIZED:
                # Every message of this gateway has the same site, so all would be refused and lost: keep them
                # until the broker's logins are fixed (mosquitto/make-logins.sh), and say so.
                self.metrics.refused.inc()
                log.error(
                    "message_not_authorized",
                    topic=message.topic,
                    username=self.config.broker.username,
                    site=self.config.site,
                    fix="the broker login must belong to this site (login@site in MQTT_GATEWAY_LOGINS); "
                    "the messages stay in the buffer",
                )
                pause_s = NOT_AUTHORIZED_RETRY_S
                break
            if code >= 128:
                self.metrics.refused.inc()
                log.error("message_refused", topic=message.topic, reason_code=code)
            elif code != SUCCESS and code != NO_MATCHING_SUBSCRIBERS:
                log.info("puback_reason", topic=message.topic, reason_code=code)
            done.append(message)
        return done, pause_s

    # ---- commands ----------------------------------------------------------------------------------------------

    async def _subscribe_commands(self, client: aiomqtt.Client) -> None:
        """Subscribe to the command topic of every machine with writable tags. A refusal (the broker's rules for
        this login) is logged once and leaves telemetry alone: only that machine's commands go unheard."""
        for machine in self._writable:
            topic = command_topic(self.config.site, machine)
            try:
                await subscribe_or_raise(client, topic, qos=1)
            except SubscriptionRefused as refusal:
                if topic not in self._refused_subscriptions:
                    self._refused_subscriptions.add(topic)
                    log.error(
                        "command_subscription_refused",
                        machine=machine,
                        topic=topic,
                        reason_code=refusal.code,
                        username=self.config.broker.username,
                        fix="the broker login must be allowed to subscribe to its site's command topics; "
                        "telemetry goes on, commands for this machine are not received",
                    )

    async def _drain_and_receive(
        self, client: aiomqtt.Client, tracker: PubackTracker, stop: asyncio.Event, *, live_after: int
    ) -> None:
        """`_drain_buffer` and `_receive_commands` side by side, until `stop` or until either fails (the session
        then ends, and is made again)."""
        drain = asyncio.create_task(self._drain_buffer(tracker, stop, live_after=live_after), name="gateway:drain")
        receive = asyncio.create_task(self._receive_commands(client), name="gateway:commands:receive")
        try:
            done, _ = await asyncio.wait({drain, receive}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([drain, receive])
        for task in done:
            task.result()

    async def _receive_commands(self, client: aiomqtt.Client) -> None:
        """Hand every command that arrives to the command worker, in arrival order; MqttError when the link drops."""
        async for message in client.messages:
            topic = str(message.topic)
            machine = self._command_machine(topic)
            if machine is None:
                # A subscription an earlier configuration left in the persistent session: no longer ours to answer.
                log.warning("command_topic_not_served", topic=topic[:200])
                await client.unsubscribe(topic)
                continue
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                # The deadline is taken as it arrives: a command must not wait anywhere without its expiry running.
                self._commands.put_nowait((machine, payload, _expiry_deadline(message.properties)))
            except asyncio.QueueFull:
                await self._refuse_busy(machine, payload)
        raise aiomqtt.MqttError("the message stream ended")

    def _command_machine(self, topic: str) -> str | None:
        """The machine a command topic names, if this gateway serves its commands."""
        try:
            site, machine = parse_command_topic(topic, result=False)
        except ContractError:
            return None
        return machine if site == self.config.site and machine in self._writable else None

    async def _refuse_busy(self, machine: str, payload: bytes) -> None:
        """Answer a command that found COMMAND_QUEUE commands waiting before it: refused, never executed later."""
        command_id = command_id_of(payload)
        self.metrics.commands.labels(machine, "invalid" if command_id is None else "refused").inc()
        log.warning("command_refused_busy", machine=machine, id=str(command_id) if command_id else None)
        if command_id is not None and self._answers.get(command_id) is None:
            reason = f"the gateway already has {COMMAND_QUEUE} commands waiting; send it again later"
            await self._answer(
                command_id, command_result_topic(self.config.site, machine), CommandOutcome("refused", reason)
            )

    async def _command_loop(self) -> None:
        """Execute the received commands one at a time, in arrival order."""
        while True:
            machine, payload, deadline = await self._commands.get()
            await self.handle_command(machine, payload, deadline=deadline)

    async def handle_command(self, machine: str, payload: bytes, *, deadline: float | None = None) -> None:
        """Decode, execute (once per id) and answer one command. Nothing a command carries can fail the gateway:
        a command that breaks the contract is counted, logged and, when its id can be read, answered `refused`.

        `deadline`: the `time.monotonic()` at which the message's MQTT 5 expiry runs out, when it carried one; it
        decides whether the command has expired, whatever this gateway's wall clock says."""
        topic = command_result_topic(self.config.site, machine)
        try:
            command = decode_command(payload)
        except ContractError as error:
            command_id = command_id_of(payload)
            self.metrics.commands.labels(machine, "invalid" if command_id is None else "refused").inc()
            shown = str(command_id) if command_id is not None else None
            log.warning("command_invalid", machine=machine, id=shown, error=str(error))
            if command_id is not None and self._answers.get(command_id) is None:
                await self._answer(command_id, topic, CommandOutcome("refused", str(error)))
            return
        earlier = self._answers.get(command.id)
        if earlier is not None:
            self.metrics.commands.labels(machine, "duplicate").inc()
            log.info("command_duplicate", id=str(command.id), machine=machine, issued_by=command.issued_by)
            await self._write([earlier])
            return
        source = self._sources.get(machine)
        if source is not None and not isinstance(source, WritableSource):
            outcome = CommandOutcome("failed", "the source of this machine cannot write")
        else:
            now = utcnow()
            lifetime_left_s = None if deadline is None else deadline - time.monotonic()
            if lifetime_left_s is not None:
                lifetime_left_s = self._lifetime_left(
                    command.id, (command.expires_at - now).total_seconds(), lifetime_left_s
                )
            try:
                outcome = await execute_command(
                    command,
                    machine=machine,
                    limits=self._writable[machine],
                    source=source,
                    now=now,
                    lifetime_left_s=lifetime_left_s,
                )
            except Exception:  # a bug met by one command must not end the gateway (and its telemetry)
                log.exception("command_crashed", id=str(command.id), machine=machine)
                outcome = CommandOutcome("failed", "internal error of the gateway (see its log)")
        self.metrics.commands.labels(machine, outcome.status).inc()
        # The audit trail: one line per command, whatever its outcome.
        report = log.warning if outcome.status in ("refused", "failed") else log.info
        report(
            "command_executed",
            id=str(command.id),
            machine=machine,
            issued_by=command.issued_by,
            writes={write.tag: write.value for write in command.writes},
            outcome=outcome.status,
            reason=outcome.reason,
        )
        await self._answer(command.id, topic, outcome)

    def _lifetime_left(self, command_id: uuid.UUID, left_by_clock_s: float, left_by_expiry_s: float) -> float:
        """What is left of the command's lifetime: the shorter of the two counts while this gateway's clock agrees
        with the API's (within COMMAND_CLOCK_SKEW_WARN_S), else the broker's count, with a warning."""
        skew_s = left_by_expiry_s - left_by_clock_s
        if abs(skew_s) <= COMMAND_CLOCK_SKEW_WARN_S:
            return min(left_by_clock_s, left_by_expiry_s)
        log.warning(
            "command_clock_skew",
            id=str(command_id),
            skew_s=round(skew_s, 1),
            fix="this gateway's clock is off from the API's by about skew_s seconds (positive: ahead): "
            "synchronise it (NTP); commands are timed by their MQTT 5 message expiry meanwhile, so they still "
            "expire when they should, but the timestamps this gateway sends are off too",
        )
        return left_by_expiry_s

    async def _answer(self, command_id: uuid.UUID, topic: str, outcome: CommandOutcome) -> None:
        """Buffer the result (QoS 1, not retained) and remember it for a redelivery of the same id."""
        payload = encode_result(
            command_id,
            outcome.status,
            ts=utcnow(),
            reason=outcome.reason,
            gateway=self.config.gateway_id,
            writes=outcome.writes,
        )
        message = OutgoingMessage(topic, payload, 1, False)
        self._answers.put(command_id, message)
        await self._write([message])


class _TokenBucket:
    """At most `rate` messages per second on average, in bursts of at most `burst_s` seconds' worth (at least 1)."""

    def __init__(self, rate: float, *, burst_s: float):
        self.rate = rate
        self.capacity = max(rate * burst_s, 1.0)
        self.tokens = self.capacity  # the first burst goes at once
        self.at = time.monotonic()

    def _fill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def available(self) -> int:
        """Whole messages that may go now."""
        self._fill()
        return int(self.tokens)

    def take(self, count: int) -> None:
        """Spend `count` messages."""
        self._fill()
        self.tokens -= count

    def wait_s(self) -> float:
        """Seconds until one more message may go."""
        self._fill()
        return max((1 - self.tokens) / self.rate, 0.001)


async def main(config: GatewayConfig, *, ready_file: Path | None = None, config_file: Path | None = None) -> int:
    """`shopfloor gateway`: run until SIGTERM or SIGINT."""
    # asyncua logs every publish response at INFO (about 0.4 MB a line at 1,000 tags: gigabytes an hour).
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))
    with stop_on_signals() as stop:
        async with readiness(ready_file) as ready:
            gateway = Gateway(config, ready=ready, config_file=config_file)
            if config.metrics_port:
                start_http_server(config.metrics_port, addr=config.metrics_host, registry=gateway.metrics.registry)
            log.info("gateway_starting", site=config.site, gateway=config.gateway_id, devices=len(config.devices))
            await gateway.run(stop)
    log.info("gateway_stopped")
    return 0


def _expiry_deadline(properties: Properties | None) -> float | None:
    """The monotonic time a message's MQTT 5 expiry runs out (the broker sends what is left of it), or None."""
    left = getattr(properties, "MessageExpiryInterval", None)
    return time.monotonic() + left if isinstance(left, int) else None
