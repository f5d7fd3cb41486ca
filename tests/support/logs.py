"""What the processes logged during a test, as the structured events they are."""

from __future__ import annotations

from typing import Any

import pytest


def logged_events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The structured events of this name that were logged during the test."""
    found = []
    for record in caplog.records:
        if isinstance(record.msg, dict) and record.msg.get("event") == event:
            found.append(record.msg)
    return found
