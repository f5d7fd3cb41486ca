"""Sequence gaps: counted only for numbers still missing after the reorder window; late, repeated, split and
restarted streams are not gaps (ingestor/sequence.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from ingestor.sequence import RESTART_DROP, WINDOW, SeqState

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
REORDER = timedelta(seconds=60)


def feed(state: SeqState, batches: list[list[int]], *, step_s: float = 1.0) -> int:
    """Give the batches one `step_s` apart; the numbers counted missing in all."""
    return sum(
        state.observe(batch, now=T0 + timedelta(seconds=index * step_s), reorder=REORDER)
        for index, batch in enumerate(batches)
    )


def test_an_unbroken_stream_has_no_gap_and_keeps_no_bits() -> None:
    state = SeqState()
    assert feed(state, [list(range(start, start + 50)) for start in range(1, 1001, 50)]) == 0
    assert (state.contiguous, state.ahead, state.stalled_since) == (1000, 0, None)


def test_a_missing_number_is_counted_once_the_reorder_window_has_passed() -> None:
    state = SeqState()
    assert state.observe([1, 2, 3, 5, 6], now=T0, reorder=REORDER) == 0  # 4 may still come
    assert state.observe([7, 8], now=T0 + timedelta(seconds=30), reorder=REORDER) == 0
    assert state.observe([9], now=T0 + timedelta(seconds=61), reorder=REORDER) == 1
    assert (state.contiguous, state.ahead, state.missing_total) == (9, 0, 1)
    # 4 arriving now (very late) is not counted again, nor is anything else.
    assert state.observe([4, 10], now=T0 + timedelta(seconds=62), reorder=REORDER) == 0
    assert state.contiguous == 10


def test_numbers_split_between_two_ingestors_interleave_without_a_gap() -> None:
    """A shared group: one ingestor's batch holds the odd numbers, the other's the even ones, committed in turn."""
    state = SeqState()
    batches = []
    for start in range(1, 10_001, 100):
        block = list(range(start, start + 100))
        batches += [block[0::2], block[1::2]]
    random.Random(3).shuffle(batches[2:])  # commits land in any order, within the reorder window
    assert feed(state, batches, step_s=0.1) == 0
    assert (state.contiguous, state.ahead) == (10_000, 0)


def test_a_live_first_replay_after_an_outage_is_not_a_gap() -> None:
    """Before the outage 1..100; then live 3,701.. first while 101..3,700 replay from the gateway's buffer, oldest
    first, for minutes (longer than the reorder window, but the oldest missing number keeps being filled)."""
    state = SeqState()
    batches = [list(range(1, 101))]
    live, replay = 3701, 101
    while replay <= 3700:
        batches.append([live, live + 1, *range(replay, min(replay + 20, 3701))])
        live, replay = live + 2, replay + 20
    assert feed(state, batches, step_s=2.0) == 0  # 180 batches, 2 s apart: 6 minutes of replay
    assert state.contiguous == live - 1
    assert state.ahead == 0


def test_a_gateway_restart_starts_a_new_count_and_its_old_buffer_is_no_gap() -> None:
    state = SeqState()
    assert feed(state, [list(range(1, 50_001))]) == 0
    # Restarted: counts from 1 again, while its buffer still replays messages from before the restart.
    assert state.observe([1, 2, 3], now=T0 + timedelta(seconds=10), reorder=REORDER) == 0
    assert state.previous_high == 50_000
    assert state.observe([50_001, 4, 50_002, 5], now=T0 + timedelta(seconds=11), reorder=REORDER) == 0
    assert state.observe([6, 7], now=T0 + timedelta(seconds=200), reorder=REORDER) == 0
    assert (state.contiguous, state.ahead, state.missing_total) == (7, 0, 0)
    # A real gap in the new count is still a gap.
    assert state.observe([9], now=T0 + timedelta(seconds=201), reorder=REORDER) == 0
    assert state.observe([10], now=T0 + timedelta(seconds=300), reorder=REORDER) == 1


def test_a_small_drop_is_a_redelivery_not_a_restart() -> None:
    state = SeqState()
    feed(state, [list(range(1, 2001))])
    assert state.observe([2000 - RESTART_DROP + 1, 1500], now=T0, reorder=REORDER) == 0
    assert (state.contiguous, state.previous_high) == (2000, None)


def test_a_jump_beyond_the_window_counts_what_falls_out_of_it() -> None:
    state = SeqState()
    state.observe([1], now=T0, reorder=REORDER)
    assert state.observe([WINDOW + 11], now=T0, reorder=REORDER) == 10
    assert state.contiguous == 11
    assert state.ahead.bit_length() == WINDOW  # bounded: the far number sits at the window's top


def test_the_first_number_seen_starts_the_count() -> None:
    state = SeqState()
    assert state.observe([500, 501], now=T0, reorder=REORDER) == 0
    assert state.observe([499, 502], now=T0, reorder=REORDER) == 0  # earlier ones arriving late: not a gap
    assert state.contiguous == 502


def test_only_numbers_missing_for_the_whole_window_are_counted_later_holes_wait_their_own() -> None:
    """10 is missing for over a minute; 22 and 24 only since a moment ago (another ingestor's batch is committing)."""
    state = SeqState()
    assert state.observe([*range(0, 10), *range(11, 21)], now=T0, reorder=REORDER) == 0
    assert state.observe([21, 23, 25], now=T0 + timedelta(seconds=61), reorder=REORDER) == 1  # only 10
    assert state.observe([22, 24], now=T0 + timedelta(seconds=62), reorder=REORDER) == 0
    assert (state.contiguous, state.ahead, state.missing_total) == (25, 0, 1)
