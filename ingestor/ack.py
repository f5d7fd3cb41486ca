"""Manual acknowledgement of QoS 1 messages, kept in this one small module.

aiomqtt 2.5 acknowledges every message as soon as it arrives, so a crash between arrival and commit would lose it.
paho 2.x (which aiomqtt wraps) can leave the PUBACK to the application; aiomqtt exposes that only through its
private paho client. Everything that touches it is here, with a test that proves un-acked messages are redelivered
(tests/integration/test_ingestor.py).
"""

from __future__ import annotations

import aiomqtt


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """Must run before connecting: from then on nothing is acknowledged until `ack` is called."""
    client._client.manual_ack_set(True)  # private paho client: see the module docstring


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> bool:
    """Send the PUBACK for a QoS 1 message; False when the connection it arrived on is gone."""
    if message.qos == 0:
        return True
    result = client._client.ack(message.mid, message.qos)  # private paho client: see the module docstring
    return bool(result == 0)
