"""From an MQTT message to what the write path stores: pure, no I/O, never raises on input."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.commands import decode_result, parse_command_topic
from core.contract import (
    ContractError,
    Telemetry,
    TimeWindow,
    TopicKind,
    decode_status,
    decode_telemetry,
    parse_topic,
)
from core.ingest import CommandResult, GatewayStatus, RejectedMessage, StatusUpdate

Decoded = Telemetry | StatusUpdate | GatewayStatus | CommandResult | RejectedMessage | None
COMMAND_RESULT_SUFFIX = "/command/result"


def decode_message(topic: str, payload: bytes, *, received_at: datetime, window: TimeWindow) -> Decoded:
    """Telemetry, a machine status, a gateway status, a command's result, or a rejection with its reason."""
    try:
        if topic.endswith(COMMAND_RESULT_SUFFIX):
            site, machine = parse_command_topic(topic, result=True)
            return CommandResult(site, machine, decode_result(payload), topic, payload)
        info = parse_topic(topic)
        if info.kind is TopicKind.TELEMETRY:
            return decode_telemetry(topic, payload, received_at=received_at, window=window)
        if not payload:
            return None  # clearing a retained status: nothing to record
        info, status = decode_status(topic, payload)
        if info.kind is TopicKind.GATEWAY_STATUS:
            # Ordered by when it arrived, not by the gateway's clock (its will carries no time at all).
            return GatewayStatus(info.site, info.machine, status.online, received_at, status.backlog)
        return StatusUpdate(info.site, info.machine, status.online, status.ts or received_at)
    except ContractError as error:
        return RejectedMessage("mqtt", topic, payload, str(error))


OVERFLOW_TOPIC = "*"


@dataclass
class TopicRateLimit:
    """At most `per_minute` events per topic in each clock minute (a fixed window; forgotten when it rolls)."""

    per_minute: int
    # Beyond this many topics in one window, new topics share one count: the limiter itself stays bounded.
    max_topics: int = 10_000
    _window: int = -1
    _counts: dict[str, int] = field(default_factory=dict)

    def allow(self, topic: str, *, now: float) -> tuple[bool, bool]:
        """Whether this event is within the limit, and whether it is the first one over it in this window."""
        window = int(now // 60)
        if window != self._window:
            self._window, self._counts = window, {}
        if topic not in self._counts and len(self._counts) >= self.max_topics:
            topic = OVERFLOW_TOPIC
        count = self._counts.get(topic, 0) + 1
        self._counts[topic] = count
        return count <= self.per_minute, count == self.per_minute + 1
