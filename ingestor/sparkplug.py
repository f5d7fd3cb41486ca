"""The Sparkplug B host application: births, aliases, sequence numbers and deaths, turned into what the write path
stores. Pure (no I/O, no clock but the times handed in); the service publishes what it asks for (Rebirth requests).

Rules (docs/machine_integration.md, "Sparkplug B"):
- An NBIRTH starts an edge node's session: its metric definitions (name, alias, type), its `bdSeq` and its `seq`;
  the node's devices are forgotten until their DBIRTH. A DBIRTH does the same for one device.
- Every later message of the node (NDATA, DBIRTH, DDATA, DDEATH) must carry the next `seq` (0-255, wrapping). A
  message one to REDELIVERY_WINDOW behind the last one is a redelivery (the broker resends what the ingestor had not
  acknowledged when its connection dropped): decoded again, stored idempotently, the count not moved back.
- Anything the host cannot decode for sure (a sequence gap, an unknown alias, data before any birth, a payload that
  does not parse) is kept as a dead letter, the node is put on "awaiting rebirth" (its data dead-lettered too until
  the NBIRTH), and a Rebirth request is asked for, at most once per `rebirth_interval_s` per node.
- An NDEATH whose `bdSeq` is not the one of the node's current birth is stale (an old session's will) and ignored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from core.contract import (
    STATE_TAG,
    ContractError,
    MachineState,
    StateReport,
    TagReading,
    Telemetry,
    TimeWindow,
)
from core.ingest import IngestBatch, RejectedMessage, StatusUpdate
from core.logging import get_logger
from core.lru import LruCache
from core.sparkplug import (
    BDSEQ_METRIC,
    CONTROL_PREFIXES,
    SEQ_MODULO,
    MessageType,
    SparkplugMapping,
    SparkplugTopic,
    UnsupportedMetric,
    decode_payload,
    metric_quality,
    metric_value,
    next_seq,
    parse_sparkplug_topic,
    read_state,
)
from core.sparkplug_b_pb2 import Payload

log = get_logger("shopfloor.ingestor.sparkplug")

SOURCE = "sparkplug"
# How far behind the last `seq` a message counts as redelivered rather than as a gap.
REDELIVERY_WINDOW = 32
# Edge nodes followed at once (the least recently heard one is forgotten: it will be asked to rebirth).
MAX_NODES = 10_000
# (reason, node, metric) skips logged so far: each is logged once, all are counted.
MAX_LOGGED_SKIPS = 10_000

NodeKey = tuple[str, str]  # (group, edge node)


@dataclass(frozen=True)
class Definition:
    """A metric as its birth certificate declared it."""

    name: str
    datatype: int


@dataclass
class Certificate:
    """The metrics one birth (NBIRTH or DBIRTH) declared, by alias and by name."""

    by_alias: dict[int, Definition] = field(default_factory=dict)
    by_name: dict[str, Definition] = field(default_factory=dict)

    @classmethod
    def of(cls, payload: Payload) -> Certificate:
        """The definitions of a birth's metrics."""
        certificate = cls()
        for metric in payload.metrics:
            if not metric.name:
                continue
            definition = Definition(metric.name, metric.datatype)
            certificate.by_name[metric.name] = definition
            if metric.HasField("alias"):
                certificate.by_alias[metric.alias] = definition
        return certificate


@dataclass
class NodeSession:
    """What the host knows of one edge node since its last NBIRTH."""

    bd_seq: int | None
    seq: int
    node: Certificate
    devices: dict[str, Certificate] = field(default_factory=dict)
    awaiting_rebirth: str | None = None  # why, while the node is expected to publish its births again


@dataclass
class HostOutcome:
    """What one Sparkplug message gives: what to store, whether to ask for a rebirth, what was skipped."""

    batch: IngestBatch = field(default_factory=IngestBatch)
    rebirth: NodeKey | None = None
    skipped: Counter[str] = field(default_factory=Counter)
    reassert_state: bool = False  # someone published our STATE offline while we are connected: publish online again


@dataclass
class SparkplugHost:
    """The host application's memory of every edge node it hears (bounded), and the rules above."""

    host_id: str
    mapping: SparkplugMapping
    window: TimeWindow
    rebirth_interval_s: float = 10.0
    sessions: LruCache[NodeKey, NodeSession] = field(default_factory=lambda: LruCache(MAX_NODES))
    _rebirth_asked: dict[NodeKey, float] = field(default_factory=dict)
    _logged: set[tuple[str, str, str]] = field(default_factory=set)

    def handle(self, topic: str, payload: bytes, *, received_at: datetime, now: float) -> HostOutcome:
        """What to store for one message on `spBv1.0/…` (`now`: a monotonic clock, for the rebirth interval)."""
        outcome = HostOutcome()
        try:
            info = parse_sparkplug_topic(topic)
        except ContractError as error:
            outcome.batch.rejected.append(RejectedMessage(SOURCE, topic, payload, str(error)))
            return outcome
        if info.kind is MessageType.STATE:
            outcome.reassert_state = info.host_id == self.host_id and read_state(payload) is False
            return outcome
        if info.kind in (MessageType.NCMD, MessageType.DCMD):
            return outcome  # commands: ours or another host's, nothing to store
        key = (info.group, info.edge_node)
        try:
            self.mapping.site(info.group)
            self.mapping.machine(info.group, info.edge_node, info.device)
        except ContractError as error:
            outcome.batch.rejected.append(RejectedMessage(SOURCE, topic, payload, str(error)))
            return outcome
        try:
            message = decode_payload(payload)
        except ContractError as error:
            self._refuse(outcome, key, topic, payload, str(error), now=now)
            return outcome
        if info.kind is MessageType.NBIRTH:
            self._node_birth(outcome, info, topic, payload, message, received_at)
        elif info.kind is MessageType.NDEATH:
            self._node_death(outcome, info, message, received_at)
        else:
            self._in_session(outcome, info, topic, payload, message, received_at=received_at, now=now)
        return outcome

    # ---- births and deaths ----------------------------------------------------------------------------------------

    def _node_birth(
        self, outcome: HostOutcome, info: SparkplugTopic, topic: str, payload: bytes, message: Payload, at: datetime
    ) -> None:
        key = (info.group, info.edge_node)
        bd_seq = _bd_seq(message)
        certificate = Certificate.of(message)
        self.sessions.put(key, NodeSession(bd_seq, message.seq % SEQ_MODULO, certificate))
        self._rebirth_asked.pop(key, None)
        log.info("sparkplug_node_birth", group=info.group, edge_node=info.edge_node, bd_seq=bd_seq, seq=message.seq)
        self._status(outcome, info, online=True, at=at)
        self._values(outcome, info, (topic, payload), message, certificate, at)

    def _node_death(self, outcome: HostOutcome, info: SparkplugTopic, message: Payload, received_at: datetime) -> None:
        key = (info.group, info.edge_node)
        session = self.sessions.peek(key)
        bd_seq = _bd_seq(message)
        if session is not None and session.bd_seq is not None and bd_seq is not None and bd_seq != session.bd_seq:
            # The will of an older connection, delivered after the node came back: it says nothing about this one.
            outcome.skipped["stale_ndeath"] += 1
            log.info("sparkplug_stale_ndeath", group=info.group, edge_node=info.edge_node, bd_seq=bd_seq)
            return
        self.sessions.pop(key)
        self._rebirth_asked.pop(key, None)
        log.info("sparkplug_node_death", group=info.group, edge_node=info.edge_node, bd_seq=bd_seq)
        self._status(outcome, info, online=False, at=received_at)
        for device in session.devices if session is not None else ():
            self._status(outcome, SparkplugTopic(info.kind, info.group, info.edge_node, device), False, received_at)

    def _in_session(
        self,
        outcome: HostOutcome,
        info: SparkplugTopic,
        topic: str,
        payload: bytes,
        message: Payload,
        *,
        received_at: datetime,
        now: float,
    ) -> None:
        key = (info.group, info.edge_node)
        session = self.sessions.get(key)
        if session is None:
            self._refuse(outcome, key, topic, payload, "no NBIRTH known for this edge node", now=now)
            return
        if session.awaiting_rebirth is not None:
            self._refuse(outcome, key, topic, payload, f"awaiting rebirth ({session.awaiting_rebirth})", now=now)
            return
        if not message.HasField("seq"):
            self._refuse(outcome, key, topic, payload, f"{info.kind} without seq", now=now)
            return
        seq = message.seq % SEQ_MODULO
        expected = next_seq(session.seq)
        behind = (session.seq - seq) % SEQ_MODULO
        if seq == expected:
            session.seq = seq
        elif behind >= REDELIVERY_WINDOW:
            reason = f"seq gap: expected {expected}, got {seq}"
            self._refuse(outcome, key, topic, payload, reason, now=now)
            return
        if info.kind is MessageType.DBIRTH:
            assert info.device is not None  # noqa: S101 -- parse_sparkplug_topic gives devices to device types
            session.devices[info.device] = Certificate.of(message)
            self._status(outcome, info, online=True, at=received_at)
            self._values(outcome, info, (topic, payload), message, session.devices[info.device], received_at)
            return
        if info.kind is MessageType.DDEATH:
            assert info.device is not None  # noqa: S101 -- as above
            session.devices.pop(info.device, None)
            self._status(outcome, info, online=False, at=received_at)
            return
        certificate = session.node if info.device is None else session.devices.get(info.device)
        if certificate is None:
            self._refuse(outcome, key, topic, payload, f"no DBIRTH known for device {info.device!r}", now=now)
            return
        unknown = sorted(
            {metric.alias for metric in message.metrics if not metric.name and metric.alias not in certificate.by_alias}
        )
        unnamed = [metric for metric in message.metrics if not metric.name and not metric.HasField("alias")]
        if unknown or unnamed:
            what = f"unknown alias {', '.join(map(str, unknown[:10]))}" if unknown else "a metric without name or alias"
            self._refuse(outcome, key, topic, payload, what, now=now)
            return
        self._values(outcome, info, (topic, payload), message, certificate, received_at)

    # ---- values ---------------------------------------------------------------------------------------------------

    def _values(
        self,
        outcome: HostOutcome,
        info: SparkplugTopic,
        received: tuple[str, bytes],
        message: Payload,
        certificate: Certificate,
        at: datetime,
    ) -> None:
        """Readings and states of a message's metrics; metrics outside the time window make one dead letter."""
        site = self.mapping.site(info.group)
        machine = self.mapping.machine(info.group, info.edge_node, info.device)
        default_ts = _from_ms(message.timestamp) if message.HasField("timestamp") else at
        earliest, latest = at - self.window.max_past, at + self.window.max_future
        readings: list[TagReading] = []
        states: list[StateReport] = []
        outside: list[str] = []
        node = f"{info.group}/{info.edge_node}" + (f"/{info.device}" if info.device else "")
        for metric in message.metrics:
            definition = certificate.by_name.get(metric.name) if metric.name else certificate.by_alias.get(metric.alias)
            name = definition.name if definition is not None else metric.name
            if name == BDSEQ_METRIC or name.startswith(CONTROL_PREFIXES):
                continue
            datatype = definition.datatype if definition is not None and definition.datatype else metric.datatype
            tag = self.mapping.tag(name)
            if tag is None:
                self._skip(outcome, "bad_tag", node, name, "gives no valid tag name")
                continue
            try:
                value = metric_value(metric, datatype)
            except UnsupportedMetric as unsupported:
                self._skip(outcome, "unsupported_type", node, name, f"type {unsupported} is not stored")
                continue
            except ContractError as error:
                self._skip(outcome, "invalid", node, name, str(error))
                continue
            ts = _from_ms(metric.timestamp) if metric.HasField("timestamp") else default_ts
            if not earliest <= ts <= latest:
                outside.append(name)
                continue
            if tag == STATE_TAG:
                if isinstance(value, str) and value in MachineState.__members__.values():
                    states.append(StateReport(ts, MachineState(value)))
                elif value is not None:
                    self._skip(outcome, "invalid", node, name, f"state must be one of {', '.join(MachineState)}")
                continue
            if isinstance(value, str):
                self._skip(outcome, "text", node, name, "text is stored only for a metric mapped to the state tag")
                continue
            readings.append(TagReading(ts, tag, value, metric_quality(metric)))
        if readings or states:
            outcome.batch.telemetry.append(Telemetry(site, machine, None, readings, states))
        if outside:
            reason = (
                f"{len(outside)} metric(s) outside the accepted window ({earliest.isoformat()} .. "
                f"{latest.isoformat()}): {', '.join(outside[:10])[:500]}"
            )
            outcome.batch.rejected.append(RejectedMessage(SOURCE, *received, reason))

    def _status(self, outcome: HostOutcome, info: SparkplugTopic, online: bool, at: datetime) -> None:
        site = self.mapping.site(info.group)
        try:
            machine = self.mapping.machine(info.group, info.edge_node, info.device)
        except ContractError:
            return  # a device whose name gives no machine: its data is refused too, nothing to mark
        outcome.batch.statuses.append(StatusUpdate(site, machine, online, at))

    # ---- refusals -------------------------------------------------------------------------------------------------

    def _refuse(self, outcome: HostOutcome, key: NodeKey, topic: str, payload: bytes, why: str, *, now: float) -> None:
        """Keep the message as a dead letter, mark the node as awaiting its births, and ask for them (rate-limited)."""
        session = self.sessions.peek(key)
        if session is not None and session.awaiting_rebirth is None:
            session.awaiting_rebirth = why
        asked = self._rebirth_asked.get(key)
        requested = asked is None or now - asked >= self.rebirth_interval_s
        if requested:
            self._rebirth_asked[key] = now
            if len(self._rebirth_asked) > MAX_NODES:
                self._rebirth_asked.pop(next(iter(self._rebirth_asked)))
            outcome.rebirth = key
        reason = f"{why}; rebirth {'requested' if requested else 'already requested'}"
        outcome.batch.rejected.append(RejectedMessage(SOURCE, topic, payload, reason))

    def _skip(self, outcome: HostOutcome, reason: str, node: str, metric: str, detail: str) -> None:
        outcome.skipped[reason] += 1
        key = (reason, node, metric)
        if key not in self._logged and len(self._logged) < MAX_LOGGED_SKIPS:
            self._logged.add(key)
            log.warning("sparkplug_metric_skipped", reason=reason, node=node, metric=metric[:200], detail=detail)


def _bd_seq(message: Payload) -> int | None:
    for metric in message.metrics:
        if metric.name == BDSEQ_METRIC:
            return int(metric.long_value if metric.WhichOneof("value") == "long_value" else metric.int_value)
    return None


def _from_ms(milliseconds: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=milliseconds)
