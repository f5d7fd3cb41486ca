"""Prometheus metrics of the ingestor (one registry per service, so tests can run several)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.lru import LruCache


@dataclass(frozen=True)
class IngestMetrics:
    """What `/metrics` shows about ingestion."""

    registry: CollectorRegistry
    received: Counter
    readings_written: Counter
    duplicates: Counter
    conflicts: Counter
    not_good: Counter
    out_of_range: Counter
    dead_letters: Counter
    dead_letters_dropped: Counter
    statuses_ignored: Counter
    command_results: Counter
    transactions: Counter
    seq_gaps: Counter
    sparkplug_rebirths: Counter
    sparkplug_skipped: Counter
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
            conflicts=Counter(
                "shopfloor_ingest_readings_conflicting",
                "Readings offered for a stored (machine, tag, time) with another value or quality: the first stays, "
                "the conflict is kept as a dead letter (source conflict)",
                registry=registry,
            ),
            not_good=Counter(
                "shopfloor_ingest_readings_not_good",
                "Readings stored with quality uncertain or bad",
                registry=registry,
            ),
            out_of_range=Counter(
                "shopfloor_ingest_readings_out_of_range",
                "Good values outside their tag's registered range (PUT /machines/{id}/tag-ranges/{tag}), stored bad",
                registry=registry,
            ),
            dead_letters=Counter(
                "shopfloor_ingest_dead_letters", "Messages kept in dead_letter instead of stored", registry=registry
            ),
            dead_letters_dropped=Counter(
                "shopfloor_ingest_dead_letters_dropped",
                "Rejected messages acknowledged without a dead letter (rate_limit: over the per-topic limit; "
                "unstorable: the database refused even the dead letter)",
                ["reason"],
                registry=registry,
            ),
            statuses_ignored=Counter(
                "shopfloor_ingest_statuses_ignored",
                "Machine statuses for unknown machines (statuses never register machines)",
                registry=registry,
            ),
            command_results=Counter(
                "shopfloor_ingest_command_results",
                "Gateway answers to commands recorded on their command's row",
                registry=registry,
            ),
            transactions=Counter(
                "shopfloor_ingest_write_transactions",
                "Write transactions (batch: a batch or its good part; single: one message, after a refused batch)",
                ["mode"],
                registry=registry,
            ),
            seq_gaps=Counter(
                "shopfloor_ingest_seq_gaps", "Messages missing according to publishers' seq", registry=registry
            ),
            sparkplug_rebirths=Counter(
                "shopfloor_ingest_sparkplug_rebirth_requests",
                "Rebirth requests (NCMD Node Control/Rebirth) after a seq gap, an unknown alias or data before birth",
                registry=registry,
            ),
            sparkplug_skipped=Counter(
                "shopfloor_ingest_sparkplug_metrics_skipped",
                "Sparkplug metrics not stored (unsupported_type, text: a string not mapped to state, bad_tag, invalid, "
                "stale_ndeath: an NDEATH of an older session)",
                ["reason"],
                registry=registry,
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

    def watch_caches(self, caches: Mapping[str, LruCache[Any, Any]]) -> None:
        """Export the hits, misses and sizes of these caches."""
        self.registry.register(_CacheCollector(caches))


class _CacheCollector(Collector):
    def __init__(self, caches: Mapping[str, LruCache[Any, Any]]):
        self.caches = caches

    def collect(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            "shopfloor_ingest_cache_lookups", "Lookups in the ingestor's bounded caches", labels=["cache", "result"]
        )
        entries = GaugeMetricFamily("shopfloor_ingest_cache_entries", "Entries in each cache", labels=["cache"])
        for name, cache in self.caches.items():
            lookups.add_metric([name, "hit"], cache.hits)
            lookups.add_metric([name, "miss"], cache.misses)
            entries.add_metric([name], len(cache))
        yield lookups
        yield entries
