"""An MQTT-native device: an injection-moulding machine whose controller publishes the contract itself.

It samples its own model every `interval_s` (simulated time runs `speed` times faster), sends a message every
`samples_per_message` samples, keeps its status retained (with an offline will), and records what it published so
tests can compare. `python -m simulators.mqtt_device --port 1883 --site plant1 --machine press-9`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt

from core.clock import utcnow
from core.contract import encode_status, encode_telemetry, status_topic, telemetry_topic
from core.lifecycle import add_ready_file_option, readiness, stop_on_signals
from core.mqtt import MqttEndpoint, MqttTls, MqttTlsError, check_tls_port, mqtt_client
from core.retry import wait_or_stop
from simulators.injection import InjectionMachine, InjectionParams


@dataclass
class MqttDevice:
    """One simulated machine publishing over MQTT."""

    host: str
    port: int
    site: str
    machine: str
    username: str | None = None
    password: str | None = None
    seed: int = 1
    speed: float = 1.0
    interval_s: float = 1.0
    samples_per_message: int = 5
    protocol: str = "5"
    tls: MqttTls | None = None
    params: InjectionParams = field(default_factory=InjectionParams)
    record: list[tuple[datetime, str, float | int | str]] = field(default_factory=list)
    published: int = 0

    async def run(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        """Publish until `stop` is set; then mark the device offline and disconnect."""
        model = InjectionMachine(seed=self.seed, params=self.params)
        endpoint = MqttEndpoint(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            protocol="3.1.1" if self.protocol == "3.1.1" else "5",
            tls=self.tls,
        )
        async with mqtt_client(
            endpoint,
            # A broker login is bound to its client id (mosquitto/make-logins.sh): with one, the id is the login.
            identifier=self.username or f"device-{self.site}-{self.machine}",
            will=aiomqtt.Will(
                status_topic(self.site, self.machine), encode_status(False, will=True), qos=1, retain=True
            ),
        ) as client:
            await client.publish(status_topic(self.site, self.machine), encode_status(True), qos=1, retain=True)
            if ready is not None:
                ready.set()
            samples: list[dict[str, Any]] = []
            simulated = 0.0
            seq = 0
            while not stop.is_set():
                simulated += self.interval_s * self.speed
                model.step(simulated)
                now = utcnow()
                values = model.values()
                self.record.extend((now, tag, value) for tag, value in values.items())
                samples.append({"ts": now.isoformat(), "values": values})
                if len(samples) >= self.samples_per_message:
                    seq += 1
                    await client.publish(
                        telemetry_topic(self.site, self.machine), encode_telemetry(samples, seq=seq), qos=1
                    )
                    self.published += len(samples)
                    samples = []
                await wait_or_stop(stop, self.interval_s)
            if samples:
                seq += 1
                await client.publish(
                    telemetry_topic(self.site, self.machine), encode_telemetry(samples, seq=seq), qos=1
                )
                self.published += len(samples)
            await client.publish(status_topic(self.site, self.machine), encode_status(False), qos=1, retain=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopfloor simulate mqtt", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--username", help="the site code, as the broker's ACL expects")
    parser.add_argument("--password")
    parser.add_argument("--site", default="plant1")
    parser.add_argument("--machine", default="press-9")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--samples-per-message", type=int, default=5)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5", help="MQTT version (3.1.1 for amqtt)")
    parser.add_argument("--tls", action="store_true", help="connect over TLS (the broker's name is checked)")
    parser.add_argument("--ca-file", type=Path, help="CA certificate(s) to trust (default: the system's); needs --tls")
    parser.add_argument("--cert-file", type=Path, help="client certificate (with --key-file); needs --tls")
    parser.add_argument("--key-file", type=Path, help="client certificate's private key; needs --tls")
    add_ready_file_option(parser)
    return parser


def _tls(args: argparse.Namespace) -> MqttTls | None:
    """The TLS options as core's MqttTls; exit 2 with one line when they do not hold together."""
    files = {"ca_file": args.ca_file, "cert_file": args.cert_file, "key_file": args.key_file}
    if not args.tls:
        if any(path is not None for path in files.values()):
            _parser().error("--ca-file, --cert-file and --key-file need --tls")
        return None
    tls = MqttTls(**files)
    try:
        tls.context()
    except MqttTlsError as error:
        _parser().error(f"--{error.field.replace('_', '-')}: {error}")
    problem = check_tls_port(tls, args.port)
    if problem:
        _parser().error(f"--port: {problem}")
    return tls


async def _serve(args: argparse.Namespace) -> int:
    device = MqttDevice(
        host=args.host,
        port=args.port,
        site=args.site,
        machine=args.machine,
        username=args.username or args.site,
        password=args.password,
        seed=args.seed,
        speed=args.speed,
        interval_s=args.interval,
        samples_per_message=args.samples_per_message,
        protocol=args.protocol,
        tls=_tls(args),
    )
    connected = asyncio.Event()
    with stop_on_signals() as stop:
        async with readiness(args.ready_file) as ready:
            task = asyncio.create_task(device.run(stop, ready=connected), name=f"simulate:mqtt:{args.machine}")
            waiter = asyncio.create_task(connected.wait(), name=f"simulate:mqtt:{args.machine}:connected")
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if connected.is_set():
                topic = telemetry_topic(args.site, args.machine)
                ready.ready(broker=f"{args.host}:{args.port}", topic=topic)
                print(f"READY mqtt {args.host}:{args.port} {topic}", flush=True)
            waiter.cancel()
            await task
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the device until SIGTERM or SIGINT."""
    return asyncio.run(_serve(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
