"""Load generator: many simulated machines publishing telemetry at QoS 1, for benchmarks and soak tests.

Usable as a library (`await run_load(target, spec)`) and from the command line (`shopfloor simulate load`, or
`python -m simulators.loadgen`). Machine `i` publishes on `telemetry_topic(site, machine_code(i))`; its message
`seq` carries samples `seq*S … seq*S+S-1`, and sample `k` is stamped `base_time + k ms`. So (machine, tag, ts)
never repeats within a run, every message of a run is known in advance (the count of readings is exact), and two
runs with the same seed and base time publish identical payloads.

Machines are split between several publisher connections (one machine always on the same connection, so its
`seq` arrives in order); each connection keeps up to `inflight` publishes waiting for their PUBACK, which is what
lets one process exceed the rate of a connection that waits for every PUBACK in turn. A message counts as
published only once its PUBACK has arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt

from core.contract import MAX_SAMPLES, MAX_VALUES_PER_SAMPLE, check_code, encode_telemetry, telemetry_topic

# Each machine cycles through this many distinct value sets; prime, so the cycle does not line up with S.
WAVE_LENGTH = 61
# The ingestor refuses samples more than 5 minutes ahead of its clock; stop well before that.
FUTURE_MARGIN = timedelta(minutes=4)
# How far back the default base time lies: far enough that a long fast run stays in the past, close enough to
# the ingestor's 7-day limit to never matter.
DEFAULT_BASE_AGE = timedelta(hours=3)


Gate = Callable[[int], Awaitable[None]]


class LoadError(RuntimeError):
    """The load cannot be generated as asked (for example the timestamps would run into the future)."""


@dataclass(frozen=True)
class BrokerTarget:
    """Where to publish, and as whom."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class LoadSpec:
    """What to publish: N machines x T tags, S samples per message, at a rate or as fast as possible.

    At least one of `duration_s` and `messages` bounds the run; with both, whichever comes first stops it.
    `readings_per_s=None` publishes as fast as the connections and the broker allow. `inflight` is how many
    publishes each connection keeps waiting for their PUBACK; keep it within the broker's Receive Maximum
    (paho does not read it from CONNACK).
    """

    machines: int = 100
    tags: int = 20
    samples_per_message: int = 50
    site: str = "load"
    machine_prefix: str = "m"
    publishers: int = 4
    inflight: int = 100
    readings_per_s: float | None = None
    duration_s: float | None = None
    messages: int | None = None
    seed: int = 0
    base_time: datetime | None = None
    publish_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.machines < 1 or self.tags < 1 or self.publishers < 1 or self.inflight < 1:
            raise ValueError("machines, tags, publishers and inflight must be at least 1")
        if self.tags > MAX_VALUES_PER_SAMPLE:
            raise ValueError(f"at most {MAX_VALUES_PER_SAMPLE} tags per sample (the contract's limit)")
        if not 1 <= self.samples_per_message <= MAX_SAMPLES:
            raise ValueError(f"samples_per_message must be 1..{MAX_SAMPLES} (the contract's limit)")
        if self.duration_s is None and self.messages is None:
            raise ValueError("give duration_s, messages or both: an unbounded run is never what a benchmark wants")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        if self.messages is not None and self.messages < 0:
            raise ValueError("messages must not be negative")
        if self.readings_per_s is not None and self.readings_per_s <= 0:
            raise ValueError("readings_per_s must be positive (None: as fast as possible)")
        if self.base_time is not None and self.base_time.tzinfo is None:
            raise ValueError("base_time must be timezone-aware")
        check_code(self.site, "site")
        check_code(machine_code(self, self.machines - 1), "machine")

    @property
    def readings_per_message(self) -> int:
        """Readings one message carries (every tag in every sample)."""
        return self.tags * self.samples_per_message


@dataclass(frozen=True)
class LoadResult:
    """What was published (every message counted here got its PUBACK) and how fast."""

    messages: int
    readings: int
    first_publish: float  # time.monotonic() just before the first publish
    last_ack: float  # time.monotonic() when the last PUBACK arrived
    base_time: datetime
    readings_by_machine: dict[str, int] = field(repr=False)

    @property
    def elapsed_s(self) -> float:
        """From the first publish to the last PUBACK."""
        return max(self.last_ack - self.first_publish, 1e-9)

    @property
    def readings_per_s(self) -> float:
        """Published (acknowledged) readings per second."""
        return self.readings / self.elapsed_s

    @property
    def messages_per_s(self) -> float:
        """Published (acknowledged) messages per second."""
        return self.messages / self.elapsed_s


def machine_code(spec: LoadSpec, index: int) -> str:
    """The code of simulated machine `index` (`m0000`, `m0001`, …)."""
    return f"{spec.machine_prefix}{index:04d}"


def tag_names(spec: LoadSpec) -> list[str]:
    """The tags every simulated machine reports."""
    return [f"tag_{index:03d}" for index in range(spec.tags)]


def default_base_time() -> datetime:
    """A few hours ago, to the second: inside the ingestor's accepted window with room for long runs."""
    return datetime.now(UTC).replace(microsecond=0) - DEFAULT_BASE_AGE


class LoadPlan:
    """The deterministic content of a run: topics, timestamps and values, by machine and `seq`."""

    def __init__(self, spec: LoadSpec, base_time: datetime):
        self.spec = spec
        self.base_time = base_time
        self.codes = [machine_code(spec, index) for index in range(spec.machines)]
        self.topics = [telemetry_topic(spec.site, code) for code in self.codes]
        tags = tag_names(spec)
        # The value sets are shared by every message that uses them: building a payload costs only its timestamps
        # and the JSON encoding, so the generator stays cheap next to the ingestor it measures.
        self._waves = [self._wave(index, tags) for index in range(spec.machines)]

    def _wave(self, machine: int, tags: list[str]) -> list[dict[str, Any]]:
        rng = random.Random(f"{self.spec.seed}:{machine}")  # noqa: S311 -- test data, not security
        shapes = [(rng.uniform(10.0, 500.0), rng.uniform(0.5, 20.0)) for _ in tags]
        return [
            {
                tag: round(
                    level + amplitude * math.sin(2 * math.pi * step / WAVE_LENGTH) + rng.gauss(0, amplitude / 10), 3
                )
                for tag, (level, amplitude) in zip(tags, shapes, strict=True)
            }
            for step in range(WAVE_LENGTH)
        ]

    def sample_time(self, sample: int) -> datetime:
        """The source time of a machine's `sample`-th sample."""
        return self.base_time + timedelta(milliseconds=sample)

    def values(self, machine: int, sample: int) -> dict[str, Any]:
        """The tag values of one sample (shared, do not modify)."""
        return self._waves[machine][sample % WAVE_LENGTH]

    def payload(self, machine: int, seq: int) -> bytes:
        """Message `seq` of `machine`, encoded as the contract says."""
        first = seq * self.spec.samples_per_message
        wave = self._waves[machine]
        samples = [
            {
                "ts": (self.base_time + timedelta(milliseconds=sample)).isoformat(timespec="milliseconds"),
                "values": wave[sample % WAVE_LENGTH],
            }
            for sample in range(first, first + self.spec.samples_per_message)
        ]
        return encode_telemetry(samples, seq=seq)

    def last_time(self, seq: int) -> datetime:
        """The newest source time in message `seq` of any machine."""
        return self.sample_time((seq + 1) * self.spec.samples_per_message - 1)


@dataclass
class _Tally:
    readings_by_machine: list[int]
    messages: int = 0
    readings: int = 0
    issued: int = 0
    first_publish: float | None = None
    last_ack: float = 0.0

    def started(self, readings: int) -> None:
        self.issued += readings
        if self.first_publish is None:
            self.first_publish = time.monotonic()

    def acked(self, machine: int, readings: int) -> None:
        self.messages += 1
        self.readings += readings
        self.readings_by_machine[machine] += readings
        self.last_ack = time.monotonic()


def _messages_of(spec: LoadSpec, machines: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(machine, seq) in publishing order: round after round over this publisher's machines.

    Message number `seq * N + machine` of the whole run: with a fixed count, the same messages are published
    whatever the number of publishers.
    """
    seq = 0
    while True:
        for machine in machines:
            if spec.messages is not None and seq * spec.machines + machine >= spec.messages:
                return
            yield machine, seq
        seq += 1


class _Clock:
    """When the next message of the run is due: one schedule shared by all publishers keeps the total rate."""

    def __init__(self, spec: LoadSpec, start: float):
        self.start = start
        self.deadline = start + spec.duration_s if spec.duration_s is not None else math.inf
        rate = spec.readings_per_s / spec.readings_per_message if spec.readings_per_s else None
        self.interval = 1 / rate if rate else 0.0
        self.taken = 0

    def take(self) -> float:
        """The time the next message is due (messages are handed out in order, to whichever publisher asks)."""
        due = self.start + self.taken * self.interval
        self.taken += 1
        return due


async def _send(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes,
    *,
    machine: int,
    readings: int,
    tally: _Tally,
    slots: asyncio.Semaphore,
    puback_timeout_s: float,
) -> None:
    try:
        await client.publish(topic, payload, qos=1, timeout=puback_timeout_s)
    finally:
        slots.release()
    tally.acked(machine, readings)


@dataclass
class _Start:
    """Every connection is up before the clock starts, and all publishers start from the same instant."""

    ready: asyncio.Barrier
    go: asyncio.Event = field(default_factory=asyncio.Event)
    clock: _Clock | None = None

    async def wait(self) -> _Clock:
        """Report this publisher connected and wait for the common start."""
        await self.ready.wait()
        await self.go.wait()
        if self.clock is None:
            raise RuntimeError("the start signal came without a clock")
        return self.clock


async def _publisher(
    index: int,
    target: BrokerTarget,
    plan: LoadPlan,
    machines: Sequence[int],
    tally: _Tally,
    stop: asyncio.Event,
    start: _Start,
    gate: Gate | None,
) -> None:
    spec = plan.spec
    async with aiomqtt.Client(
        target.host,
        target.port,
        username=target.username,
        password=target.password,
        # A broker login is bound to its client id (mosquitto/make-logins.sh): with one, the id is the login.
        identifier=target.username or f"loadgen-{spec.seed}-{index}-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=spec.inflight,
        timeout=spec.publish_timeout_s,
    ) as client:
        # aiomqtt warns about every publish beyond 10 waiting for its PUBACK; here that is the point.
        client.pending_calls_threshold = spec.inflight + 1
        clock = await start.wait()
        slots = asyncio.Semaphore(spec.inflight)
        readings = spec.readings_per_message
        async with asyncio.TaskGroup() as group:
            for machine, seq in _messages_of(spec, machines):
                due = clock.take()
                now = time.monotonic()
                if stop.is_set() or now >= clock.deadline or due >= clock.deadline:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                if gate is not None:
                    await gate(tally.issued)
                if plan.last_time(seq) > datetime.now(UTC) + FUTURE_MARGIN:
                    raise LoadError("timestamps would run into the future: use an earlier base_time or fewer samples")
                await slots.acquire()
                # Tasks start in creation order, so a machine's messages leave in `seq` order.
                tally.started(readings)
                group.create_task(
                    _send(
                        client,
                        plan.topics[machine],
                        plan.payload(machine, seq),
                        machine=machine,
                        readings=readings,
                        tally=tally,
                        slots=slots,
                        puback_timeout_s=spec.publish_timeout_s,
                    ),
                    name=f"loadgen:publish:{plan.codes[machine]}:{seq}",
                )


async def run_load(
    target: BrokerTarget, spec: LoadSpec, *, stop: asyncio.Event | None = None, gate: Gate | None = None
) -> LoadResult:
    """Publish the load `spec` describes and return what the broker acknowledged.

    `stop` ends the run early. `gate`, when given, is awaited before every message with the number of readings
    handed to the broker so far; it may wait, which turns the run into a closed loop (a benchmark holding the
    broker's backlog bounded while it measures how fast the consumer goes).
    """
    base_time = spec.base_time or default_base_time()
    plan = LoadPlan(spec, base_time)
    stop = stop or asyncio.Event()
    publishers = min(spec.publishers, spec.machines)
    tally = _Tally(readings_by_machine=[0] * spec.machines)
    start = _Start(asyncio.Barrier(publishers + 1))
    async with asyncio.TaskGroup() as group:
        for index in range(publishers):
            machines = range(index, spec.machines, publishers)
            group.create_task(
                _publisher(index, target, plan, machines, tally, stop, start, gate), name=f"loadgen:publisher:{index}"
            )
        await start.ready.wait()
        start.clock = _Clock(spec, time.monotonic())
        start.go.set()
    first = tally.first_publish if tally.first_publish is not None else time.monotonic()
    return LoadResult(
        messages=tally.messages,
        readings=tally.readings,
        first_publish=first,
        last_ack=max(tally.last_ack, first),
        base_time=base_time,
        readings_by_machine=dict(zip(plan.codes, tally.readings_by_machine, strict=True)),
    )


# ---- command line (`shopfloor simulate load` wires these in; printing is left to the command) --------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load options, shared by `shopfloor simulate load` and `python -m simulators.loadgen`."""
    defaults = LoadSpec(duration_s=1)
    parser.add_argument("--machines", type=int, default=defaults.machines, help="simulated machines (N)")
    parser.add_argument("--tags", type=int, default=defaults.tags, help="tags per machine (T)")
    parser.add_argument("--samples", type=int, default=defaults.samples_per_message, help="samples per message (S)")
    parser.add_argument("--site", default=defaults.site, help="site code of every simulated machine")
    parser.add_argument("--prefix", default=defaults.machine_prefix, help="machine codes are PREFIX0000, PREFIX0001, …")
    parser.add_argument("--publishers", type=int, default=defaults.publishers, help="MQTT connections")
    parser.add_argument(
        "--inflight", type=int, default=defaults.inflight, help="un-acknowledged publishes per connection"
    )
    parser.add_argument("--rate", type=float, default=0, help="target readings per second (0: as fast as possible)")
    parser.add_argument("--seconds", type=float, help="stop after this long")
    parser.add_argument("--messages", type=int, help="stop after this many messages in total")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="same seed, same values")


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    """A LoadSpec from the options of `add_arguments` (10 seconds when neither --seconds nor --messages is given)."""
    seconds = args.seconds if args.seconds is not None or args.messages is not None else 10.0
    return LoadSpec(
        machines=args.machines,
        tags=args.tags,
        samples_per_message=args.samples,
        site=args.site,
        machine_prefix=args.prefix,
        publishers=args.publishers,
        inflight=args.inflight,
        readings_per_s=args.rate or None,
        duration_s=seconds,
        messages=args.messages,
        seed=args.seed,
    )


def describe(result: LoadResult) -> str:
    """One line about a finished run."""
    return (
        f"published {result.messages} messages, {result.readings} readings in {result.elapsed_s:.2f} s: "
        f"{result.messages_per_s:,.0f} msg/s, {result.readings_per_s:,.0f} readings/s (every PUBACK received)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m simulators.loadgen`: publish a load to a broker (anonymous, or --username with --password-stdin)."""
    parser = argparse.ArgumentParser(prog="python -m simulators.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--username")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.username and args.publishers > 1:
        parser.error("--username needs --publishers 1: a broker login is bound to one client id")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    target = BrokerTarget(args.host, args.port, args.username, password)
    result = asyncio.run(run_load(target, spec_from_args(args)))
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
