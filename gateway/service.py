"""The gateway process: one supervised task per device, report by exception, disk buffer, one MQTT publisher.

Every outgoing message is written to the disk buffer first and deleted only after the broker's PUBACK, so a broker
outage, a gateway restart or a SIGKILL loses nothing that was buffered. A device that fails is retried with capped
exponential backoff and jitter without touching the others; its online/offline status is published (retained).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiomqtt
from prometheus_client import start_http_server

from core.contract import encode_status, encode_telemetry, gateway_status_topic, status_topic, telemetry_topic
from core.lifecycle import Readiness, cancel_and_wait, readiness, stop_on_signals
from core.logging import get_logger
from core.mqtt import mqtt_client
from core.retry import Backoff, keep_connected, wait_or_stop
from gateway.buffer import AsyncDiskBuffer
from gateway.config import GatewayConfig, ModbusDevice, OpcUaDevice
from gateway.pki import ClientApplication
from gateway.plausibility import check_ranges
from gateway.prometheus import GatewayMetrics
from gateway.puback import NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED, SUCCESS, PubackTracker
from gateway.report import ChangeFilter, group_samples
from gateway.sources.base import TRANSIENT_DEVICE_ERRORS, Source, TagValue

log = get_logger("shopfloor.gateway")

PUBLISH_WINDOW = 100
# After the broker refused the login's messages (135), wait this long before offering them again.
NOT_AUTHORIZED_RETRY_S = 10.0


def make_source(device: ModbusDevice | OpcUaDevice, *, application: ClientApplication | None = None) -> Source:
    """The protocol's source for a device (imported lazily: each pulls in its own library)."""
    if isinstance(device, ModbusDevice):
        from gateway.sources.modbus import ModbusSource

        return ModbusSource(device)
    from gateway.sources.opcua import OpcUaSource

    return OpcUaSource(device, application=application)


@dataclass
class _Pending:
    values: list[TagValue] = field(default_factory=list)
    seq: int = 0


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
        self._pending: dict[str, _Pending] = {device.machine: _Pending() for device in config.devices}
        self._new_data = asyncio.Event()
        self._online: dict[str, bool | None] = dict.fromkeys(self._pending)

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
                group.create_task(self._flush_loop(stop), name="gateway:flush")
                publisher = group.create_task(self._publish_loop(publishing_done), name="gateway:publish")
                await stop.wait()
                await cancel_and_wait(devices)
                await self._flush_all()
                if self.connected.is_set():
                    await self._wait_empty(drain_timeout_s)
                publishing_done.set()
                # A publish still waiting for its PUBACK would hold the stop for up to its ack timeout: whatever it
                # carries is still on disk (deleted only once acknowledged), so it is cut short.
                _, late = await asyncio.wait({publisher}, timeout=drain_timeout_s)
                await cancel_and_wait(late)
        finally:
            await self._flush_all()
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
            async with self.source_factory(device) as source:
                async for values in source.values():
                    if self._online[machine] is not True:
                        await self._set_online(machine, True)
                        healthy()
                    self.metrics.polls.labels(machine).inc()
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

    async def _set_online(self, machine: str, online: bool) -> None:
        self._online[machine] = online
        self.metrics.device_online.labels(machine).set(1 if online else 0)
        log.info("device_status", machine=machine, online=online)
        await self._flush(machine)  # values read before the change stay in order before the status
        await self._buffer(status_topic(self.config.site, machine), encode_status(online), retain=True)

    async def _add(self, machine: str, values: list[TagValue]) -> None:
        if self.observer is not None and values:
            self.observer(machine, values)
        pending = self._pending[machine]
        pending.values.extend(values)
        if len({value.ts for value in pending.values}) >= self.config.publish.max_samples_per_message:
            await self._flush(machine)

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_or_stop(stop, self.config.publish.flush_interval_s)
            await self._flush_all()

    async def _flush_all(self) -> None:
        for machine in self._pending:
            await self._flush(machine)

    async def _flush(self, machine: str) -> None:
        pending = self._pending[machine]
        values, pending.values = pending.values, []
        for chunk in group_samples(values, self.config.publish.max_samples_per_message):
            pending.seq += 1
            await self._buffer(telemetry_topic(self.config.site, machine), encode_telemetry(chunk, seq=pending.seq))

    async def _buffer(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        result = await self.buffer.append(topic, payload, qos=1, retain=retain, now=time.time())
        self.metrics.buffered.inc()
        if result.dropped:
            log.warning("buffer_dropped_oldest", dropped=result.dropped)
        self._new_data.set()

    # ---- broker ------------------------------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        broker = self.config.broker
        topic = gateway_status_topic(self.config.site, self.config.gateway_id)
        return mqtt_client(
            broker.endpoint(),
            # The broker binds a login to its client id (mosquitto/make-logins.sh), so with a login the id is the login.
            identifier=broker.client_id or broker.username or f"gateway-{self.config.site}-{self.config.gateway_id}",
            will=aiomqtt.Will(topic, encode_status(False, will=True), qos=1, retain=True),
            max_inflight_messages=PUBLISH_WINDOW,
            timeout=10,
        )

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        broker = self.config.broker

        async def session(healthy: Callable[[], None]) -> None:
            async with self._client() as client:
                tracker = PubackTracker(client)
                topic = gateway_status_topic(self.config.site, self.config.gateway_id)
                await tracker.publish(topic, encode_status(True), retain=True)
                self.connected.set()
                healthy()
                self.ready.ready(broker=f"{broker.host}:{broker.port}")
                log.info("broker_connected", host=broker.host, port=broker.port)
                await self._drain_buffer(tracker, stop)

        def lost(_: BaseException) -> None:
            self.connected.clear()
            self.ready.not_ready()

        await keep_connected(
            session,
            transient=(aiomqtt.MqttError,),
            backoff=Backoff(base_s=0.5, cap_s=15.0),
            stop=stop,
            event="broker_unreachable",
            on_error=lost,
        )

    async def _drain_buffer(self, tracker: PubackTracker, stop: asyncio.Event) -> None:
        """Publish the buffer oldest first, paced, deleting each window only once every message in it is acked."""
        pace = _Pacer(self.config.buffer.replay_rate_per_s)
        while not stop.is_set():
            await self._update_depth()
            batch = await self.buffer.peek(PUBLISH_WINDOW)
            if not batch:
                self._new_data.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._new_data.wait()
                continue
            await pace.wait(len(batch))
            codes = await asyncio.gather(
                *(tracker.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in batch)
            )
            done: list[int] = []
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
                done.append(message.id)
            if done:
                await self.buffer.delete(done)
                self.metrics.published.inc(len(done))
            if len(done) < len(batch):
                await wait_or_stop(stop, pause_s)

    async def _update_depth(self) -> None:
        messages, size = await self.buffer.depth()
        self.metrics.queue_messages.set(messages)
        self.metrics.queue_bytes.set(size)
        # The buffer keeps its drop counters on disk, so they survive restarts; the metric mirrors them.
        for reason, count in (await self.buffer.dropped_total()).items():
            self.metrics.dropped.labels(reason).set(count)


class _Pacer:
    """At most `rate` messages per second, averaged (replays after an outage must not flood the broker)."""

    def __init__(self, rate: float):
        self.rate = rate
        self.next_at = time.monotonic()

    async def wait(self, count: int) -> None:
        now = time.monotonic()
        if self.next_at > now:
            await asyncio.sleep(self.next_at - now)
        self.next_at = max(self.next_at, now) + count / self.rate


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
