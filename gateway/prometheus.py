"""Prometheus metrics of the gateway (one registry per gateway, so tests can run several)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class GatewayMetrics:
    """What `/metrics` shows about polling, buffering and publishing."""

    registry: CollectorRegistry
    polls: Counter
    poll_errors: Counter
    device_online: Gauge
    values_read: Counter
    values_reported: Counter
    values_out_of_range: Counter
    buffered: Counter
    published: Counter
    dropped: Gauge
    refused: Counter
    queue_messages: Gauge
    queue_bytes: Gauge
    queue_readings: Gauge
    queue_oldest_age: Gauge
    queue_max_bytes: Gauge
    queue_seconds_to_full: Gauge
    commands: Counter

    @classmethod
    def create(cls) -> GatewayMetrics:
        """Fresh metrics in a registry of their own."""
        registry = CollectorRegistry()

        def counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, text, list(labels), registry=registry)

        return cls(
            registry=registry,
            polls=counter(
                "shopfloor_gateway_polls",
                "Reads (polls or notifications) per device, counted once written to the disk buffer",
                ("machine",),
            ),
            poll_errors=counter(
                "shopfloor_gateway_poll_errors", "Failed connections or reads per device", ("machine",)
            ),
            device_online=Gauge(
                "shopfloor_gateway_device_online", "1 when the device answers", ["machine"], registry=registry
            ),
            values_read=counter("shopfloor_gateway_values_read", "Tag values read", ("machine",)),
            values_reported=counter(
                "shopfloor_gateway_values_reported", "Tag values passed by report-by-exception", ("machine",)
            ),
            values_out_of_range=counter(
                "shopfloor_gateway_values_out_of_range",
                "Numbers read outside their tag's configured range (published with quality bad)",
                ("machine",),
            ),
            buffered=counter("shopfloor_gateway_messages_buffered", "Messages written to the disk buffer"),
            published=counter("shopfloor_gateway_messages_published", "Messages acknowledged by the broker"),
            dropped=Gauge(
                "shopfloor_gateway_messages_dropped",
                "Messages dropped by the buffer bounds since the buffer was made (overflow, expired)",
                ["reason"],
                registry=registry,
            ),
            refused=counter("shopfloor_gateway_messages_refused", "Messages the broker refused (PUBACK >= 128)"),
            queue_messages=Gauge(
                "shopfloor_gateway_queue_messages", "Messages waiting in the buffer", registry=registry
            ),
            queue_bytes=Gauge(
                "shopfloor_gateway_queue_bytes", "Topic and payload bytes waiting in the buffer", registry=registry
            ),
            queue_readings=Gauge(
                "shopfloor_gateway_queue_readings",
                "Tag values in the messages waiting in the buffer",
                registry=registry,
            ),
            queue_oldest_age=Gauge(
                "shopfloor_gateway_queue_oldest_age_seconds",
                "How long the oldest message in the buffer has waited (0 when empty)",
                registry=registry,
            ),
            queue_max_bytes=Gauge(
                "shopfloor_gateway_queue_max_bytes",
                "The buffer's byte bound (buffer.max_bytes): beyond it the oldest messages are dropped",
                registry=registry,
            ),
            queue_seconds_to_full=Gauge(
                "shopfloor_gateway_queue_seconds_to_full",
                "Seconds until the buffer reaches a bound and drops, at its current growth (+Inf: not growing)",
                registry=registry,
            ),
            commands=counter(
                "shopfloor_gateway_commands",
                "Commands received per machine by outcome: done, refused, failed, expired; duplicate (a redelivered "
                "id, answered again, not executed); invalid (unreadable, no id to answer)",
                ("machine", "outcome"),
            ),
        )
