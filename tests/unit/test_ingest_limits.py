"""The ingestor's bounds as pure code: plain-text dead letters, the LRU caches, the per-topic dead-letter limit,
and auto-registration off by default in production."""

from __future__ import annotations

import hashlib

import pytest

from core.ingest import RejectedMessage, dead_letter_row, plain_text
from core.lru import LruCache
from core.settings import Environment, IngestorProcessSettings, IngestorSettings, MqttSettings, RuntimeSettings
from ingestor.decode import OVERFLOW_TOPIC, TopicRateLimit


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("schema: samples.0.values.\x00.float: bad", "schema: samples.0.values.\\u0000.float: bad"),
        ("line\nbreak\ttab\r", "line\\u000abreak\\u0009tab\\u000d"),
        ("esc \x1b[2J del \x7f c1 \x85", "esc \\u001b[2J del \\u007f c1 \\u0085"),
        ("lone surrogate \ud800", "lone surrogate \\ud800"),
        ("Montaj İstasyonu ≥ 5 °C 😀", "Montaj İstasyonu ≥ 5 °C 😀"),
    ],
)  # fmt: skip
def test_plain_text_escapes_what_a_database_refuses_and_keeps_the_rest(raw: str, stored: str) -> None:
    assert plain_text(raw, 1000) == stored
    stored.encode("utf-8")  # no surrogate left: PostgreSQL and SQLite both take it


def test_plain_text_is_cut_after_escaping() -> None:
    assert plain_text("\x00" * 100, 13) == "\\u0000\\u0000\\"


def test_dead_letter_row_keeps_size_and_hash_of_the_whole_payload() -> None:
    payload = bytes(range(256)) * 40
    row = dead_letter_row(RejectedMessage("mqtt", "t\x00", payload, "r\x00"), max_payload_bytes=4096)
    assert row == {
        "source": "mqtt",
        "topic": "t\\u0000",
        "payload": payload[:4096],
        "payload_size": 10240,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "reason": "r\\u0000",
    }
    assert dead_letter_row(RejectedMessage("mqtt", "t", payload, "r"), max_payload_bytes=0)["payload"] == b""


def test_lru_forgets_the_least_recently_used_and_counts_hits_and_misses() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert (cache.get("b"), cache.get("a"), cache.get("c")) == (None, 1, 3)
    assert (len(cache), cache.hits, cache.misses) == (2, 3, 1)
    with pytest.raises(ValueError, match="maxsize"):
        LruCache(0)


def test_dead_letter_limit_is_per_topic_and_per_minute() -> None:
    limit = TopicRateLimit(per_minute=3)
    decisions = [limit.allow("a", now=60.0 + i) for i in range(5)]
    assert decisions == [(True, False), (True, False), (True, False), (False, True), (False, False)]
    assert limit.allow("b", now=70.0) == (True, False)
    assert limit.allow("a", now=120.0) == (True, False)  # a new minute


def test_dead_letter_limit_shares_one_count_beyond_its_topic_bound() -> None:
    limit = TopicRateLimit(per_minute=2, max_topics=10)
    allowed = [limit.allow(f"t{number}", now=0.0)[0] for number in range(20)]
    # Ten topics get their own count; the other ten share one, so only two of them pass.
    assert allowed == [True] * 12 + [False] * 8
    assert OVERFLOW_TOPIC in limit._counts
    assert len(limit._counts) == 11


def _ingestor(env: Environment, **ingest: object) -> IngestorProcessSettings:
    mqtt = MqttSettings.model_validate(
        {"mqtt_username": "ingestor", "mqtt_password": "a-long-random-broker-password-5f2c9e1d7a"}
    )
    return IngestorProcessSettings(
        runtime=RuntimeSettings(shopfloor_env=env), mqtt=mqtt, ingest=IngestorSettings.model_validate(ingest)
    )


def test_auto_registration_is_off_by_default_in_production_only() -> None:
    assert _ingestor(Environment.PRODUCTION).auto_register_machines is False
    assert _ingestor(Environment.PRODUCTION, ingest_auto_register_machines=True).auto_register_machines is True
    assert _ingestor(Environment.DEVELOPMENT).auto_register_machines is True
    assert _ingestor(Environment.TEST).auto_register_machines is True
    assert _ingestor(Environment.TEST, ingest_auto_register_machines=False).auto_register_machines is False
    names = (
        "ingest_auto_register_max_per_site_per_hour",
        "dead_letter_max_payload_bytes",
        "dead_letter_retention_days",
        "dead_letter_max_per_topic_per_min",
    )
    assert [IngestorSettings.model_fields[name].default for name in names] == [50, 4096, 30, 60]
