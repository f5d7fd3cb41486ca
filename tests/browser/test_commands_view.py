"""Commands to a machine in the operator view: the system Chromium, driven by Playwright, against `shopfloor api`.

A press has four writable tags (a float setpoint with a range, a whole-number batch size, a mode from a few allowed
values, a heater that is on or off) and two older commands: one its gateway refused, one nobody answered. On a server
with commands on (publishing to a real Mosquitto), a planner reads the limits and current values, is stopped before
any request when a value is out of range, confirms a setpoint with a second click, and sees the command `sent`, then
`done` with the value read back. The test plays the gateway: it takes the command from the broker and has its answer
recorded by the ingestor's own decoding and write path on the API's database (the MQTT way back is covered by
tests/integration/test_commands.py). A limit tightened after the page loaded is refused by the server, on the row.
On a server with commands off, a worker sees nothing of commands and a planner (in Turkish) gets one note.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import httpx
import pytest
from playwright.async_api import Browser, Page, Request, expect
from sqlalchemy.ext.asyncio import async_sessionmaker

from api.commands.service import UNANSWERED
from core.commands import (
    CommandStatus,
    WriteOutcome,
    command_result_topic,
    command_topic,
    decode_command,
    encode_result,
)
from core.contract import TimeWindow
from core.db import create_engine_from_settings
from core.ingest import CommandResult, IngestBatch, MachineRegistry, write_batch
from core.models import MachineCommand, MachineLatest, Role, WritableTag
from core.schema import upgrade
from core.settings import DatabaseSettings
from ingestor.decode import decode_message
from tests.browser.test_operator_view import ARTIFACTS, log_in, require_prerequisites, watch_console
from tests.support.api import bearer
from tests.support.browser import chromium, serve_api
from tests.support.factories import TEST_PASSWORD, make_machine, make_user
from tests.support.mosquitto import MosquittoBroker, running_mosquitto

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)

SITE, PRESS = "plant1", "press-7"
SETPOINT = "cycle_time_setpoint_s"
REFUSED_REASON = "the press is in manual mode"
DASH = "\N{EN DASH}"
RECEIVE_S = 10
# The badges' colours: a user tells a command's outcome at a glance.
BADGE_RGB = {
    "sent": "rgb(226, 232, 240)",
    "done": "rgb(22, 163, 74)",
    "refused": "rgb(220, 38, 38)",
    "expired": "rgb(245, 158, 11)",
}


@dataclass(frozen=True)
class Press:
    """What was seeded: the press and the database."""

    machine_id: int
    database_url: str


@pytest.fixture
async def press(tmp_path: Path) -> Press:
    """The press with its writable tags, two latest values and two older commands; a worker, a planner, an admin."""
    url = f"sqlite:///{tmp_path / 'commands.db'}"
    upgrade(url)
    now = datetime.now(UTC)
    engine = create_engine_from_settings(DatabaseSettings(database_url=url))
    async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        await make_user(session, "operator")
        planner = await make_user(session, "planner", Role.PLANNER)
        await make_user(session, "admin", Role.ADMIN)
        machine = await make_machine(session, PRESS, site=SITE, name="Press 7", online=True, last_seen_at=now)
        session.add_all(
            [
                WritableTag(machine_id=machine.id, tag=SETPOINT, value_type="float", min=10.0, max=60.0,
                            description="Cycle time setpoint, s"),
                WritableTag(machine_id=machine.id, tag="batch_size", value_type="int", min=1.0, max=500.0),
                WritableTag(machine_id=machine.id, tag="mode_select", value_type="int", allowed=[1.0, 2.0, 5.0]),
                WritableTag(machine_id=machine.id, tag="heater_on", value_type="bool"),
                MachineLatest(machine_id=machine.id, tag=SETPOINT, ts=now - timedelta(minutes=1), value=30.0),
                MachineLatest(machine_id=machine.id, tag="heater_on", ts=now - timedelta(minutes=1), value=1.0),
                MachineCommand(
                    id=uuid.uuid4(), machine_id=machine.id, requested_by_id=planner.id,
                    requested_at=now - timedelta(hours=2), expires_at=now - timedelta(hours=2) + timedelta(seconds=60),
                    writes=[{"tag": "mode_select", "value": 2, "old_value": None}], status=CommandStatus.SENT,
                ),
                MachineCommand(
                    id=uuid.uuid4(), machine_id=machine.id, requested_by_id=planner.id,
                    requested_at=now - timedelta(hours=1), expires_at=now - timedelta(hours=1) + timedelta(seconds=60),
                    writes=[{"tag": "heater_on", "value": False, "old_value": 1.0}], status=CommandStatus.REFUSED,
                    reason=REFUSED_REASON, finished_at=now - timedelta(hours=1), gateway_id="gw-hall-a", outcome=[],
                ),
            ]
        )  # fmt: skip
    await engine.dispose()
    return Press(machine_id=machine.id, database_url=url)


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """Mosquitto with our config, anonymous: this test is about the page, not the broker's logins."""
    with running_mosquitto(anonymous=True) as server:
        yield server


@pytest.fixture
def server_on(press: Press, broker: MosquittoBroker, tmp_path: Path) -> Iterator[str]:
    """`shopfloor api` with commands on, publishing to the broker."""
    folder = tmp_path / "commands-on"
    folder.mkdir()
    settings = {"COMMANDS_ENABLED": "true", "MQTT_HOST": broker.host, "MQTT_PORT": str(broker.port)}
    yield from serve_api(press.database_url, folder, settings)


@pytest.fixture
def server_off(press: Press, tmp_path: Path) -> Iterator[str]:
    """`shopfloor api` as it starts by default: commands off."""
    yield from serve_api(press.database_url, tmp_path)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """The system Chromium."""
    require_prerequisites()
    async with chromium() as launched:
        yield launched


def command_requests(page: Page) -> list[Request]:
    """Every request of the page to the press's commands (sent or read) and writable tags, as it goes out."""
    seen: list[Request] = []

    def on_request(request: Request) -> None:
        if "/commands" in request.url or "/writable-tags" in request.url:
            seen.append(request)

    page.on("request", on_request)
    return seen


def posts(requests: list[Request]) -> list[Request]:
    """The commands sent."""
    return [request for request in requests if request.method == "POST"]


async def open_press(page: Page, server: str, press: Press, username: str) -> None:
    """Log in on the press's page and wait until it is loaded."""
    await page.goto(f"{server}/ui#/machines/{press.machine_id}")
    await log_in(page, username)
    await expect(page.locator("#app[data-view=machine][data-loaded=true]")).to_be_attached()


async def record_gateway_answer(database_url: str, payload: bytes) -> None:
    """What the ingestor does with a gateway's answer from the broker: decode it, write it in one transaction."""
    decoded = decode_message(
        command_result_topic(SITE, PRESS),
        payload,
        received_at=datetime.now(UTC),
        window=TimeWindow(max_past=timedelta(days=1), max_future=timedelta(minutes=5)),
    )
    assert isinstance(decoded, CommandResult), decoded
    engine = create_engine_from_settings(DatabaseSettings(database_url=database_url))
    async with engine.begin() as conn:
        written = await write_batch(conn, IngestBatch(results=[decoded]), registry=MachineRegistry(auto_register=False))
    await engine.dispose()
    assert written.command_results == 1


async def background_of(page: Page, selector: str) -> str:
    color: str = await page.locator(selector).evaluate("(element) => getComputedStyle(element).backgroundColor")
    return color


@pytest.mark.mosquitto
async def test_a_planner_sends_a_setpoint_and_sees_it_read_back(
    browser: Browser, server_on: str, broker: MosquittoBroker, press: Press
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    requests = command_requests(page)
    await open_press(page, server_on, press, "planner")

    # The setpoints: limits, the current value where the page has one, an input of the tag's kind.
    block = page.locator("[data-ref=commands][data-loaded=true]")
    await expect(block.get_by_role("heading", name="Setpoints")).to_be_visible()
    await expect(block.locator(".setpoint")).to_have_count(4)
    setpoint = block.locator(f".setpoint[data-tag={SETPOINT}]")
    batch = block.locator(".setpoint[data-tag=batch_size]")
    mode = block.locator(".setpoint[data-tag=mode_select]")
    heater = block.locator(".setpoint[data-tag=heater_on]")
    await expect(setpoint.locator(".setpoint-limits")).to_have_text(f"10 {DASH} 60")
    await expect(setpoint.locator(".setpoint-current")).to_have_text("30")
    await expect(setpoint).to_contain_text("Cycle time setpoint, s")
    value = setpoint.get_by_label(f"New value: {SETPOINT}")
    for name, expected in {"type": "number", "min": "10", "max": "60", "step": "any"}.items():
        await expect(value).to_have_attribute(name, expected)
    await expect(batch.locator(".setpoint-limits")).to_have_text(f"1 {DASH} 500")
    await expect(batch.locator("input")).to_have_attribute("step", "1")
    await expect(batch.locator(".setpoint-current")).to_have_text(DASH)
    await expect(mode.locator(".setpoint-limits")).to_have_text("one of 1, 2, 5")
    await expect(mode.locator("select option")).to_have_text(["Choose…", "1", "2", "5"])
    await expect(heater.locator(".setpoint-limits")).to_have_text("on / off")
    await expect(heater.locator("select option")).to_have_text(["Choose…", "On", "Off"])
    await expect(heater.locator(".setpoint-current")).to_have_text("On")

    # The older commands, newest first: refused by the gateway (red, why), never answered (amber, why).
    items = block.locator(".command")
    await expect(items).to_have_count(2)
    await expect(items.nth(0)).to_have_attribute("data-status", "refused")
    await expect(items.nth(0).locator(".command-badge")).to_have_text("Refused")
    await expect(items.nth(0).locator(".command-reason")).to_have_text(REFUSED_REASON)
    await expect(items.nth(0).locator(".command-write")).to_have_text("heater_on Off (was On)")
    await expect(items.nth(1)).to_have_attribute("data-status", "expired")
    await expect(items.nth(1).locator(".command-reason")).to_have_text(UNANSWERED)
    assert await background_of(page, ".command[data-status=refused] .command-badge") == BADGE_RGB["refused"]
    assert await background_of(page, ".command[data-status=expired] .command-badge") == BADGE_RGB["expired"]

    # Out of the limits: said on the row, and nothing is sent.
    send = setpoint.locator("button[data-action=send]")
    await value.fill("75")
    await send.click()
    await expect(setpoint.get_by_role("alert")).to_have_text("75 is above the maximum 60.")
    await batch.locator("input").fill("2.5")
    await batch.locator("button[data-action=send]").click()
    await expect(batch.get_by_role("alert")).to_have_text("Enter a whole number.")
    await mode.locator("button[data-action=send]").click()
    await expect(mode.get_by_role("alert")).to_have_text("Enter a value.")

    # A value within them: the first click asks, the second sends; the command shows at once as sent.
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"gateway-{uuid.uuid4().hex[:8]}") as gateway:
        await gateway.subscribe(command_topic(SITE, PRESS), qos=1)
        await value.fill("32.5")
        await send.click()
        await expect(send).to_have_text(f"Confirm 32.5 → {SETPOINT}?")
        await expect(setpoint.get_by_role("alert")).to_be_hidden()
        assert posts(requests) == []
        await send.click()
        sent = items.first
        await expect(items).to_have_count(3)
        await expect(sent).to_have_attribute("data-status", "sent")
        await expect(sent.locator(".command-badge")).to_have_text("Sent")
        await expect(sent.locator(".command-write")).to_have_text(f"{SETPOINT} 32.5 → … (was 30)")
        await expect(sent).to_contain_text("planner")
        await expect(send).to_have_text("Send")
        assert await background_of(page, ".command[data-status=sent] .command-badge") == BADGE_RGB["sent"]
        assert len(posts(requests)) == 1
        async with asyncio.timeout(RECEIVE_S):
            message = await anext(aiter(gateway.messages))
    assert isinstance(message.payload, bytes)
    command = decode_command(message.payload)
    assert str(command.id) == await sent.get_attribute("data-command-id")
    assert [(write.tag, write.value) for write in command.writes] == [(SETPOINT, 32.5)]

    # The gateway wrote and read back: the page, which asks while the command is sent, shows it done.
    outcome = [WriteOutcome(tag=SETPOINT, previous=30.0, read_back=32.5)]
    answer = encode_result(command.id, "done", ts=datetime.now(UTC), gateway="gw-hall-a", writes=outcome)
    await record_gateway_answer(press.database_url, answer)
    await expect(sent).to_have_attribute("data-status", "done")
    await expect(sent.locator(".command-badge")).to_have_text("Done")
    await expect(sent.locator(".command-write")).to_have_text(f"{SETPOINT} 32.5 → 32.5 (was 30)")
    assert await background_of(page, ".command[data-status=done] .command-badge") == BADGE_RGB["done"]
    await page.evaluate("window.scrollTo(0, 0)")  # the top bar sticks: keep it at the top of the picture
    await page.screenshot(path=ARTIFACTS / "operator-view-commands.png", full_page=True)
    print(f"\nscreenshot: {ARTIFACTS / 'operator-view-commands.png'}")
    # Answered: the page stops asking.
    asked = len(requests)
    await page.wait_for_timeout(1500)
    assert len(requests) == asked

    # An admin narrows the range after the page loaded: the server refuses what the page let through, on the row.
    async with httpx.AsyncClient(base_url=server_on) as client:
        login = await client.post("/auth/login", json={"username": "admin", "password": TEST_PASSWORD})
        narrowed = await client.put(
            f"/machines/{press.machine_id}/writable-tags/{SETPOINT}",
            headers=bearer(login.json()["access_token"]),
            json={"type": "float", "min": 10, "max": 40},
        )
        assert narrowed.status_code == 200, narrowed.text
    await value.fill("50")
    await send.click()
    await send.click()
    await expect(setpoint.get_by_role("alert")).to_contain_text("Refused: ")
    await expect(setpoint.get_by_role("alert")).to_contain_text("above the maximum 40")
    await expect(send).to_have_text("Send")
    await expect(items).to_have_count(3)
    assert len(posts(requests)) == 2

    assert problems == []
    await context.close()


async def test_workers_see_no_commands_and_commands_off_is_one_note(
    browser: Browser, server_off: str, press: Press
) -> None:
    # A worker: the machine's page without any of it, and not one request about commands.
    context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    requests = command_requests(page)
    await open_press(page, server_off, press, "operator")
    await expect(page.locator("[data-ref=values] tr")).to_have_count(2)
    await expect(page.locator("[data-ref=commands]")).to_have_count(0)
    await expect(page.get_by_text("Setpoints")).to_have_count(0)
    assert requests == []
    assert problems == []
    await context.close()

    # A planner, in Turkish, on a server with commands off: one note instead of the send buttons, from the start
    # (GET /config says so), so nothing is sent to be refused.
    context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="tr-TR", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    requests = command_requests(page)
    await open_press(page, server_off, press, "planner")
    block = page.locator("[data-ref=commands][data-loaded=true]")
    await expect(block.get_by_role("heading", name="Ayar değerleri")).to_be_visible()
    await expect(block.get_by_role("heading", name="Komutlar")).to_be_visible()
    await expect(block.locator(".command-badge")).to_have_text(["Reddedildi", "Süresi doldu"])
    note = block.locator(".commands-off")
    await expect(note).to_have_text("Bu sunucuda komutlar kapalı.")
    setpoint = block.locator(f".setpoint[data-tag={SETPOINT}]")
    await expect(setpoint.get_by_label(f"Yeni değer: {SETPOINT}")).to_be_disabled()
    await expect(block.locator("button[data-action=send]:visible")).to_have_count(0)
    await expect(block.get_by_role("alert")).to_have_count(0)
    await expect(block.locator(".command")).to_have_count(2)
    assert posts(requests) == []
    assert problems == []
    await context.close()

    # When GET /config cannot be read, the send buttons stay, and the server's refusal of the first send says it.
    context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-GB", timezone_id="UTC")
    await context.route("**/config", lambda route: route.fulfill(status=503, body="unavailable"))
    page = await context.new_page()
    requests = command_requests(page)
    await open_press(page, server_off, press, "planner")
    block = page.locator("[data-ref=commands][data-loaded=true]")
    setpoint = block.locator(f".setpoint[data-tag={SETPOINT}]")
    send = setpoint.locator("button[data-action=send]")
    await setpoint.get_by_label(f"New value: {SETPOINT}").fill("32.5")
    await send.click()
    await send.click()
    await expect(block.locator(".commands-off")).to_have_text("Commands are off on this server.")
    await expect(block.locator("button[data-action=send]:visible")).to_have_count(0)
    assert len(posts(requests)) == 1
    await context.close()
