"""The API's command publisher (api.commands.publisher): a command whose `expires_at` has passed when its publish
would go out is not sent at all, so it cannot reach a machine after the API has called it expired."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.commands.publisher import MqttCommandPublisher, PublishFailed
from core.mqtt import MqttEndpoint

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("left", [timedelta(0), timedelta(seconds=-5)])
async def test_a_command_past_its_expiry_is_not_published(left: timedelta) -> None:
    # A port nobody listens on: reaching it would be an attempt to publish.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    publisher = MqttCommandPublisher(MqttEndpoint(host="127.0.0.1", port=port), timeout_s=0.5)
    with pytest.raises(PublishFailed, match="expired before the broker took it") as refused:
        await publisher.publish(
            "shopfloor/v1/plant1/press-1/command",
            b"{}",
            command_id=uuid.uuid4(),
            expires_at=NOW + left,
            clock=lambda: NOW,
        )
    assert refused.value.maybe_sent is False
