"""The stage and issue state machines: every (status, event) pair, against a table written out here."""

from __future__ import annotations

from itertools import product

import pytest

from api.issues import transitions as issue_transitions
from api.stages import transitions as stage_transitions
from core.errors import InvalidTransition
from core.models import IssueStatus, StageEventKind, StageStatus

# Written out independently of the code under test, so a wrong table in the code fails here.
EXPECTED_STAGE_MOVES: dict[tuple[StageStatus, StageEventKind], StageStatus] = {
    (StageStatus.PLANNED, StageEventKind.START): StageStatus.IN_PROGRESS,
    (StageStatus.IN_PROGRESS, StageEventKind.PAUSE): StageStatus.PAUSED,
    (StageStatus.PAUSED, StageEventKind.RESUME): StageStatus.IN_PROGRESS,
    (StageStatus.IN_PROGRESS, StageEventKind.DONE): StageStatus.DONE,
    (StageStatus.PAUSED, StageEventKind.DONE): StageStatus.DONE,
}
EXPECTED_STAGE_ACTIONS: dict[StageStatus, list[StageEventKind]] = {
    StageStatus.PLANNED: [StageEventKind.START],
    StageStatus.IN_PROGRESS: [StageEventKind.PAUSE, StageEventKind.DONE],
    StageStatus.PAUSED: [StageEventKind.RESUME, StageEventKind.DONE],
    StageStatus.DONE: [],
}
EXPECTED_ISSUE_MOVES: dict[tuple[IssueStatus, IssueStatus], IssueStatus] = {
    (IssueStatus.OPEN, IssueStatus.ACK): IssueStatus.ACK,
    (IssueStatus.ACK, IssueStatus.RESOLVED): IssueStatus.RESOLVED,
}
EXPECTED_ISSUE_NEXT: dict[IssueStatus, list[IssueStatus]] = {
    IssueStatus.OPEN: [IssueStatus.ACK],
    IssueStatus.ACK: [IssueStatus.RESOLVED],
    IssueStatus.RESOLVED: [],
}

STAGE_PAIRS = list(product(StageStatus, StageEventKind))
ISSUE_PAIRS = list(product(IssueStatus, IssueStatus))


@pytest.mark.parametrize(("status", "event"), STAGE_PAIRS)
def test_stage_transition_follows_the_table_or_refuses(status: StageStatus, event: StageEventKind) -> None:
    expected = EXPECTED_STAGE_MOVES.get((status, event))
    if expected is not None:
        assert stage_transitions.transition(status, event) is expected
        return
    with pytest.raises(InvalidTransition) as caught:
        stage_transitions.transition(status, event)
    error = caught.value
    assert error.code == "invalid_transition"
    assert f"is {status.value}" in error.message
    assert error.extra == {
        "current_status": status.value,
        "allowed_actions": [action.value for action in EXPECTED_STAGE_ACTIONS[status]],
    }


@pytest.mark.parametrize("status", list(StageStatus))
def test_stage_allowed_actions(status: StageStatus) -> None:
    assert stage_transitions.allowed_actions(status) == EXPECTED_STAGE_ACTIONS[status]


def test_refusal_on_a_done_stage_says_nothing_is_allowed() -> None:
    with pytest.raises(InvalidTransition, match=r"nothing \(the stage is finished\)"):
        stage_transitions.transition(StageStatus.DONE, StageEventKind.START)


def test_refusal_message_lists_the_allowed_actions() -> None:
    with pytest.raises(InvalidTransition, match="allowed: resume, done"):
        stage_transitions.transition(StageStatus.PAUSED, StageEventKind.PAUSE)


@pytest.mark.parametrize(("status", "requested"), ISSUE_PAIRS)
def test_issue_transition_follows_the_table_or_refuses(status: IssueStatus, requested: IssueStatus) -> None:
    expected = EXPECTED_ISSUE_MOVES.get((status, requested))
    if expected is not None:
        assert issue_transitions.transition(status, requested) is expected
        return
    with pytest.raises(InvalidTransition) as caught:
        issue_transitions.transition(status, requested)
    error = caught.value
    assert error.code == "invalid_transition"
    assert f"is {status.value}" in error.message
    assert error.extra == {
        "current_status": status.value,
        "allowed_statuses": [target.value for target in EXPECTED_ISSUE_NEXT[status]],
    }


@pytest.mark.parametrize("status", list(IssueStatus))
def test_issue_next_statuses(status: IssueStatus) -> None:
    assert issue_transitions.next_statuses(status) == EXPECTED_ISSUE_NEXT[status]


def test_an_issue_cannot_skip_acknowledgement() -> None:
    with pytest.raises(InvalidTransition, match=r"allowed: ack$"):
        issue_transitions.transition(IssueStatus.OPEN, IssueStatus.RESOLVED)
