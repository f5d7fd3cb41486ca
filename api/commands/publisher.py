"""Publishing a command on the broker, as the API's own login: one short connection per command (commands are
rare; a held connection would be one more thing to keep alive in every API worker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

from core.mqtt import MqttEndpoint, mqtt_client


class PublishFailed(Exception):
    """The broker did not take the command (unreachable, refused the login or the topic, no PUBACK in time)."""


class CommandPublisher(Protocol):
    """Where the API sends commands."""

    async def publish(self, topic: str, payload: bytes, *, command_id: uuid.UUID, expiry_s: int) -> None: ...


class MqttCommandPublisher:
    """Publishes with QoS 1 and returns once the broker has acknowledged (PUBACK), or raises PublishFailed.

    On MQTT 5 the message carries its expiry (the broker drops it when no gateway took it in time) and the
    command id as correlation data.
    """

    def __init__(self, endpoint: MqttEndpoint, *, timeout_s: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    async def publish(self, topic: str, payload: bytes, *, command_id: uuid.UUID, expiry_s: int) -> None:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = None
        if self.endpoint.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry_s
            properties.CorrelationData = command_id.bytes
            properties.ContentType = "application/json"
        # A client id of its own per connection: several API workers publish at once, none keeps a session.
        client = mqtt_client(self.endpoint, identifier=f"shopfloor-api-{uuid.uuid4().hex[:16]}", timeout=self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s * 2), client:
                await client.publish(topic, payload, qos=1, properties=properties)
        except (aiomqtt.MqttError, OSError, TimeoutError) as error:
            raise PublishFailed(f"the broker did not take the command: {error}") from None
