"""Publishing with the broker's PUBACK reason code, kept in this one small module.

aiomqtt 2.5 waits for the PUBACK but drops its MQTT 5 reason code, and both publishers need it. Mosquitto answers a
publish nobody is subscribed to with 16 ("no matching subscribers"): for the gateway, right after a broker restart
before the ingestors have subscribed again, that message would be lost if it were deleted from the buffer; for the
API, a command no gateway takes. And 135 ("not authorized") is a publish the login's rules refuse, which aiomqtt
reports as a success. So the publish goes through aiomqtt's private paho client, and the reason code comes back from
paho's on_publish callback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

SUCCESS = 0
NO_MATCHING_SUBSCRIBERS = 16
# The login may not publish there: a configuration error (the login's site), not a bad message.
NOT_AUTHORIZED = 135


class PubackTracker:
    """Publishes on one connected aiomqtt client and returns each PUBACK's reason code."""

    def __init__(self, client: aiomqtt.Client):
        self._client = client
        self._paho: paho.Client = client._client  # private: see the module docstring
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._early: dict[int, int] = {}
        original: Any = self._paho.on_publish  # paho types it as a union of callback versions

        def on_publish(c: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
            code = int(getattr(reason_code, "value", reason_code) or 0)
            future = self._waiting.pop(mid, None)
            if future is None:
                self._early[mid] = code  # the PUBACK came back before publish() registered its future
            elif not future.done():
                future.set_result(code)
            if original is not None:
                original(c, userdata, mid, reason_code, properties)

        self._paho.on_publish = on_publish

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        ack_timeout_s: float = 30,
        properties: Any = None,
    ) -> int:
        """Publish and wait for the PUBACK; its reason code (0 for QoS 0). Raises MqttError if the link drops.
        `properties`: paho's MQTT 5 publish properties (message expiry, correlation data)."""
        info = self._paho.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if qos == 0:
            return SUCCESS
        if info.mid in self._early:
            return self._early.pop(info.mid)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[info.mid] = future
        disconnected = asyncio.ensure_future(self._client._disconnected)  # private: see the module docstring
        try:
            waiters: set[asyncio.Future[Any]] = {future, disconnected}
            done, _ = await asyncio.wait(waiters, timeout=ack_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting.pop(info.mid, None)
            if disconnected.done() and not disconnected.cancelled():
                disconnected.exception()  # seen here; aiomqtt raises it to its own caller too
        if future in done:
            return future.result()
        raise aiomqtt.MqttError("the connection dropped before the PUBACK" if done else "no PUBACK in time")


def settle(client: aiomqtt.Client) -> None:
    """Retrieve the exception of a dropped connection from the client's private futures.

    When the link drops while nothing awaits it (the publisher idle between rounds), aiomqtt sets the exception on
    its `_disconnected` future and, since our session ends on the publish error instead, nobody ever reads it:
    asyncio then logs "Future exception was never retrieved" with a traceback when the client is collected. The
    session has already handled the drop (it reconnects), so reading the exception here is all that is needed.
    """
    for future in (client._disconnected, client._connected):  # private: see the module docstring
        if future.done() and not future.cancelled():
            future.exception()
