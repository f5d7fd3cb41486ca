"""The MQTT contract: topics, limits, decoding; and the ingestor's decode never raising on any input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contract import (
    MAX_PAYLOAD_BYTES,
    ContractError,
    GatewayBacklog,
    MachineState,
    Quality,
    QualityLevel,
    Telemetry,
    TimeWindow,
    TopicKind,
    decode_telemetry,
    encode_telemetry,
    gateway_status_topic,
    parse_topic,
    quality_name,
    shared,
    status_topic,
    telemetry_topic,
)
from core.ingest import GatewayStatus, RejectedMessage, StatusUpdate
from ingestor.decode import decode_message

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
WINDOW = TimeWindow(max_past=timedelta(days=7), max_future=timedelta(minutes=5))
TOPIC = "shopfloor/v1/plant1/press-3/telemetry"


def decode(payload: bytes | str, topic: str = TOPIC) -> Telemetry:
    raw = payload.encode() if isinstance(payload, str) else payload
    return decode_telemetry(topic, raw, received_at=NOW, window=WINDOW)


def test_topics_are_built_and_parsed_symmetrically() -> None:
    assert telemetry_topic("plant1", "press-3") == TOPIC
    assert status_topic("plant1", "press-3") == "shopfloor/v1/plant1/press-3/status"
    assert gateway_status_topic("plant1", "gw1") == "shopfloor/v1/plant1/_gateway/gw1/status"
    assert parse_topic(TOPIC).kind is TopicKind.TELEMETRY
    info = parse_topic(gateway_status_topic("plant1", "gw1"))
    assert (info.kind, info.site, info.machine) == (TopicKind.GATEWAY_STATUS, "plant1", "gw1")
    assert shared("ingestors", "shopfloor/v1/+/+/telemetry") == "$share/ingestors/shopfloor/v1/+/+/telemetry"
    assert shared(None, "a/b") == "a/b"


@pytest.mark.parametrize(
    "topic",
    [
        "shopfloor/v2/plant1/m/telemetry",
        "shopfloor/v1/plant1/m",
        "shopfloor/v1/Plant1/m/telemetry",
        "shopfloor/v1/plant1/m/telemetry/extra",
        "shopfloor/v1/plant1/_gateway/telemetry",
        "shopfloor/v1/-x/m/telemetry",
        "",
    ],
)
def test_other_topic_shapes_are_refused(topic: str) -> None:
    with pytest.raises(ContractError):
        parse_topic(topic)


def test_builders_refuse_bad_codes() -> None:
    with pytest.raises(ContractError, match="site"):
        telemetry_topic("Plant 1", "m")
    with pytest.raises(ContractError, match="machine"):
        telemetry_topic("plant1", "a/b")


def test_a_full_message_becomes_readings_and_state_changes() -> None:
    message = decode(
        json.dumps(
            {
                "seq": 42,
                "samples": [
                    {"ts": "2026-11-26T08:00:00.125Z", "values": {"barrel_temp_c": 212.5, "cycle_count": 10234}},
                    {"ts": "2026-11-26T10:00:00.250+02:00", "values": {"door_open": True, "state": "alarm"}},
                ],
            }
        )
    )
    assert (message.site, message.machine, message.seq) == ("plant1", "press-3", 42)
    assert [(r.tag, r.value) for r in message.readings] == [
        ("barrel_temp_c", 212.5),
        ("cycle_count", 10234.0),
        ("door_open", 1.0),
    ]
    assert message.readings[2].ts == datetime(2026, 11, 26, 8, 0, 0, 250000, tzinfo=UTC)
    assert [(s.ts.second, s.state) for s in message.states] == [(0, MachineState.ALARM)]


def test_the_single_sample_shorthand_is_accepted() -> None:
    message = decode('{"ts": "2026-11-26T07:59:00Z", "values": {"t": 1}}')
    assert (message.seq, len(message.readings)) == (None, 1)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("not json", "not JSON"),
        ('{"ts": "2026-11-26T08:00:00", "values": {"a": 1}}', "timezone"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {"a": NaN}}', "not JSON"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {"a": Infinity}}', "not JSON"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {"a": 1e400}}', "not JSON"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {}}', "values"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {"A": 1}}', "tag"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {"state": "broken"}}', "state must be one of"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {"state": 1}}', "state must be one of"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {"a": "text"}}', "text is allowed only"),
        ('{"ts": "2026-11-26T08:00:00Z", "values": {"a": null}}', "values.a"),
        ('{"ts": "2026-11-19T07:59:59Z", "values": {"a": 1}}', "outside the accepted window"),
        ('{"ts": "2026-11-26T08:05:01Z", "values": {"a": 1}}', "outside the accepted window"),
        ('{"samples": []}', "samples"),
        ('{"samples": [{"ts": "2026-11-26T08:00:00Z", "values": {"a": 1}}], "extra": 1}', "extra"),
        ('{"seq": -1, "samples": [{"ts": "2026-11-26T08:00:00Z", "values": {"a": 1}}]}', "seq"),
    ],
)
def test_contract_violations_name_the_reason(payload: str, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode(payload)


def test_limits() -> None:
    sample = {"ts": "2026-11-26T08:00:00Z", "values": {"a": 1}}
    decode(encode_telemetry([sample] * 1000))
    with pytest.raises(ContractError, match="1000"):
        decode(encode_telemetry([sample] * 1001))
    decode(encode_telemetry([{"ts": sample["ts"], "values": {f"t{i}": i for i in range(200)}}]))
    with pytest.raises(ContractError, match="200"):
        decode(encode_telemetry([{"ts": sample["ts"], "values": {f"t{i}": i for i in range(201)}}]))
    with pytest.raises(ContractError, match="over the"):
        decode(b" " * (MAX_PAYLOAD_BYTES + 1))
    decode("x" * 0 + json.dumps({"ts": sample["ts"], "values": {"t" * 64: 1}}))
    with pytest.raises(ContractError, match="tag"):
        decode(json.dumps({"ts": sample["ts"], "values": {"t" * 65: 1}}))


def test_decode_message_sorts_every_topic_kind() -> None:
    received = NOW
    good = decode_message(
        TOPIC, b'{"ts": "2026-11-26T08:00:00Z", "values": {"a": 1}}', received_at=received, window=WINDOW
    )
    assert isinstance(good, Telemetry)
    status = decode_message(status_topic("plant1", "m1"), b'{"online": true}', received_at=received, window=WINDOW)
    assert status == StatusUpdate("plant1", "m1", True, received)
    gateway = decode_message(
        gateway_status_topic("plant1", "gw"), b'{"online": false}', received_at=received, window=WINDOW
    )
    assert gateway == GatewayStatus("plant1", "gw", False, received)
    backlog = (
        b'{"online": true, "ts": "2026-11-26T07:59:00Z", "backlog": {"messages": 12, "readings": 2400, '
        b'"oldest_age_s": 31.5, "bytes": 81920, "max_bytes": 1073741824, "seconds_to_full": null, "later": 1}}'
    )
    with_backlog = decode_message(gateway_status_topic("plant1", "gw"), backlog, received_at=received, window=WINDOW)
    assert isinstance(with_backlog, GatewayStatus)
    assert with_backlog.backlog == GatewayBacklog(
        messages=12, readings=2400, oldest_age_s=31.5, bytes=81920, max_bytes=1073741824
    )
    # A backlog the ingestor cannot read is left out; the gateway's online flag still counts.
    garbled = decode_message(
        gateway_status_topic("plant1", "gw"),
        b'{"online": true, "backlog": {"messages": -1}}',
        received_at=received,
        window=WINDOW,
    )
    assert garbled == GatewayStatus("plant1", "gw", True, received)
    assert decode_message(status_topic("plant1", "m1"), b"", received_at=received, window=WINDOW) is None
    rejected = decode_message("some/other/topic", b"x", received_at=received, window=WINDOW)
    assert isinstance(rejected, RejectedMessage)
    assert rejected.reason.startswith("unknown topic shape")


@settings(max_examples=300, deadline=None)
@given(topic=st.text(max_size=80), payload=st.binary(max_size=2000))
def test_decode_message_never_raises_on_arbitrary_input(topic: str, payload: bytes) -> None:
    result = decode_message(topic, payload, received_at=NOW, window=WINDOW)
    assert result is None or isinstance(result, Telemetry | StatusUpdate | GatewayStatus | RejectedMessage)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["seq", "samples", "ts", "values", "x"]), json_values, max_size=4))
def test_json_shaped_garbage_is_rejected_with_a_reason_or_decoded(body: dict[str, object]) -> None:
    result = decode_message(TOPIC, json.dumps(body).encode(), received_at=NOW, window=WINDOW)
    if isinstance(result, RejectedMessage):
        assert result.reason
        assert result.payload == json.dumps(body).encode()
    else:
        assert isinstance(result, Telemetry)
        assert all(isinstance(reading.value, float) for reading in result.readings)


# --- quality ------------------------------------------------------------------------------------------------------


def test_quality_travels_per_tag_and_a_missing_entry_is_good() -> None:
    message = decode(
        '{"samples": [{"ts": "2026-11-26T07:59:00Z", "values": {"temp": 21.5, "speed": 3, "pressure": null, '
        '"ok": true}, "quality": {"speed": "uncertain", "pressure": {"level": "bad", "code": 2156658688, '
        '"detail": "BadSensorFailure"}, "ok": "good"}}]}'
    )
    by_tag = {reading.tag: reading for reading in message.readings}
    assert by_tag["temp"].quality is None
    assert by_tag["ok"].quality is None  # good said out loud is good
    assert by_tag["speed"].quality == Quality(QualityLevel.UNCERTAIN)
    assert (by_tag["speed"].value, by_tag["pressure"].value) == (3.0, None)
    assert by_tag["pressure"].quality == Quality(QualityLevel.BAD, 2156658688, "BadSensorFailure")


def test_old_publishers_without_quality_stay_valid() -> None:
    message = decode('{"ts": "2026-11-26T07:59:00Z", "values": {"temp": 21.5}}')
    assert [(reading.value, reading.quality) for reading in message.readings] == [(21.5, None)]


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        ('"values": {"temp": null}', "null is allowed only with quality bad"),
        ('"values": {"temp": null}, "quality": {"temp": "uncertain"}', "null is allowed only with quality bad"),
        ('"values": {"temp": 1}, "quality": {"speed": "bad"}', "quality.speed: no such tag in values"),
        ('"values": {"state": "running"}, "quality": {"state": "bad"}', "a state has no quality"),
        ('"values": {"temp": 1}, "quality": {"temp": "excellent"}', "schema: samples.0.quality.temp"),
        ('"values": {"temp": 1}, "quality": {"temp": {"level": "bad", "why": 1}}', "schema: samples.0.quality.temp"),
    ],
    ids=["null-good", "null-uncertain", "unknown-tag", "state", "unknown-level", "extra-field"],
)
def test_quality_that_cannot_hold_is_refused(sample: str, reason: str) -> None:
    with pytest.raises(ContractError, match=reason.replace(".", r"\.")):
        decode('{"samples": [{"ts": "2026-11-26T07:59:00Z", ' + sample + "}]}")


def test_stored_quality_names() -> None:
    assert [quality_name(level) for level in (None, 0, 1, 2)] == ["good", "good", "uncertain", "bad"]
    assert Quality(QualityLevel.BAD).encode() == "bad"
    assert Quality(QualityLevel.BAD, 2, "IllegalDataAddress").encode() == {
        "level": "bad",
        "code": 2,
        "detail": "IllegalDataAddress",
    }
