"""Publishing a command on the broker, as the API's own login: one short connection per command (commands are
rare; a held connection would be one more thing to keep alive in every API worker)."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from core.mqtt import MqttEndpoint, mqtt_client

# The broker's answers (MQTT 5 PUBACK reason codes) that mean nobody will execute the command.
NO_MATCHING_SUBSCRIBERS = 16
ATTEMPTS = 3


class PublishFailed(Exception):
    """The broker did not take the command. `maybe_sent`: a PUBLISH went out without its PUBACK coming back, so the
    broker may hold it after all (the gateway executes a command id once, whatever the broker delivers)."""

    def __init__(self, message: str, *, maybe_sent: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class CommandPublisher(Protocol):
    """Where the API sends commands."""

    async def publish(
        self, topic: str, payload: bytes, *, command_id: uuid.UUID, expires_at: datetime, clock: Callable[[], datetime]
    ) -> None: ...


class MqttCommandPublisher:
    """Publishes with QoS 1 and returns once the broker has acknowledged it as delivered to a subscriber, or raises
    PublishFailed.

    With a login the client id is the login (the broker binds the API's login to its id, so the login cannot take
    over another client's session); publishes of one process take turns on it, and a connection another API process
    took over is retried (at most ATTEMPTS times; a repeated command id is executed once). On MQTT 5 the message
    carries the command id as correlation data and, as its message expiry, the time left until `expires_at` when that
    attempt is made, rounded up to a whole second (the broker drops it when no gateway took it in time, and the
    gateway times it by that count): however late a publish goes out, the command does not outlive its `expires_at`
    by more than that rounding, and a gateway whose clock agrees with the API's holds it to `expires_at` itself.
    """

    def __init__(self, endpoint: MqttEndpoint, *, timeout_s: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._turn = asyncio.Lock()

    async def publish(
        self, topic: str, payload: bytes, *, command_id: uuid.UUID, expires_at: datetime, clock: Callable[[], datetime]
    ) -> None:
        """`clock`: the clock `expires_at` was set by (the app's)."""
        import aiomqtt

        from core.puback import NOT_AUTHORIZED, SUCCESS, PubackTracker, settle

        maybe_sent, error_text = False, ""
        async with self._turn:
            for attempt in range(ATTEMPTS):
                left = (expires_at - clock()).total_seconds()
                if left <= 0:
                    raise PublishFailed(
                        f"the command expired before the broker took it ({error_text or 'publishing was late'})",
                        maybe_sent=maybe_sent,
                    )
                properties = self._properties(command_id, math.ceil(left))
                identifier = self.endpoint.username or f"shopfloor-api-{uuid.uuid4().hex[:16]}"
                client = mqtt_client(self.endpoint, identifier=identifier, timeout=self.timeout_s)
                try:
                    async with asyncio.timeout(self.timeout_s * 2), client:
                        tracker = PubackTracker(client)
                        maybe_sent = True
                        code = await tracker.publish(
                            topic, payload, qos=1, ack_timeout_s=self.timeout_s, properties=properties
                        )
                except (aiomqtt.MqttError, OSError, TimeoutError) as error:
                    error_text = str(error) or type(error).__name__
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                finally:
                    settle(client)
                if code == SUCCESS:
                    return
                if code == NO_MATCHING_SUBSCRIBERS:
                    raise PublishFailed(
                        "no gateway takes this machine's commands (nobody is subscribed to its command topic), so "
                        "the broker dropped it",
                        maybe_sent=False,
                    )
                if code == NOT_AUTHORIZED:
                    raise PublishFailed(
                        "the broker refused the API's login to publish commands (MQTT_USERNAME must be the API's "
                        "login, shopfloor-api)",
                        maybe_sent=False,
                    )
                raise PublishFailed(f"the broker refused the command (reason code {code})", maybe_sent=False)
        raise PublishFailed(f"the broker did not take the command: {error_text}", maybe_sent=maybe_sent)

    def _properties(self, command_id: uuid.UUID, expiry_s: int) -> object:
        if self.endpoint.protocol != "5":
            return None
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = expiry_s
        properties.CorrelationData = command_id.bytes
        properties.ContentType = "application/json"
        return properties
