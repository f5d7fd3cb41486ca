"""Commands to machines through the API, the real Mosquitto (with our logins and rules) and the ingestor: checked
against the machine's writable tags, recorded, published with their expiry, and answered.

The gateway's side (write, read back, refuse what its configuration does not allow) is in
tests/integration/test_gateway_commands.py; the whole way round, API to simulator and back, is the last test here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.commands import command_result_topic, command_topic, decode_command, encode_result
from core.models import DeadLetter, MachineLatest, Role
from core.settings import CommandSettings, MqttSettings
from gateway.service import Gateway
from simulators.modbus import ModbusStation, station_tags
from simulators.opcua import InjectionMachineServer, machine_tags, setpoint_tags
from tests.integration.test_gateway import Observed, gateway_settings, modbus, opcua, running_gateway
from tests.support.api import Api, Headers, make_settings, running_api
from tests.support.db import committed
from tests.support.factories import make_machine, make_work_order
from tests.support.mosquitto import MosquittoBroker
from tests.support.pipeline import (
    API_LOGIN,
    COMMAND_GATEWAY,
    COMMAND_MACHINES,
    PASSWORDS,
    SITE,
    running_ingestor,
)
from tests.support.postgres import free_port

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.modbus, pytest.mark.opcua]

PRESS, ASSEMBLY = COMMAND_MACHINES
SETPOINT = {"type": "float", "min": 10, "max": 60, "description": "cycle time setpoint, s"}
TARGET = {"type": "int", "min": 1, "max": 100_000, "job_field": "target_qty"}
JOB = {"type": "int", "min": 0, "max": 2_147_483_647, "job_field": "work_order_id"}
RECEIVE_S = 10


def command_settings(broker: MosquittoBroker, *, port: int | None = None) -> dict[str, Any]:
    """COMMANDS_ENABLED with the API's own broker login."""
    return {
        "commands": CommandSettings(commands_enabled=True, command_expiry_s=30),
        "mqtt": MqttSettings(
            mqtt_host=broker.host,
            mqtt_port=port or broker.port,
            mqtt_username=API_LOGIN,
            mqtt_password=SecretStr(PASSWORDS[API_LOGIN]),
        ),
    }


@pytest.fixture
async def api(broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine) -> AsyncIterator[Api]:
    """The API with commands on, committing for real (the ingestor's connection must see its rows)."""
    settings = make_settings(ingest_database).model_copy(update=command_settings(broker))
    async with running_api(committed(pipeline_engine, ingest_database), settings) as api:
        yield api


async def press_with_writable_tags(api: Api) -> tuple[int, Headers]:
    """The press, its cycle-time setpoint (latest value 30.0), target quantity and job id writable; a planner."""
    async with api.session() as session:
        machine = await make_machine(session, PRESS, site=SITE, ideal_cycle_time_s=30.0)
        session.add(MachineLatest(machine_id=machine.id, tag="cycle_time_setpoint_s", ts=datetime.now(UTC), value=30.0))
        machine_id = machine.id
    _, admin = await api.signed_in(Role.ADMIN)
    for tag, limits in (("cycle_time_setpoint_s", SETPOINT), ("target_qty", TARGET), ("job_id", JOB)):
        response = await api.client.put(f"/machines/{machine_id}/writable-tags/{tag}", json=limits, headers=admin)
        assert response.status_code == 200, response.text
    _, planner = await api.signed_in(Role.PLANNER, "planner-cmd")
    return machine_id, planner


def witness(broker: MosquittoBroker) -> aiomqtt.Client:
    """A client that sees every command and result (the ingestor's login may read all of contract v1)."""
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username="ingestor",
        password=PASSWORDS["ingestor"],
        identifier=f"ingestor-witness-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5,
    )


def payload_of(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes)
    return message.payload


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(RECEIVE_S):
        return await anext(aiter(client.messages))


async def test_a_command_is_checked_recorded_and_published_with_its_expiry(api: Api, broker: MosquittoBroker) -> None:
    machine_id, planner = await press_with_writable_tags(api)
    listed = await api.client.get(f"/machines/{machine_id}/writable-tags", headers=planner)
    assert [(row["tag"], row["type"], row["job_field"]) for row in listed.json()] == [
        ("cycle_time_setpoint_s", "float", None),
        ("job_id", "int", "work_order_id"),
        ("target_qty", "int", "target_qty"),
    ]
    async with witness(broker) as seen:
        await seen.subscribe(command_topic(SITE, PRESS), qos=1)
        response = await api.client.post(
            f"/machines/{machine_id}/commands", json={"tag": "cycle_time_setpoint_s", "value": 32.5}, headers=planner
        )
        assert response.status_code == 202, response.text
        message = await next_message(seen)
    sent = response.json()
    assert sent["status"] == "sent"
    assert sent["requested_by"] == "planner-cmd"
    assert sent["writes"] == [
        {"tag": "cycle_time_setpoint_s", "value": 32.5, "old_value": 30.0, "previous": None, "read_back": None}
    ]
    requested_at = datetime.fromisoformat(sent["requested_at"])
    assert datetime.fromisoformat(sent["expires_at"]) - requested_at == timedelta(seconds=30)
    # On the broker: the same command, its expiry as MQTT 5's message expiry and its id as correlation data.
    published = decode_command(payload_of(message))
    assert str(published.id) == sent["id"]
    assert [(write.tag, write.value) for write in published.writes] == [("cycle_time_setpoint_s", 32.5)]
    assert published.issued_by == "planner-cmd"
    assert published.expires_at == datetime.fromisoformat(sent["expires_at"])
    properties: Any = message.properties  # paho sets the properties as attributes it does not declare
    # What is left of the 30 s when it went out, rounded up to a whole second.
    assert 0 < properties.MessageExpiryInterval <= 30
    assert properties.CorrelationData == uuid.UUID(sent["id"]).bytes
    history = await api.client.get(f"/machines/{machine_id}/commands", headers=planner)
    assert history.headers["X-Total-Count"] == "1"
    assert history.json() == [sent]


async def test_what_the_registry_does_not_allow_is_refused_and_neither_recorded_nor_sent(
    api: Api, broker: MosquittoBroker
) -> None:
    machine_id, planner = await press_with_writable_tags(api)
    refused = {
        "above the maximum": ({"tag": "cycle_time_setpoint_s", "value": 61}, 422, "value_refused"),
        "not writable": ({"tag": "barrel_temp_c", "value": 200}, 422, "tag_not_writable"),
        "fraction for an int": ({"tag": "target_qty", "value": 10.5}, 422, "value_refused"),
        "bool for a number": ({"tag": "target_qty", "value": True}, 422, "value_refused"),
        "two kinds at once": ({"tag": "target_qty", "value": 5, "stage_id": 1}, 422, "validation_failed"),
        "tag repeated": (
            {"writes": [{"tag": "target_qty", "value": 5}, {"tag": "target_qty", "value": 6}]},
            422,
            "tag_repeated",
        ),
        "expiry too long": ({"tag": "target_qty", "value": 5, "expires_in_s": 3601}, 422, "validation_failed"),
    }
    async with witness(broker) as seen:
        await seen.subscribe(command_topic(SITE, PRESS), qos=1)
        answers = {}
        for case, (body, _, _) in refused.items():
            response = await api.client.post(f"/machines/{machine_id}/commands", json=body, headers=planner)
            answers[case] = (response.status_code, response.json()["code"])
        # A good one after them: the first command the broker delivers is this one, so none of the others went out.
        good = await api.client.post(
            f"/machines/{machine_id}/commands", json={"tag": "target_qty", "value": 500}, headers=planner
        )
        first = decode_command(payload_of(await next_message(seen)))
    assert answers == {case: (status, code) for case, (_, status, code) in refused.items()}
    assert str(first.id) == good.json()["id"]
    history = await api.client.get(f"/machines/{machine_id}/commands", headers=planner)
    assert [item["id"] for item in history.json()] == [good.json()["id"]]


async def test_a_stages_job_data_goes_to_the_tags_that_take_it(api: Api, broker: MosquittoBroker) -> None:
    machine_id, planner = await press_with_writable_tags(api)
    async with api.session() as session:
        other = await make_machine(session, ASSEMBLY, site=SITE)
        order = await make_work_order(session, start=datetime.now(UTC), qty=500)
        stage = order.stages[0]
        stage.machine_id = machine_id
        elsewhere = await make_work_order(session, start=datetime.now(UTC), qty=20)
        elsewhere.stages[0].machine_id = other.id
        order_id, stage_id, elsewhere_stage = order.id, stage.id, elsewhere.stages[0].id
    async with witness(broker) as seen:  # a command nobody takes is refused by the broker (a test below)
        await seen.subscribe(command_topic(SITE, PRESS), qos=1)
        response = await api.client.post(
            f"/machines/{machine_id}/commands", json={"stage_id": stage_id}, headers=planner
        )
    assert response.status_code == 202, response.text
    assert response.json()["stage_id"] == stage_id
    assert [(write["tag"], write["value"]) for write in response.json()["writes"]] == [
        ("target_qty", 500),
        ("job_id", order_id),
    ]
    wrong = await api.client.post(
        f"/machines/{machine_id}/commands", json={"stage_id": elsewhere_stage}, headers=planner
    )
    assert (wrong.status_code, wrong.json()["code"]) == (422, "stage_not_on_machine")


async def test_a_machine_that_asks_for_it_gets_its_stages_job_data_when_the_stage_starts(
    api: Api, broker: MosquittoBroker
) -> None:
    machine_id, planner = await press_with_writable_tags(api)
    _, admin = await api.signed_in(Role.ADMIN)
    async with api.session() as session:
        first = await make_work_order(session, start=datetime.now(UTC), qty=120)
        second = await make_work_order(session, start=datetime.now(UTC), qty=80)
        for order in (first, second):
            order.stages[0].machine_id = machine_id
        quiet_stage, stage_id, order_id = first.stages[0].id, second.stages[0].id, second.id
    # Off by default: a start sends nothing.
    assert (await api.client.post(f"/stages/{quiet_stage}/start", headers=planner)).status_code == 200
    switched = await api.client.patch(f"/machines/{machine_id}", json={"send_job_data_on_start": True}, headers=admin)
    assert switched.json()["send_job_data_on_start"] is True
    async with witness(broker) as seen:
        await seen.subscribe(command_topic(SITE, PRESS), qos=1)
        started = await api.client.post(f"/stages/{stage_id}/start", headers=planner)
        assert started.status_code == 200, started.text
        published = decode_command(payload_of(await next_message(seen)))
    assert [(write.tag, write.value) for write in published.writes] == [("target_qty", 80), ("job_id", order_id)]
    assert published.issued_by == "planner-cmd"
    history = await api.client.get(f"/machines/{machine_id}/commands", headers=planner)
    assert [(item["stage_id"], item["status"]) for item in history.json()] == [(stage_id, "sent")]
    of_stage = await api.client.get(f"/machines/{machine_id}/commands", params={"stage_id": stage_id}, headers=planner)
    assert [item["id"] for item in of_stage.json()] == [str(published.id)]
    assert (
        await api.client.get(f"/machines/{machine_id}/commands", params={"stage_id": quiet_stage}, headers=planner)
    ).json() == []


async def test_a_command_the_broker_does_not_take_is_failed_and_says_why(
    broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    settings = make_settings(ingest_database).model_copy(update=command_settings(broker, port=free_port()))
    async with running_api(committed(pipeline_engine, ingest_database), settings) as api:
        machine_id, planner = await press_with_writable_tags(api)
        response = await api.client.post(
            f"/machines/{machine_id}/commands", json={"tag": "target_qty", "value": 5}, headers=planner
        )
        assert response.status_code == 503, response.text
        problem = response.json()
        assert problem["code"] == "broker_unavailable"
        recorded = await api.client.get(f"/machines/{machine_id}/commands/{problem['command_id']}", headers=planner)
    assert recorded.json()["status"] == "failed"
    assert "the broker did not take the command" in recorded.json()["reason"]


async def test_a_command_no_gateway_takes_or_the_broker_refuses_is_failed_and_says_why(
    api: Api, broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    machine_id, planner = await press_with_writable_tags(api)
    # Nobody subscribed to the press's commands: the broker answers "no matching subscribers" and drops it.
    unheard = await api.client.post(
        f"/machines/{machine_id}/commands", json={"tag": "target_qty", "value": 5}, headers=planner
    )
    # The API logged in as another login (here the ingestor's, which may not publish): 135, refused, not "sent".
    wrong = command_settings(broker)
    wrong["mqtt"] = wrong["mqtt"].model_copy(
        update={"mqtt_username": "ingestor", "mqtt_password": SecretStr(PASSWORDS["ingestor"])}
    )
    settings = make_settings(ingest_database).model_copy(update=wrong)
    async with running_api(committed(pipeline_engine, ingest_database), settings) as misconfigured:
        _, headers = await misconfigured.signed_in(Role.PLANNER)
        refused = await misconfigured.client.post(
            f"/machines/{machine_id}/commands", json={"tag": "target_qty", "value": 6}, headers=headers
        )
    outcomes = []
    for response in (unheard, refused):
        assert (response.status_code, response.json()["code"]) == (503, "broker_unavailable"), response.text
        row = await api.client.get(f"/machines/{machine_id}/commands/{response.json()['command_id']}", headers=planner)
        outcomes.append((row.json()["status"], row.json()["reason"]))
    assert outcomes[0][0] == outcomes[1][0] == "failed"
    assert "no gateway takes this machine's commands" in outcomes[0][1]
    assert "refused the API's login" in outcomes[1][1]


async def test_the_gateways_answer_lands_on_the_command_once_and_strays_are_dead_letters(
    api: Api, broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine
) -> None:
    machine_id, planner = await press_with_writable_tags(api)
    url = f"/machines/{machine_id}/commands"
    async with witness(broker) as seen:  # the gateway's part: a subscriber, so the broker takes the commands
        await seen.subscribe(command_topic(SITE, PRESS), qos=1)
        first = (await api.client.post(url, json={"tag": "target_qty", "value": 5}, headers=planner)).json()
        brief = {"tag": "target_qty", "value": 6, "expires_in_s": 1}
        short = (await api.client.post(url, json=brief, headers=planner)).json()
    await asyncio.sleep(1.1)
    # Not answered within its expiry: shown as expired (the gateway refuses it from then on), still `sent` inside.
    late = (await api.client.get(f"{url}/{short['id']}", headers=planner)).json()
    assert (late["status"], late["reason"]) == ("expired", "no result from the gateway before the command expired")

    now = datetime.now(UTC)
    writes = [{"tag": "target_qty", "previous": 1, "read_back": 5}]
    topic = command_result_topic(SITE, PRESS)
    answers = [
        (topic, encode_result(uuid.UUID(first["id"]), "done", ts=now, gateway="gw-cmd", writes=writes)),  # type: ignore[arg-type]
        # Redelivered with another outcome: the first answer stays.
        (topic, encode_result(uuid.UUID(first["id"]), "failed", ts=now, reason="again")),
        # Buffered through an outage: it arrives after the expiry and says what really happened.
        (topic, encode_result(uuid.UUID(short["id"]), "done", ts=now, gateway="gw-cmd")),
        # No such command, and a command of the press answered on another machine's topic.
        (topic, encode_result(uuid.uuid4(), "done", ts=now)),
        (command_result_topic(SITE, ASSEMBLY), encode_result(uuid.UUID(first["id"]), "refused", ts=now)),
    ]
    async with (
        running_ingestor(broker, ingest_database, pipeline_engine) as ingestor,
        aiomqtt.Client(
            broker.host, broker.port, username=COMMAND_GATEWAY, password=PASSWORDS[COMMAND_GATEWAY],
            identifier=COMMAND_GATEWAY, protocol=aiomqtt.ProtocolVersion.V5,
        ) as gateway,
    ):  # fmt: skip
        for answer_topic, payload in answers:
            await gateway.publish(answer_topic, payload, qos=1)
        letters = await wait_dead_letters(pipeline_engine, 2)
        assert ingestor.metrics.command_results._value.get() == 2
    done = (await api.client.get(f"{url}/{first['id']}", headers=planner)).json()
    assert (done["status"], done["gateway_id"], done["reason"]) == ("done", "gw-cmd", None)
    assert done["writes"] == [{"tag": "target_qty", "value": 5, "old_value": None, "previous": 1, "read_back": 5}]
    assert datetime.fromisoformat(done["finished_at"]) == now
    assert (await api.client.get(f"{url}/{short['id']}", headers=planner)).json()["status"] == "done"
    assert all("command result for no command" in letter for letter in letters)


async def wait_dead_letters(engine: AsyncEngine, count: int) -> list[str]:
    """The reasons of the dead letters, once there are `count` of them."""
    async with asyncio.timeout(RECEIVE_S):
        while True:
            async with engine.connect() as connection:
                if (await connection.scalar(select(func.count()).select_from(DeadLetter)) or 0) >= count:
                    return list(await connection.scalars(select(DeadLetter.reason)))
            await asyncio.sleep(0.05)


async def test_the_whole_way_round_api_broker_gateway_device_and_back(
    api: Api, broker: MosquittoBroker, ingest_database: str, pipeline_engine: AsyncEngine, tmp_path: Path
) -> None:
    """A planner's setpoints and a stage's job data reach the OPC-UA press and the Modbus station through the real
    gateway, logged in with its own login that may take these two machines' commands only; each is written, read
    back, and the answer lands on the command's row through the ingestor."""
    machine_id, planner = await press_with_writable_tags(api)
    _, admin = await api.signed_in(Role.ADMIN)
    async with api.session() as session:
        station = await make_machine(session, ASSEMBLY, site=SITE)
        order = await make_work_order(session, start=datetime.now(UTC), qty=480)
        order.stages[0].machine_id = machine_id
        station_id, order_id, stage_id = station.id, order.id, order.stages[0].id
    response = await api.client.put(
        f"/machines/{station_id}/writable-tags/target_qty", json={"type": "int", "min": 1, "max": 9999}, headers=admin
    )
    assert response.status_code == 200, response.text

    async with (
        ModbusStation("127.0.0.1", 0, seed=5, speed=1) as assembly,
        InjectionMachineServer(port=0, seed=5, update_interval_s=0.1) as press,
        running_ingestor(broker, ingest_database, pipeline_engine),
        running_gateway(command_gateway(broker, tmp_path, assembly, press), Observed()) as gateway,
    ):
        await asyncio.wait_for(gateway.connected.wait(), timeout=15)
        await wait_online(gateway, PRESS, ASSEMBLY)
        url = f"/machines/{machine_id}/commands"
        setpoint = await api.client.post(url, json={"tag": "cycle_time_setpoint_s", "value": 24.5}, headers=planner)
        job = await api.client.post(url, json={"stage_id": stage_id}, headers=planner)
        quantity = await api.client.post(
            f"/machines/{station_id}/commands", json={"tag": "target_qty", "value": 360}, headers=planner
        )
        answered = [
            await wait_final(api, planner, machine, response.json()["id"])
            for machine, response in ((machine_id, setpoint), (machine_id, job), (station_id, quantity))
        ]
        on_the_press = press.setpoints()
        on_the_station = assembly.setpoints()
    assert [item["status"] for item in answered] == ["done", "done", "done"], answered
    assert {item["gateway_id"] for item in answered} == {gateway.config.gateway_id}
    # The audit trail: who, when, what was asked and what was there before, when the answer came.
    assert {item["requested_by"] for item in answered} == {"planner-cmd"}
    assert all(item["requested_at"] <= item["finished_at"] < item["expires_at"] for item in answered)
    assert answered[0]["writes"][0]["old_value"] == 30.0
    assert answered[1]["stage_id"] == stage_id
    assert [(w["tag"], w["value"], w["read_back"]) for item in answered for w in item["writes"]] == [
        ("cycle_time_setpoint_s", 24.5, 24.5),
        ("target_qty", 480, 480),
        ("job_id", order_id, order_id),
        ("target_qty", 360, 360),
    ]
    assert (on_the_press["cycle_time_setpoint_s"], on_the_press["target_qty"], on_the_press["job_id"]) == (
        24.5,
        480,
        order_id,
    )
    assert on_the_station["target_qty"] == 360


def command_gateway(
    broker: MosquittoBroker, tmp_path: Path, assembly: ModbusStation, press: InjectionMachineServer
) -> dict[str, Any]:
    """A gateway on the production rules with the login that takes the commands of the press and the station."""
    devices = [
        modbus(ASSEMBLY, assembly.port) | {"tags": station_tags(setpoints=True)},
        opcua(PRESS, press, "poll") | {"tags": machine_tags() + setpoint_tags()},
    ]
    settings = gateway_settings(broker, tmp_path / "buffer.db", devices)
    settings["broker"] |= {"username": COMMAND_GATEWAY, "password": PASSWORDS[COMMAND_GATEWAY]}
    return settings


async def wait_online(gateway: Gateway, *machines: str) -> None:
    async with asyncio.timeout(15):
        for machine in machines:
            while gateway.metrics.device_online.labels(machine)._value.get() != 1:  # noqa: ASYNC110 -- a gauge
                await asyncio.sleep(0.05)


async def wait_final(api: Api, headers: Headers, machine_id: int, command_id: str) -> dict[str, Any]:
    """The command once the gateway's answer is on its row."""
    async with asyncio.timeout(RECEIVE_S):
        while True:
            command = (await api.client.get(f"/machines/{machine_id}/commands/{command_id}", headers=headers)).json()
            if command["status"] != "sent":
                return dict(command)
            await asyncio.sleep(0.05)
