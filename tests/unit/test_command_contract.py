"""The command contract both sides share (core/commands.py): limits, topics, payloads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.commands import (
    CommandPayload,
    WriteLimits,
    command_result_topic,
    command_topic,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    parse_command_topic,
)
from core.contract import ContractError

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("limits", "value", "expected"),
    [
        ({"type": "float", "min": 10, "max": 60}, 32.5, 32.5),
        ({"type": "float", "min": 10, "max": 60}, 32, 32.0),
        ({"type": "int", "min": 0, "max": 100}, 5.0, 5),
        ({"type": "int", "allowed": [1, 2, 5]}, 2, 2),
        ({"type": "bool"}, True, True),
        ({"type": "int"}, 2**63 - 1, 2**63 - 1),
    ],
)
def test_allowed_values_come_back_as_the_tags_type(limits: dict[str, object], value: object, expected: object) -> None:
    checked = WriteLimits.model_validate(limits).check(value)
    assert checked == expected
    assert type(checked) is type(expected)


@pytest.mark.parametrize(
    ("limits", "value", "reason"),
    [
        ({"type": "float", "max": 60}, 61, "above the maximum 60"),
        ({"type": "float", "min": 10}, 9.5, "below the minimum 10"),
        ({"type": "int"}, 2.5, "whole number"),
        ({"type": "int", "allowed": [1, 2, 5]}, 3, "not one of the allowed values 1, 2, 5"),
        ({"type": "float"}, float("nan"), "finite"),
        ({"type": "float"}, float("inf"), "finite"),
        ({"type": "float"}, True, "expects a number"),
        ({"type": "float"}, "5", "expects a number"),
        ({"type": "bool"}, 1, "true or false"),
        # Past 64 bits: refused, never an overflow (a 400-digit integer reaches the check through JSON).
        ({"type": "float", "max": 60}, 10**400, "64-bit range"),
        ({"type": "int"}, 2**64, "64-bit range"),
        ({"type": "int"}, 1e20, "64-bit range"),
    ],
)
def test_refused_values_say_why(limits: dict[str, object], value: object, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        WriteLimits.model_validate(limits).check(value)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"min": 5, "max": 1}, "above max"),
        ({"type": "bool", "max": 1}, "neither min/max nor allowed"),
        ({"min": 1, "allowed": [1, 2]}, "either min/max or allowed"),
        ({"type": "int", "max": 1.5}, "whole numbers"),
        ({"max": float("inf")}, "finite"),
        ({"type": "text"}, "Input should be"),
    ],
)
def test_limits_that_contradict_themselves_are_refused(limits: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WriteLimits.model_validate(limits)


def test_topics_name_the_machine_and_nothing_else_parses() -> None:
    assert command_topic("plant1", "press-1") == "shopfloor/v1/plant1/press-1/command"
    assert command_result_topic("plant1", "press-1") == "shopfloor/v1/plant1/press-1/command/result"
    assert parse_command_topic("shopfloor/v1/plant1/press-1/command/result", result=True) == ("plant1", "press-1")
    for topic, result in [
        ("shopfloor/v1/plant1/press-1/command", True),
        ("shopfloor/v1/plant1/press-1/command/result", False),
        ("shopfloor/v1/plant1/press-1/telemetry", False),
        ("shopfloor/v1/Plant1/press-1/command", False),
    ]:
        with pytest.raises(ContractError):
            parse_command_topic(topic, result=result)


def test_a_command_round_trips_and_a_broken_one_says_where() -> None:
    command = CommandPayload(
        id=uuid.uuid4(),
        writes=[{"tag": "target_qty", "value": 500}, {"tag": "cycle_time_setpoint_s", "value": 32.5}],  # type: ignore[list-item]
        expires_at=NOW,
        issued_at=NOW,
        issued_by="planner",
    )
    assert decode_command(encode_command(command)) == command
    with pytest.raises(ContractError, match="a tag is written at most once"):
        decode_command(encode_command(command).replace(b"cycle_time_setpoint_s", b"target_qty"))
    with pytest.raises(ContractError, match=r"writes\.0\.value"):
        decode_command(encode_command(command).replace(b"500", b'"500"'))  # strict: a string is not a number
    with pytest.raises(ContractError, match="not JSON"):
        decode_command(b"{")
    with pytest.raises(ContractError, match="over the 16384-byte limit"):
        decode_command(b" " * 16385)


def test_a_result_cuts_a_long_reason_instead_of_failing() -> None:
    command_id = uuid.uuid4()
    result = decode_result(encode_result(command_id, "failed", ts=NOW, reason="x" * 2000, gateway="edge-01"))
    assert (result.id, result.status, result.gateway) == (command_id, "failed", "edge-01")
    assert result.reason == "x" * 500
