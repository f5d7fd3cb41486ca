"""Sparkplug B without a broker: topics, payloads recorded from Eclipse Tahu's encoder, values, quality, mapping, and
the host's rules for births, aliases, seq, bdSeq and Rebirth requests."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import pytest

from core.contract import MAX_PAYLOAD_BYTES, ContractError, MachineState, QualityLevel, TimeWindow
from core.settings import ConfigurationError, SparkplugSettings
from core.sparkplug import (
    COMPRESSED_UUID,
    REBIRTH_METRIC,
    MessageType,
    SparkplugMapping,
    SparkplugTopic,
    UnsupportedMetric,
    decode_payload,
    default_tag,
    group_filter,
    metric_quality,
    metric_value,
    ncmd_topic,
    parse_sparkplug_topic,
    read_state,
    rebirth_payload,
    state_payload,
    state_topic,
)
from core.sparkplug_b_pb2 import DataType, Payload
from ingestor.sparkplug import REDELIVERY_WINDOW, HostOutcome, SparkplugHost

# Recorded with sparkplug-payload 1.0.3 (Eclipse Tahu's JavaScript encoder, tests/support/sparkplug): an NBIRTH with
# bdSeq 3, a DBIRTH with every kind of metric the host meets, a DDATA by alias, the NDEATH of bdSeq 3.
NBIRTH = bytes.fromhex(
    "0880e0e699ae33120b0a05626453657120085803121a0a144e6f646520436f6e74726f6c2f52656269727468200b700012180a0d45646765"
    "2f435055204c6f61641064200965000048411800"
)
DBIRTH = bytes.fromhex(
    "088ae0e699ae3312280a1242617272656c2f54656d706572617475726510011885e0e699ae33200a690000000000906a4012120a064f6666"
    "7365741002200150fbffffff0f12180a07436f756e7465721003200458f9ffffffffffffffff01120f0a0752756e6e696e671004200b7001"
    "12120a0573746174651005200c7a05736574757012240a085072657373757265100620094a0f0a075175616c6974791204080318406500"
    "005040120e0a0653656e736f721007200a3801121b0a055461626c65100820108a010d0801120161180322040a0208011801"
)
DDATA = bytes.fromhex("0894e0e699ae3312141001188fe0e699ae33200a690000000000a86a4012061002200150641802")
NDEATH = bytes.fromhex("089ee0e699ae33120b0a05626453657120085803")
T0 = datetime(2025, 12, 3, 8, 0, tzinfo=UTC)  # 1764748800000 ms, the recorded payloads' time
NOW = T0 + timedelta(minutes=1)
WINDOW = TimeWindow(max_past=timedelta(days=7), max_future=timedelta(minutes=5))
NODE = "spBv1.0/plant1/{kind}/edge-1"
DEVICE = "spBv1.0/plant1/{kind}/edge-1/Press-1"


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def host(**mapping: dict[str, str]) -> SparkplugHost:
    return SparkplugHost(host_id="shopfloor", mapping=SparkplugMapping(**mapping), window=WINDOW)


def handle(spb: SparkplugHost, topic: str, payload: bytes, *, now: float = 0.0) -> HostOutcome:
    return spb.handle(topic, payload, received_at=NOW, now=now)


def data(seq: int, *metrics: dict[str, object], timestamp: datetime = T0) -> bytes:
    payload = Payload(timestamp=ms(timestamp), seq=seq)
    for metric in metrics:
        payload.metrics.add(**metric)
    return payload.SerializeToString()


def born(spb: SparkplugHost) -> None:
    assert not handle(spb, NODE.format(kind="NBIRTH"), NBIRTH).batch.rejected
    assert not handle(spb, DEVICE.format(kind="DBIRTH"), DBIRTH).batch.rejected


# ---- topics and payloads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("spBv1.0/g/NBIRTH/e", SparkplugTopic(MessageType.NBIRTH, "g", "e")),
        ("spBv1.0/g/DDATA/e/d", SparkplugTopic(MessageType.DDATA, "g", "e", "d")),
        ("spBv1.0/g/NCMD/e", SparkplugTopic(MessageType.NCMD, "g", "e")),
        ("spBv1.0/STATE/host-1", SparkplugTopic(MessageType.STATE, "", "", host_id="host-1")),
    ],
)
def test_topics_parse(topic: str, expected: SparkplugTopic) -> None:
    assert parse_sparkplug_topic(topic) == expected


@pytest.mark.parametrize(
    "topic",
    ["spBv1.0/g/NDATA/e/d", "spBv1.0/g/DDATA/e", "spBv1.0/g/HELLO/e", "spBv1.0/g/STATE/e", "spAv1.0/g/NDATA/e",
     "spBv1.0//NDATA/e", "spBv1.0/g/NDATA/e/d/x"],
)  # fmt: skip
def test_other_topic_shapes_are_refused(topic: str) -> None:
    with pytest.raises(ContractError):
        parse_sparkplug_topic(topic)


def test_topic_builders() -> None:
    assert group_filter() == "spBv1.0/#"
    assert group_filter("plant1") == "spBv1.0/plant1/#"
    assert ncmd_topic("plant1", "edge-1") == "spBv1.0/plant1/NCMD/edge-1"
    assert state_topic("shopfloor") == "spBv1.0/STATE/shopfloor"


def test_state_payload_and_rebirth_request() -> None:
    assert state_payload(online=True, timestamp_ms=5) == b'{"online":true,"timestamp":5}'
    assert read_state(state_payload(online=False, timestamp_ms=5)) is False
    assert read_state(b"not json") is None
    request = decode_payload(rebirth_payload(timestamp_ms=7))
    assert [(m.name, m.datatype, m.boolean_value) for m in request.metrics] == [
        (REBIRTH_METRIC, DataType.Boolean, True)
    ]


def test_recorded_tahu_payloads_decode() -> None:
    birth = decode_payload(DBIRTH)
    assert birth.timestamp == ms(T0) + 10
    assert birth.seq == 1
    values = {}
    for metric in birth.metrics:
        try:
            values[metric.name] = metric_value(metric, metric.datatype)
        except UnsupportedMetric as unsupported:
            values[metric.name] = f"unsupported {unsupported}"
    assert values == {
        "Barrel/Temperature": 212.5,
        "Offset": -5.0,  # Int8 as Tahu sends it: 32-bit two's complement
        "Counter": -7.0,  # Int64: 64-bit two's complement
        "Running": 1.0,
        "state": "setup",
        "Pressure": 3.25,
        "Sensor": None,
        "Table": "unsupported DataSet",
    }
    qualities = {metric.name: metric_quality(metric) for metric in birth.metrics}
    assert qualities["Pressure"] is not None
    assert qualities["Pressure"].level is QualityLevel.UNCERTAIN
    assert qualities["Pressure"].code == 64
    assert qualities["Sensor"] is not None
    assert qualities["Sensor"].level is QualityLevel.BAD
    assert qualities["Barrel/Temperature"] is None


@pytest.mark.parametrize("algorithm", ["DEFLATE", "GZIP", None])
def test_compressed_payloads_are_unpacked(algorithm: str | None) -> None:
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS | (16 if algorithm == "GZIP" else 0))
    packed = Payload(uuid=COMPRESSED_UUID, body=packer.compress(DDATA) + packer.flush())
    if algorithm is not None:
        packed.metrics.add(name="algorithm", datatype=DataType.String, string_value=algorithm)
    assert decode_payload(packed.SerializeToString()) == decode_payload(DDATA)


def test_a_compressed_payload_that_unpacks_too_big_or_wrong_is_refused() -> None:
    bomb = Payload(uuid=COMPRESSED_UUID, body=zlib.compress(b"\x00" * (MAX_PAYLOAD_BYTES + 10)))
    with pytest.raises(ContractError, match="over the"):
        decode_payload(bomb.SerializeToString())
    with pytest.raises(ContractError, match="does not unpack"):
        decode_payload(Payload(uuid=COMPRESSED_UUID, body=b"not zlib").SerializeToString())
    odd = Payload(uuid=COMPRESSED_UUID, body=b"")
    odd.metrics.add(name="algorithm", datatype=DataType.String, string_value="LZ4")
    with pytest.raises(ContractError, match="only DEFLATE and GZIP"):
        decode_payload(odd.SerializeToString())


def test_garbage_is_not_a_payload() -> None:
    with pytest.raises(ContractError, match="not a Sparkplug B payload"):
        decode_payload(b"\xff\xff\xff")


@pytest.mark.parametrize(
    ("datatype", "fields", "expected"),
    [
        (DataType.Int8, {"int_value": 0xFB}, -5.0),  # some clients use the type's own width
        (DataType.Int16, {"int_value": 2**32 - 300}, -300.0),
        (DataType.UInt32, {"long_value": 2**32 - 1}, float(2**32 - 1)),
        (DataType.UInt64, {"long_value": 2**64 - 1}, float(2**64 - 1)),
        (DataType.Float, {"float_value": 0.5}, 0.5),
        (DataType.Boolean, {"boolean_value": False}, 0.0),
        (DataType.Text, {"string_value": "idle"}, "idle"),
    ],
)
def test_metric_values(datatype: int, fields: dict[str, object], expected: float | str) -> None:
    metric = Payload.Metric(datatype=datatype, **fields)  # type: ignore[arg-type]  # keyword fields
    assert metric_value(metric, datatype) == expected


def test_a_value_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(ContractError):
        metric_value(Payload.Metric(datatype=DataType.Double, string_value="x"), DataType.Double)
    with pytest.raises(ContractError):
        metric_value(Payload.Metric(datatype=DataType.Double, double_value=float("nan")), DataType.Double)


@pytest.mark.parametrize(
    ("code", "level"),
    [(192, None), (216, None), (64, QualityLevel.UNCERTAIN), (0, QualityLevel.BAD), (128, QualityLevel.BAD)],
)
def test_quality_property_follows_the_opc_bits(code: int, level: QualityLevel | None) -> None:
    metric = Payload.Metric(datatype=DataType.Double, double_value=1.0)
    metric.properties.keys.append("Quality")
    metric.properties.values.add(type=DataType.Int32, int_value=code)
    quality = metric_quality(metric)
    assert (quality.level if quality else None) is level


# ---- mapping ---------------------------------------------------------------------------------------------------


def test_default_mapping() -> None:
    mapping = SparkplugMapping()
    assert mapping.site("Plant1") == "plant1"
    assert mapping.machine("Plant1", "Edge-1", None) == "edge-1"
    assert mapping.machine("Plant1", "Edge-1", "Press-7") == "press-7"
    assert default_tag("Barrel/Zone 1 Temp") == "barrel.zone_1_temp"
    assert mapping.tag("Barrel/Zone 1 Temp") == "barrel.zone_1_temp"
    assert mapping.tag("Ölçüm") is None
    with pytest.raises(ContractError, match="not a code"):
        mapping.site("Plant A")


def test_configured_mapping() -> None:
    mapping = SparkplugMapping(
        sites={"Plant A": "plant-a"}, machines={"Plant A/Edge 1/Press 7": "press-7"}, tags={"Temp": "barrel_temp_c"}
    )
    assert mapping.site("Plant A") == "plant-a"
    assert mapping.machine("Plant A", "Edge 1", "Press 7") == "press-7"
    assert mapping.tag("Temp") == "barrel_temp_c"


def test_settings_are_checked_at_start() -> None:
    assert SparkplugSettings(sparkplug_enabled=True, sparkplug_sites={"Plant A": "plant-a"}).mapping().sites == {
        "Plant A": "plant-a"
    }
    with pytest.raises(ConfigurationError, match="SPARKPLUG_ENABLED is false"):
        SparkplugSettings(sparkplug_tags={"Temp": "temp"})
    with pytest.raises(ConfigurationError, match="SPARKPLUG_SITES"):
        SparkplugSettings(sparkplug_enabled=True, sparkplug_sites={"g": "Not A Code"})
    with pytest.raises(ConfigurationError, match="SPARKPLUG_MACHINES"):
        SparkplugSettings(sparkplug_enabled=True, sparkplug_machines={"only-group": "m1"})
    with pytest.raises(ConfigurationError, match="not in SPARKPLUG_GROUPS"):
        SparkplugSettings(sparkplug_enabled=True, sparkplug_groups=["g1"], sparkplug_machines={"g2/e": "m1"})
    with pytest.raises(ConfigurationError, match="SPARKPLUG_TAGS"):
        SparkplugSettings(sparkplug_enabled=True, sparkplug_tags={"Temp": "Temp C"})
    with pytest.raises(ConfigurationError, match="SPARKPLUG_GROUPS"):
        SparkplugSettings(sparkplug_enabled=True, sparkplug_groups=["plant/1"])


# ---- the host --------------------------------------------------------------------------------------------------


def test_births_then_data_by_alias() -> None:
    spb = host()
    node = handle(spb, NODE.format(kind="NBIRTH"), NBIRTH)
    assert [(s.site, s.machine, s.online) for s in node.batch.statuses] == [("plant1", "edge-1", True)]
    assert [(r.tag, r.value) for t in node.batch.telemetry for r in t.readings] == [("edge.cpu_load", 12.5)]
    device = handle(spb, DEVICE.format(kind="DBIRTH"), DBIRTH)
    assert [(s.machine, s.online) for s in device.batch.statuses] == [("press-1", True)]
    (telemetry,) = device.batch.telemetry
    assert (telemetry.site, telemetry.machine) == ("plant1", "press-1")
    readings = {r.tag: r for r in telemetry.readings}
    assert {tag: r.value for tag, r in readings.items()} == {
        "barrel.temperature": 212.5, "offset": -5.0, "counter": -7.0, "running": 1.0, "pressure": 3.25, "sensor": None,
    }  # fmt: skip
    assert readings["barrel.temperature"].ts == T0 + timedelta(milliseconds=5)  # the metric's own time
    assert readings["offset"].ts == T0 + timedelta(milliseconds=10)  # else the payload's
    assert [(s.state, s.ts) for s in telemetry.states] == [(MachineState.SETUP, T0 + timedelta(milliseconds=10))]
    assert device.skipped == {"unsupported_type": 1}
    assert not device.batch.rejected
    assert device.rebirth is None
    update = handle(spb, DEVICE.format(kind="DDATA"), DDATA)
    (telemetry,) = update.batch.telemetry
    assert [(r.tag, r.value, r.ts) for r in telemetry.readings] == [
        ("barrel.temperature", 213.25, T0 + timedelta(milliseconds=15)),
        ("offset", 100.0, T0 + timedelta(milliseconds=20)),
    ]


def test_a_sequence_gap_asks_for_a_rebirth_and_keeps_the_data_until_it_comes() -> None:
    spb = host()
    born(spb)
    gap = handle(spb, DEVICE.format(kind="DDATA"), data(3, {"alias": 1, "double_value": 1.0}))
    assert gap.rebirth == ("plant1", "edge-1")
    assert not gap.batch.telemetry
    assert [r.reason for r in gap.batch.rejected] == ["seq gap: expected 2, got 3; rebirth requested"]
    # Until the births come, the node's data is kept as dead letters; the request is repeated only after the interval.
    later = handle(spb, DEVICE.format(kind="DDATA"), data(4, {"alias": 1, "double_value": 2.0}), now=1.0)
    assert later.rebirth is None
    assert "awaiting rebirth" in later.batch.rejected[0].reason
    again = handle(spb, DEVICE.format(kind="DDATA"), data(5, {"alias": 1, "double_value": 3.0}), now=11.0)
    assert again.rebirth == ("plant1", "edge-1")
    born(spb)
    after = handle(spb, DEVICE.format(kind="DDATA"), data(2, {"alias": 1, "double_value": 4.0}))
    assert [r.value for t in after.batch.telemetry for r in t.readings] == [4.0]


def test_seq_wraps_after_255_and_a_redelivery_is_not_a_gap() -> None:
    spb = host()
    born(spb)
    for seq in [*range(2, 256), 0, 1]:
        outcome = handle(spb, DEVICE.format(kind="DDATA"), data(seq, {"alias": 1, "double_value": float(seq)}))
        assert not outcome.batch.rejected, seq
    redelivered = handle(spb, DEVICE.format(kind="DDATA"), data(250, {"alias": 1, "double_value": 250.0}))
    assert not redelivered.batch.rejected
    assert redelivered.rebirth is None
    assert handle(spb, DEVICE.format(kind="DDATA"), data(2, {"alias": 1, "double_value": 2.0})).batch.telemetry
    behind = (2 - REDELIVERY_WINDOW) % 256
    assert handle(spb, DEVICE.format(kind="DDATA"), data(behind, {"alias": 1})).rebirth is not None


def test_an_unknown_alias_asks_for_a_rebirth_instead_of_guessing() -> None:
    spb = host()
    born(spb)
    outcome = handle(spb, DEVICE.format(kind="DDATA"), data(2, {"alias": 1, "double_value": 1.0}, {"alias": 99}))
    assert outcome.rebirth == ("plant1", "edge-1")
    assert not outcome.batch.telemetry
    assert outcome.batch.rejected[0].reason.startswith("unknown alias 99")


@pytest.mark.parametrize(
    ("topic", "why"),
    [(NODE.format(kind="NDATA"), "no NBIRTH known"), (DEVICE.format(kind="DDATA"), "no NBIRTH known")],
)
def test_data_before_any_birth_asks_for_one(topic: str, why: str) -> None:
    outcome = handle(host(), topic, data(1, {"alias": 1, "double_value": 1.0}))
    assert outcome.rebirth == ("plant1", "edge-1")
    assert why in outcome.batch.rejected[0].reason


def test_data_of_a_device_without_dbirth_asks_for_a_rebirth() -> None:
    spb = host()
    handle(spb, NODE.format(kind="NBIRTH"), NBIRTH)
    outcome = handle(spb, "spBv1.0/plant1/DDATA/edge-1/Other", data(1, {"alias": 1, "double_value": 1.0}))
    assert outcome.rebirth is not None
    assert "no DBIRTH known for device 'Other'" in outcome.batch.rejected[0].reason


def test_a_stale_ndeath_is_ignored_and_the_matching_one_takes_node_and_devices_offline() -> None:
    spb = host()
    born(spb)
    stale = Payload(timestamp=ms(T0))
    stale.metrics.add(name="bdSeq", datatype=DataType.UInt64, long_value=2)
    ignored = handle(spb, NODE.format(kind="NDEATH"), stale.SerializeToString())
    assert not ignored.batch
    assert ignored.skipped == {"stale_ndeath": 1}
    death = handle(spb, NODE.format(kind="NDEATH"), NDEATH)
    assert sorted((s.machine, s.online) for s in death.batch.statuses) == [("edge-1", False), ("press-1", False)]
    assert handle(spb, DEVICE.format(kind="DDATA"), data(2, {"alias": 1})).rebirth is not None


def test_ddeath_takes_the_device_offline() -> None:
    spb = host()
    born(spb)
    outcome = handle(spb, DEVICE.format(kind="DDEATH"), data(2))
    assert [(s.machine, s.online) for s in outcome.batch.statuses] == [("press-1", False)]
    assert "no DBIRTH" in handle(spb, DEVICE.format(kind="DDATA"), data(3, {"alias": 1})).batch.rejected[0].reason


def test_historical_metrics_are_stored_within_the_window_and_older_ones_kept_as_dead_letters() -> None:
    spb = host()
    born(spb)
    old, older = T0 - timedelta(days=6), T0 - timedelta(days=8)
    outcome = handle(
        spb,
        DEVICE.format(kind="DDATA"),
        data(2, {"alias": 1, "double_value": 1.0, "is_historical": True, "timestamp": ms(old)},
             {"alias": 2, "int_value": 3, "is_historical": True, "timestamp": ms(older)}),
    )  # fmt: skip
    assert [(r.tag, r.ts) for t in outcome.batch.telemetry for r in t.readings] == [("barrel.temperature", old)]
    assert outcome.batch.rejected[0].reason.startswith("1 metric(s) outside the accepted window")
    assert outcome.rebirth is None


def test_text_is_stored_only_for_the_state_tag_and_mapping_applies() -> None:
    spb = host(tags={"Mode": "state"}, machines={"plant1/edge-1/Press-1": "press-9"})
    born(spb)
    birth = Payload(timestamp=ms(T0), seq=2)
    birth.metrics.add(name="Mode", alias=20, datatype=DataType.String, string_value="alarm")
    birth.metrics.add(name="Note", alias=21, datatype=DataType.String, string_value="hello")
    birth.metrics.add(name="state", alias=22, datatype=DataType.String, string_value="exploded")
    outcome = handle(spb, DEVICE.format(kind="DBIRTH"), birth.SerializeToString())
    (telemetry,) = outcome.batch.telemetry
    assert telemetry.machine == "press-9"
    assert [s.state for s in telemetry.states] == [MachineState.ALARM]
    assert outcome.skipped == {"text": 1, "invalid": 1}


def test_own_state_reported_offline_is_reasserted_and_other_messages_store_nothing() -> None:
    spb = host()
    assert handle(spb, "spBv1.0/STATE/shopfloor", state_payload(online=False, timestamp_ms=1)).reassert_state
    assert not handle(spb, "spBv1.0/STATE/other", state_payload(online=False, timestamp_ms=1)).reassert_state
    assert not handle(spb, "spBv1.0/plant1/NCMD/edge-1", rebirth_payload(timestamp_ms=1)).batch


def test_names_that_give_no_machine_and_bad_payloads_are_dead_lettered() -> None:
    spb = host()
    unmapped = handle(spb, "spBv1.0/Plant A/NBIRTH/edge-1", NBIRTH)
    assert "not a code" in unmapped.batch.rejected[0].reason
    assert unmapped.rebirth is None
    garbage = handle(spb, NODE.format(kind="NDATA"), b"\xff\xff")
    assert "not a Sparkplug B payload" in garbage.batch.rejected[0].reason
    assert handle(spb, "spBv1.0/plant1/NDATA", b"").batch.rejected
