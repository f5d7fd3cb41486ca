"""Prometheus metrics of the ingestor (one registry per service, so tests can run several)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class IngestMetrics:
    """What `/metrics` shows about ingestion."""

    registry: CollectorRegistry
    received: Counter
    readings_written: Counter
    duplicates: Counter
    dead_letters: Counter
    seq_gaps: Counter
    db_errors: Counter
    batch_readings: Histogram
    batch_seconds: Histogram
    lag_seconds: Histogram
    uncommitted: Gauge

    @classmethod
    def create(cls) -> IngestMetrics:
        """Fresh metrics in a registry of their own."""
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            received=Counter(
                "shopfloor_ingest_messages_received", "MQTT messages received", ["kind"], registry=registry
            ),
            readings_written=Counter(
                "shopfloor_ingest_readings_written", "Readings inserted into the database", registry=registry
            ),
            duplicates=Counter(
                "shopfloor_ingest_readings_duplicate",
                "Readings skipped because they were stored already",
                registry=registry,
            ),
            dead_letters=Counter(
                "shopfloor_ingest_dead_letters", "Messages kept in dead_letter instead of stored", registry=registry
            ),
            seq_gaps=Counter(
                "shopfloor_ingest_seq_gaps", "Messages missing according to publishers' seq", registry=registry
            ),
            db_errors=Counter("shopfloor_ingest_db_errors", "Failed batch writes (retried)", registry=registry),
            batch_readings=Histogram(
                "shopfloor_ingest_batch_readings",
                "Readings per committed batch",
                buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
                registry=registry,
            ),
            batch_seconds=Histogram(
                "shopfloor_ingest_batch_seconds",
                "Time to write and commit one batch",
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                registry=registry,
            ),
            lag_seconds=Histogram(
                "shopfloor_ingest_lag_seconds",
                "From a message's arrival to the commit of its batch",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=registry,
            ),
            uncommitted=Gauge(
                "shopfloor_ingest_uncommitted_messages",
                "Messages received and not yet committed (queued or in the batch being written)",
                registry=registry,
            ),
        )
