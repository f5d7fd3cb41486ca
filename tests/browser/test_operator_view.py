"""The operator view in a real browser: the system Chromium, driven by Playwright, against `shopfloor api`.

A machine gets four hours of history (five tags, one reading a minute), six state changes and a running stage;
the test logs in through the form, opens the machine, and checks what an operator would look at: the charts are
drawn from that history (plotted point counts and values, and line pixels on the canvases), the state timeline
and its totals, the OEE of the stage, live updates, and a tablet-sized layout. A second machine's torque sensor
went uncertain and bad for a while: its chart greys those spans and its current value says so. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, expect
from sqlalchemy import insert

from api.ui.router import CONTENT_SECURITY_POLICY, STATIC_DIR
from core.contract import MachineState, QualityLevel
from core.db import create_engine_from_settings
from core.models import (
    Gateway,
    Machine,
    MachineLatest,
    MachineStateChange,
    Reading,
    Role,
    StageAssignment,
    StageEvent,
    StageEventKind,
    StageStatus,
    UserAccount,
    WorkOrder,
    WorkOrderStage,
)
from core.schema import upgrade
from core.settings import DatabaseSettings
from tests.support.api import bearer
from tests.support.browser import chromium, require_chromium, serve_api
from tests.support.factories import TEST_PASSWORD, password_hash

pytestmark = pytest.mark.browser
# Two shared cores may be busy with other tiers: give the page time, still far below a hang.
expect.set_options(timeout=15_000)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HOURS = 4
TAGS = ("barrel_temp_c", "cycle_count", "good_count", "injection_pressure_bar", "scrap_count")
# The first two tags by name are charted by default; the test adds the third with its chip.
DEFAULT_CHARTED = ("barrel_temp_c", "cycle_count")
ADDED_TAG = "injection_pressure_bar"
SERIES_RGB = {"barrel_temp_c": (37, 99, 235), "cycle_count": (217, 119, 6), ADDED_TAG: (5, 150, 105)}
# Offsets from now (minutes) and the state that began then: alarm, setup and idle last 15, 15 and 10 minutes.
PERCENT = re.compile(r"^\d+\.\d %$")
STATE_PLAN = ((-240, "running"), (-150, "alarm"), (-135, "setup"), (-120, "running"), (-40, "idle"), (-30, "running"))
# The second machine's hour before it went offline, one reading a minute: minutes of torque_nm that were not good.
FLAWED_MINUTES = 60
TORQUE_QUALITY = {
    **dict.fromkeys(range(20, 30), QualityLevel.BAD),
    **dict.fromkeys(range(30, 40), QualityLevel.UNCERTAIN),
    **dict.fromkeys(range(55, 60), QualityLevel.BAD),
}
# Besides, an uncertain torque reading half a minute into this minute: a bucket with good and not-good readings.
MIXED_MINUTE = 45


@dataclass(frozen=True)
class Site:
    """What was seeded: the machine to open, the values a chart must show, the database, the stage running."""

    machine_id: int
    machine_name: str
    flawed_machine_id: int
    values: dict[str, list[float]]
    database_url: str
    stage_id: int


def require_prerequisites() -> None:
    """Fail (never skip) with the command that fixes a missing browser or bundle."""
    require_chromium()
    if not (STATIC_DIR / "index.html").is_file():
        pytest.fail(f"the operator view is not built ({STATIC_DIR} has no index.html): run `make ui`")


def _series(tag: str, minute: int) -> float:
    """The seeded value of `tag` at minute `minute` of the history (0 = the oldest)."""
    if tag == "barrel_temp_c":
        return round(212.0 + 6.0 * math.sin(minute / 20), 2)
    if tag == "injection_pressure_bar":
        return round(95.0 + 12.0 * math.cos(minute / 33) + (minute % 7) * 0.4, 2)
    if tag == "cycle_count":
        return float(10_000 + 2 * minute)
    if tag == "scrap_count":
        return float(minute // 40)
    return float(10_000 + 2 * minute - minute // 40)  # good_count


@pytest.fixture
async def site(tmp_path: Path) -> Site:
    """A SQLite database with two machines, a worker and a planner, history, states and a running stage."""
    url = f"sqlite:///{tmp_path / 'operator-view.db'}"
    upgrade(url)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=HOURS)
    minutes = HOURS * 60
    values = {tag: [_series(tag, minute) for minute in range(minutes)] for tag in TAGS}
    engine = create_engine_from_settings(DatabaseSettings(database_url=url))
    async with engine.begin() as conn:
        user_ids = {}
        for name, role in (("operator", Role.WORKER), ("planner", Role.PLANNER)):
            user_ids[name] = (
                await conn.execute(
                    insert(UserAccount)
                    .values(username=name, role=role, is_active=True, password_hash=password_hash())
                    .returning(UserAccount.id)
                )
            ).scalar_one()
        worker_id = user_ids["operator"]
        machine_id = (
            await conn.execute(
                insert(Machine)
                .values(
                    site="plant1",
                    code="press-7",
                    name="Press 7",
                    machine_type="injection",
                    location="Hall A",
                    ideal_cycle_time_s=22.0,
                    online=True,
                    last_seen_at=now,
                )
                .returning(Machine.id)
            )
        ).scalar_one()
        flawed_machine_id = (
            await conn.execute(
                insert(Machine)
                .values(site="plant1", code="assembly-2", name="Assembly 2", online=False, last_seen_at=start)
                .returning(Machine.id)
            )
        ).scalar_one()
        await conn.execute(insert(Reading), _flawed_readings(flawed_machine_id, start))
        # A gateway cut off from the broker for ten minutes: its disk buffer holds 24,000 readings.
        await conn.execute(
            insert(Gateway).values(
                site="plant1", gateway_id="gw-hall-b", online=False, status_at=now, backlog_messages=120,
                backlog_readings=24000, backlog_oldest_age_s=600, backlog_bytes=1 << 20, backlog_max_bytes=1 << 30,
                backlog_seconds_to_full=36000,
            )
        )  # fmt: skip
        await conn.execute(
            insert(MachineLatest),
            [
                {"machine_id": flawed_machine_id, "tag": "spindle_rpm", "ts": start, "value": 1_450.0, "quality": None},
                {
                    "machine_id": flawed_machine_id,
                    "tag": "torque_nm",
                    "ts": start,
                    "value": None,
                    "quality": QualityLevel.BAD,
                },
            ],
        )
        await conn.execute(
            insert(Reading),
            [
                {"machine_id": machine_id, "tag": tag, "ts": start + timedelta(minutes=minute), "value": value}
                for tag, series in values.items()
                for minute, value in enumerate(series)
            ],
        )
        await conn.execute(
            insert(MachineLatest),
            [
                {
                    "machine_id": machine_id,
                    "tag": tag,
                    "ts": start + timedelta(minutes=minutes - 1),
                    "value": series[-1],
                }
                for tag, series in values.items()
            ],
        )
        await conn.execute(
            insert(MachineStateChange),
            [
                {"machine_id": machine_id, "ts": now + timedelta(minutes=offset), "state": MachineState(state)}
                for offset, state in STATE_PLAN
            ],
        )
        work_order_id = (
            await conn.execute(
                insert(WorkOrder)
                .values(
                    product_code="CAP-32",
                    lot_no="L-0042",
                    qty=500,
                    planned_start=start,
                    planned_end=now + timedelta(hours=4),
                )
                .returning(WorkOrder.id)
            )
        ).scalar_one()
        stage_id = (
            await conn.execute(
                insert(WorkOrderStage)
                .values(
                    work_order_id=work_order_id,
                    position=1,
                    stage_name="Enjeksiyon",
                    planned_start=start,
                    planned_end=now + timedelta(hours=4),
                    machine_id=machine_id,
                    status=StageStatus.IN_PROGRESS,
                )
                .returning(WorkOrderStage.id)
            )
        ).scalar_one()
        await conn.execute(insert(StageAssignment).values(stage_id=stage_id, user_id=worker_id))
        await conn.execute(
            insert(StageEvent).values(stage_id=stage_id, kind=StageEventKind.START, at=start, user_id=worker_id)
        )
    await engine.dispose()
    return Site(
        machine_id=machine_id,
        machine_name="Press 7",
        flawed_machine_id=flawed_machine_id,
        values=values,
        database_url=url,
        stage_id=stage_id,
    )


def _flawed_readings(machine_id: int, end: datetime) -> list[dict[str, object]]:
    """The hour before `end` of the second machine: spindle_rpm all good, torque_nm as TORQUE_QUALITY says (bad
    readings without a value) plus one uncertain reading inside MIXED_MINUTE."""
    start = end - timedelta(minutes=FLAWED_MINUTES)
    rows: list[dict[str, object]] = []
    for minute in range(FLAWED_MINUTES):
        ts = start + timedelta(minutes=minute)
        rows.append({"machine_id": machine_id, "tag": "spindle_rpm", "ts": ts, "value": 1_450.0, "quality": None})
        quality = TORQUE_QUALITY.get(minute)
        value = None if quality is QualityLevel.BAD else 40.0 + minute % 5
        rows.append({"machine_id": machine_id, "tag": "torque_nm", "ts": ts, "value": value, "quality": quality})
    mixed = start + timedelta(minutes=MIXED_MINUTE, seconds=30)
    rows.append(
        {"machine_id": machine_id, "tag": "torque_nm", "ts": mixed, "value": 80.0, "quality": QualityLevel.UNCERTAIN}
    )
    return rows


@pytest.fixture
def server(site: Site, tmp_path: Path) -> Iterator[str]:
    """`shopfloor api` on a free port over the seeded database; answers its base URL."""
    yield from serve_api(site.database_url, tmp_path)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """The system Chromium (never a downloaded one)."""
    require_prerequisites()
    async with chromium() as launched:
        yield launched


async def series_pixels(page: Page, tag: str) -> dict[str, int]:
    """Pixels of the chart's canvas in its series colour (opaque, so the translucent fill is not counted)."""
    result: dict[str, int] = await page.evaluate(
        """([tag, rgb]) => {
            const canvas = document.querySelector(`[data-chart-tag="${tag}"] canvas`);
            const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            let series = 0;
            let painted = 0;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i + 3] === 0) continue;
                painted += 1;
                const near = [0, 1, 2].every((c) => Math.abs(data[i + c] - rgb[c]) <= 40);
                if (near && data[i + 3] >= 200) series += 1;
            }
            return { series, painted, width: canvas.width, height: canvas.height };
        }""",
        [tag, list(SERIES_RGB[tag])],
    )
    return result


def watch_console(page: Page) -> list[str]:
    """Collect uncaught errors and console errors; a CSP violation would show up here."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # The wrong-password attempt makes Chromium log the 401 it got; that one is expected.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    return problems


async def test_operator_logs_in_and_reads_the_machine(browser: Browser, server: str, site: Site) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)

    response = await page.goto(f"{server}/ui")
    assert response is not None
    assert response.status == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

    # Login: a wrong password is refused with a message, the right one opens the machine list.
    await page.get_by_label("Username").fill("operator")
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    await page.screenshot(path=ARTIFACTS / "operator-view-login.png")
    await page.get_by_label("Password").fill(TEST_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#app[data-view=machines][data-loaded=true]")).to_be_attached()
    await expect(page.locator("#user-name")).to_have_text("operator (worker)")

    cards = page.locator(".machine-card")
    await expect(cards).to_have_count(2)
    press = cards.filter(has_text="Press 7")
    await expect(press.locator(".state-badge")).to_have_text("Running")
    await expect(press.locator(".online-dot")).to_have_attribute("data-online", "online")
    await expect(cards.filter(has_text="Assembly 2").locator(".online-dot")).to_have_attribute("data-online", "offline")
    await expect(page.locator("[data-ref=summary]")).to_have_text("2 machines · 1 online")
    await page.screenshot(path=ARTIFACTS / "operator-view-machines.png")

    # The machine: header, current values, two charts by default, then a third tag added with its chip.
    await press.click()
    loaded = page.locator("#app[data-view=machine][data-loaded=true]")
    await expect(loaded).to_be_attached()
    await expect(page.locator("h1")).to_have_text(site.machine_name)
    await expect(page.locator(".machine-head .state-badge")).to_have_attribute("data-state", "running")
    await expect(page.locator("[data-ref=values] tr")).to_have_count(len(TAGS))
    await expect(page.locator("[data-ref=values] tr[data-tag=cycle_count] td.num")).to_have_text(
        f"{int(site.values['cycle_count'][-1]):,}"
    )
    charts = page.locator("[data-chart-tag]")
    await expect(charts).to_have_count(len(DEFAULT_CHARTED))
    await page.locator(f".tag-chip[data-tag={ADDED_TAG}]").click()
    await expect(charts).to_have_count(len(DEFAULT_CHARTED) + 1)
    await expect(loaded).to_be_attached()
    assert f"tags={','.join((*DEFAULT_CHARTED, ADDED_TAG))}" in page.url

    # The default range (8 h) holds all four hours: one reading a minute, so one 1-minute bucket each.
    for tag in (*DEFAULT_CHARTED, ADDED_TAG):
        chart = page.locator(f"[data-chart-tag={tag}]")
        await expect(chart).to_have_attribute("data-points", str(HOURS * 60))
        await expect(chart).to_have_attribute("data-bucket", "1m")
        assert float(await chart.get_attribute("data-y-min") or "nan") == pytest.approx(min(site.values[tag]))
        assert float(await chart.get_attribute("data-y-max") or "nan") == pytest.approx(max(site.values[tag]))
        pixels = await series_pixels(page, tag)
        # The line crosses half the plot (4 h of 8 h): far more line-coloured pixels than the plot is wide / 4.
        assert pixels["series"] > pixels["width"] / 4, (tag, pixels)

    # The state timeline over the same range: the six seeded intervals, in order, with their totals.
    segments = page.locator("[data-ref=timeline] .segment")
    await expect(segments).to_have_count(len(STATE_PLAN))
    assert [await segment.get_attribute("data-state") for segment in await segments.all()] == [
        state for _, state in STATE_PLAN
    ]
    totals = page.locator("[data-ref=totals]")
    await expect(totals.locator("li[data-state=alarm]")).to_have_attribute("data-seconds", "900")
    await expect(totals.locator("li[data-state=setup]")).to_have_attribute("data-seconds", "900")
    await expect(totals.locator("li[data-state=idle]")).to_have_attribute("data-seconds", "600")
    await expect(totals.locator("li[data-state=alarm]")).to_contain_text("Alarm 15 min")
    first_segment = await segments.first.bounding_box()
    assert first_segment is not None
    assert first_segment["width"] > 100  # two and a half hours of running, on a bar over 1 000 px wide

    # OEE of the running stage.
    oee = page.locator("[data-ref=oee]")
    await expect(oee).to_have_attribute("data-state", "shown")
    await expect(page.locator("[data-ref=oee-context]")).to_contain_text("Stage Enjeksiyon")
    await expect(page.locator("[data-ref=oee-context]")).to_contain_text("CAP-32, lot L-0042")
    for field in ("oee", "availability", "performance", "quality"):
        await expect(oee.locator(f".figure[data-field={field}] .figure-value")).to_have_text(PERCENT)

    await page.screenshot(path=ARTIFACTS / "operator-view.png", full_page=True)
    print(f"\nscreenshot: {ARTIFACTS / 'operator-view.png'}")

    # Live: a reading and an alarm posted over HTTP show up without reloading the page.
    await expect(page.locator("[data-ref=mode]")).to_have_attribute("data-mode", "live")
    async with httpx.AsyncClient(base_url=server) as client:
        login = await client.post("/auth/login", json={"username": "planner", "password": TEST_PASSWORD})
        token = login.json()["access_token"]
        posted = await client.post(
            f"/machines/{site.machine_id}/readings",
            headers=bearer(token),
            json={"ts": datetime.now(UTC).isoformat(), "values": {"barrel_temp_c": 777.5, "state": "alarm"}},
        )
        assert posted.status_code == 200, posted.text
    await expect(page.locator("[data-ref=values] tr[data-tag=barrel_temp_c] td.num")).to_have_text("777.5")
    await expect(page.locator(".machine-head .state-badge")).to_have_attribute("data-state", "alarm")

    # A tablet in portrait: nothing wider than the screen, the charts fit it.
    await page.set_viewport_size({"width": 820, "height": 1180})
    await expect(charts.first).to_have_attribute("data-points", str(HOURS * 60))
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    chart_box = await charts.first.bounding_box()
    assert chart_box is not None
    assert chart_box["width"] <= 820
    await page.screenshot(path=ARTIFACTS / "operator-view-tablet.png", full_page=True)
    print(f"screenshot: {ARTIFACTS / 'operator-view-tablet.png'}")

    assert problems == []
    await context.close()


async def log_in(page: Page, username: str = "operator") -> None:
    """Fill the login form and send it, in whichever language it is shown."""
    form = page.locator("#login-form")
    await form.locator("input[name=username]").fill(username)
    await form.locator("input[name=password]").fill(TEST_PASSWORD)
    await form.locator("button[type=submit]").click()


async def test_login_and_machines_in_turkish_then_english(browser: Browser, server: str, site: Site) -> None:
    """A Turkish browser gets the login form and the machine views in Turkish; the switch (on the login screen too)
    turns them English. The list shows each machine's state, since when and its running stage from GET /machines
    alone: no request per machine."""
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="tr-TR", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    paths: list[str] = []
    page.on("request", lambda request: paths.append(request.url.removeprefix(server).partition("?")[0]))

    await page.goto(f"{server}/ui")
    await expect(page.locator("html")).to_have_attribute("lang", "tr")
    await expect(page.locator("#app h1")).to_have_text("Operatör ekranı")
    await expect(page.locator("#language")).to_have_text("English")
    await page.get_by_label("Kullanıcı adı").fill("operator")
    await page.get_by_label("Şifre").fill("not-the-password")
    await page.get_by_role("button", name="Giriş yap").click()
    await expect(page.get_by_role("alert")).to_have_text("Kullanıcı adı veya şifre yanlış.")
    await page.get_by_label("Şifre").fill(TEST_PASSWORD)
    await page.get_by_role("button", name="Giriş yap").click()

    await expect(page.locator("#app[data-view=machines][data-loaded=true]")).to_be_attached()
    await expect(page.locator("#app h1")).to_have_text("Makineler")
    await expect(page.locator("#user-name")).to_have_text("operator (operatör)")
    await expect(page.locator("[data-ref=summary]")).to_have_text("2 makine · 1 çevrimiçi")
    press = page.locator(".machine-card").filter(has_text="Press 7")
    # The last seeded state: running since 30 minutes before the fixture's minute.
    await expect(press.locator(".state-badge")).to_have_text("Çalışıyor")
    await expect(press.locator("[data-ref=since]")).to_have_text(re.compile(r"itibarıyla \(3[01] dk\)$"))
    await expect(press.locator("[data-ref=stage]")).to_have_text(f"İş #{site.stage_id}")
    assembly = page.locator(".machine-card").filter(has_text="Assembly 2")
    await expect(assembly.locator(".state-badge")).to_have_text("Bilinmiyor")
    await expect(assembly.locator("[data-ref=seen]")).to_contain_text("çevrimdışı · son görülme")
    assert "/machines" in paths
    assert [path for path in paths if path.startswith("/machines/")] == []
    # What waits at the edge: the gateway's backlog, how old, and how long its disk lasts.
    await expect(page.locator(".gateway[data-gateway=gw-hall-b]")).to_have_text(
        "plant1 / gw-hall-b24.000 okuma bekliyor · en eskisi 10 dk · disk 10 sa 00 dk içinde dolar"
    )
    await page.screenshot(path=ARTIFACTS / "operator-view-machines-tr.png")

    # The machine in Turkish: its values, the timeline's states and totals, the stage's OEE.
    await press.click()
    await expect(page.locator("#app[data-view=machine][data-loaded=true]")).to_be_attached()
    await expect(page.locator(".values-card h2")).to_have_text("Güncel değerler")
    await expect(page.locator(".machine-head .state-badge")).to_have_text("Çalışıyor")
    await expect(page.locator(".ranges [data-range='7d']")).to_have_text("7 gün")
    await expect(page.locator("[data-ref=totals] li[data-state=alarm]")).to_have_text("Alarmda 15 dk")
    await expect(page.locator("[data-ref=oee-context]")).to_contain_text("İş Enjeksiyon · iş emri")
    await expect(page.locator("[data-ref=oee] .figure[data-field=availability] .figure-label")).to_have_text(
        "Kullanılabilirlik"
    )

    # Switched: the same machine in English, then the list.
    await page.locator("#language").click()
    await expect(page.locator("#app[data-view=machine][data-loaded=true]")).to_be_attached()
    await expect(page.locator(".values-card h2")).to_have_text("Current values")
    await expect(page.locator(".machine-head .state-badge")).to_have_text("Running")
    await expect(page.locator("[data-ref=totals] li[data-state=alarm]")).to_have_text("Alarm 15 min")
    await page.get_by_role("link", name="← Machines").click()
    await expect(page.locator("#app[data-view=machines][data-loaded=true]")).to_be_attached()
    await expect(page.locator("[data-ref=summary]")).to_have_text("2 machines · 1 online")
    await expect(press.locator(".state-badge")).to_have_text("Running")
    await expect(press.locator("[data-ref=since]")).to_have_text(re.compile(r"^since .* \(3[01] min\)$"))
    await expect(press.locator("[data-ref=stage]")).to_have_text(f"Stage #{site.stage_id}")

    # Logged out, the form is English; the switch on the login screen makes it Turkish again.
    await page.locator("#logout").click()
    await expect(page.get_by_role("button", name="Log in")).to_be_visible()
    await expect(page.get_by_label("Username")).to_be_visible()
    await page.locator("#language").click()
    await expect(page.get_by_role("button", name="Giriş yap")).to_be_visible()
    await expect(page.get_by_label("Kullanıcı adı")).to_be_visible()
    await expect(page.locator("html")).to_have_attribute("lang", "tr")
    assert problems == []
    await context.close()


async def test_a_deep_link_without_the_stream_falls_back_to_polling(browser: Browser, server: str, site: Site) -> None:
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    # An API without the stream route (or a proxy that drops it): the page must poll instead.
    await page.route("**/machines/*/stream*", lambda route: route.fulfill(status=404, body=""))

    await page.goto(f"{server}/ui#/machines/{site.machine_id}?range=1h&tags=injection_pressure_bar")
    await log_in(page)
    await expect(page.locator("#app[data-view=machine][data-loaded=true]")).to_be_attached()
    await expect(page.locator("[data-ref=mode]")).to_have_attribute("data-mode", "polling")
    # The deep link's range and tag: one chart, 1 hour of one-minute buckets (the last reading is a minute old).
    chart = page.locator("[data-chart-tag]")
    await expect(chart).to_have_count(1)
    await expect(chart).to_have_attribute("data-chart-tag", "injection_pressure_bar")
    points = int(await chart.get_attribute("data-points") or "0")
    assert 59 <= points <= 61
    await expect(page.locator(".ranges [data-range='1h']")).to_have_attribute("aria-pressed", "true")

    async with httpx.AsyncClient(base_url=server) as client:
        login = await client.post("/auth/login", json={"username": "planner", "password": TEST_PASSWORD})
        posted = await client.post(
            f"/machines/{site.machine_id}/readings",
            headers=bearer(login.json()["access_token"]),
            json={"ts": datetime.now(UTC).isoformat(), "values": {"injection_pressure_bar": 55.25}},
        )
        assert posted.status_code == 200, posted.text
    await expect(page.locator("[data-ref=values] tr[data-tag=injection_pressure_bar] td.num")).to_have_text("55.25")
    assert problems == []
    await context.close()


async def test_the_live_view_opens_each_stream_with_a_new_ticket(browser: Browser, server: str, site: Site) -> None:
    """No token in any URL; when a stream ends the page asks for a new ticket (the browser's own reconnect would
    reuse the spent one) and is live again."""
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(f"{request.method} {request.url}"))
    # The first stream ends right after it opened, as one does when the API restarts.
    status = json.dumps({"machine_id": site.machine_id, "online": True, "last_seen_at": None})
    ended = f"retry: 100\n\nevent: status\ndata: {status}\n\n"
    await page.route(
        "**/machines/*/stream?*",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=ended),
        times=1,
    )

    await page.goto(f"{server}/ui#/machines/{site.machine_id}?range=1h&tags=injection_pressure_bar")
    await log_in(page)
    await expect(page.locator("#app[data-view=machine][data-loaded=true]")).to_be_attached()
    stream_path = f"/machines/{site.machine_id}/stream"
    for _ in range(200):
        if len([url for url in urls if f"GET {server}{stream_path}?" in url]) >= 2:
            break
        await page.wait_for_timeout(50)
    await expect(page.locator("[data-ref=mode]")).to_have_attribute("data-mode", "live")
    tickets = [url for url in urls if url == f"POST {server}{stream_path}/ticket"]
    streams = [url.partition("?")[2] for url in urls if f"GET {server}{stream_path}?" in url]
    assert len(tickets) == 2
    assert len(streams) == 2
    assert all(query.startswith("ticket=") for query in streams)
    assert streams[0] != streams[1]
    assert not [url for url in urls if "access_token" in url]

    async with httpx.AsyncClient(base_url=server) as client:
        login = await client.post("/auth/login", json={"username": "planner", "password": TEST_PASSWORD})
        posted = await client.post(
            f"/machines/{site.machine_id}/readings",
            headers=bearer(login.json()["access_token"]),
            json={"ts": datetime.now(UTC).isoformat(), "values": {"injection_pressure_bar": 66.5}},
        )
        assert posted.status_code == 200, posted.text
    await expect(page.locator("[data-ref=values] tr[data-tag=injection_pressure_bar] td.num")).to_have_text("66.5")
    assert problems == []
    await context.close()


async def test_a_dead_access_token_is_renewed_and_logging_out_ends_the_login(
    browser: Browser, server: str, site: Site
) -> None:
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    await page.goto(f"{server}/ui")
    await log_in(page)
    await expect(page.locator("#app[data-view=machines][data-loaded=true]")).to_be_attached()
    first = json.loads(await page.evaluate("sessionStorage.getItem('shopfloor.session')"))
    # The access token dies (expired or revoked as far as the page knows); the refresh token is still good.
    await page.evaluate(
        """() => {
          const stored = JSON.parse(sessionStorage.getItem("shopfloor.session"));
          stored.token = "no-longer-valid";
          sessionStorage.setItem("shopfloor.session", JSON.stringify(stored));
        }"""
    )
    await page.goto(f"{server}/ui#/machines/{site.machine_id}")
    await expect(page.locator("#app[data-view=machine][data-loaded=true]")).to_be_attached()
    renewed = json.loads(await page.evaluate("sessionStorage.getItem('shopfloor.session')"))
    assert renewed["token"] != "no-longer-valid"  # (within the same second it may equal the first: same claims)
    assert renewed["refreshToken"] != first["refreshToken"]  # rotated
    await page.locator("#logout").click()
    await expect(page.locator("#app[data-view=login]")).to_be_attached()
    async with httpx.AsyncClient(base_url=server) as client:
        refused = await client.post("/auth/refresh", json={"refresh_token": renewed["refreshToken"]})
    assert refused.status_code == 401  # logging out ended the login on the server, not only in the tab
    await context.close()


@pytest.mark.parametrize(
    ("browser_path", "static", "says"),
    [
        ("missing/chromium", None, "run `make system-deps` (Debian package chromium)"),
        (None, "missing-static", "run `make ui`"),
    ],
)
def test_missing_browser_or_bundle_fails_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, browser_path: str | None, static: str | None, says: str
) -> None:
    """Without Chromium or the bundle the browser test must fail, never skip, and say what to run."""
    module = sys.modules[__name__]
    if browser_path:
        monkeypatch.setattr("tests.support.browser.CHROMIUM", tmp_path / browser_path)
    if static:
        monkeypatch.setattr(module, "STATIC_DIR", tmp_path / static)
    with pytest.raises(pytest.fail.Exception, match=re.escape(says)):
        require_prerequisites()


@pytest.fixture
def istanbul_server(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`shopfloor api` of a plant in Europe/Istanbul (+03:00 all year) over the seeded database."""
    monkeypatch.setenv("PLANT_TIMEZONE", "Europe/Istanbul")
    yield from serve_api(site.database_url, tmp_path)


async def test_times_are_shown_on_the_plant_clock(browser: Browser, istanbul_server: str, site: Site) -> None:
    # The browser is in UTC, the plant three hours ahead: the clock, the range and its inputs are the plant's.
    istanbul = ZoneInfo("Europe/Istanbul")
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(hours=2), now - timedelta(hours=1)
    query = f"range=custom&from={start.isoformat()}&to={end.isoformat()}&tags=cycle_count".replace("+", "%2B")
    await page.goto(f"{istanbul_server}/ui#/machines/{site.machine_id}?{query}")

    clock = page.locator("#plant-clock")
    await expect(clock).to_have_attribute("data-zone", "Europe/Istanbul")
    minutes = {f"{(now + timedelta(minutes=m)).astimezone(istanbul):%H:%M} Europe/Istanbul" for m in (0, 1, 2)}
    assert await clock.text_content() in minutes

    await log_in(page)
    await expect(page.locator("#app[data-view=machine][data-loaded=true]")).to_be_attached()
    inputs = page.locator("[data-ref=custom]")
    await expect(inputs.locator("input[name=from]")).to_have_value(f"{start.astimezone(istanbul):%Y-%m-%dT%H:%M}")
    await expect(inputs.locator("input[name=to]")).to_have_value(f"{end.astimezone(istanbul):%Y-%m-%dT%H:%M}")
    await expect(page.locator("[data-ref=range-label]")).to_contain_text(f"{start.astimezone(istanbul):%H:%M}")

    # A range typed in plant time is that instant: 30 minutes earlier than shown is 30 minutes earlier in UTC.
    earlier = start - timedelta(minutes=30)
    await inputs.locator("input[name=from]").fill(f"{earlier.astimezone(istanbul):%Y-%m-%dT%H:%M}")
    await inputs.get_by_role("button", name="Show").click()
    await expect(page.locator("#app[data-view=machine][data-loaded=true]")).to_be_attached()
    await expect(page.locator("[data-ref=range-label]")).to_contain_text(f"{earlier.astimezone(istanbul):%H:%M}")
    shown = await page.evaluate("new URLSearchParams(location.hash.split('?')[1]).get('from')")
    assert datetime.fromisoformat(shown) == earlier
    chart = page.locator("[data-chart-tag=cycle_count]")
    await expect(chart).to_have_attribute("data-points", "90")  # one reading a minute over the 90 minutes asked
    assert problems == []
    await context.close()


async def test_readings_that_are_not_good_are_greyed_out(browser: Browser, server: str, site: Site) -> None:
    """Uncertain and bad readings do not pass for measured values: the chart shades their spans grey and breaks the
    line where there is no good value, the current values panel marks a bad value and shows no number for it."""
    context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    await page.goto(f"{server}/ui#/machines/{site.flawed_machine_id}")
    await log_in(page)
    loaded = page.locator("#app[data-view=machine][data-loaded=true]")
    await expect(loaded).to_be_attached()

    # The current values: the bad torque greyed with its badge and no number, the good speed as ever.
    torque_row = page.locator("[data-ref=values] tr[data-tag=torque_nm]")
    await expect(torque_row).to_have_attribute("data-quality", "bad")
    await expect(torque_row.locator(".quality-badge")).to_have_text("bad")
    await expect(torque_row.locator(".value")).to_have_text("—")
    speed_row = page.locator("[data-ref=values] tr[data-tag=spindle_rpm]")
    await expect(speed_row).to_have_attribute("data-quality", "good")
    await expect(speed_row.locator(".quality-badge")).to_have_count(0)
    await expect(speed_row.locator(".value")).to_have_text("1,450")

    # The charts (1-minute buckets over 8 h): only buckets with a good value are plotted; the not-good ones are bands.
    torque = page.locator("[data-chart-tag=torque_nm]")
    await expect(torque).to_have_attribute("data-bucket", "1m")
    good_minutes = FLAWED_MINUTES - len(TORQUE_QUALITY)
    await expect(torque).to_have_attribute("data-points", str(good_minutes))
    await expect(torque).to_have_attribute("data-not-good", str(len(TORQUE_QUALITY) + 1))
    await expect(torque.locator(".quality-note")).to_have_text(f"Not good: {len(TORQUE_QUALITY) + 1} readings")
    # Minutes 20-39 (bad, then uncertain: no good value either way) are one band, 55-59 another; minute 45 is lighter.
    not_good = torque.locator(".quality-band[data-quality=not-good]")
    await expect(not_good).to_have_count(2)
    assert [await band.get_attribute("data-readings") for band in await not_good.all()] == ["20", "5"]
    await expect(torque.locator(".quality-band[data-quality=partly-good]")).to_have_attribute("data-readings", "1")
    plot = await torque.locator(".u-over").bounding_box()
    band = await not_good.first.bounding_box()
    assert plot is not None
    assert band is not None
    # 20 minutes of the 8 hours shown, inside the plotting area.
    assert band["width"] == pytest.approx(plot["width"] * 20 / (8 * 60), rel=0.1)
    assert plot["x"] <= band["x"] < band["x"] + band["width"] <= plot["x"] + plot["width"]
    speed = page.locator("[data-chart-tag=spindle_rpm]")
    await expect(speed).to_have_attribute("data-points", str(FLAWED_MINUTES))
    await expect(speed.locator(".quality-band")).to_have_count(0)
    await expect(speed.locator(".quality-note")).to_be_hidden()
    await page.screenshot(path=ARTIFACTS / "operator-view-quality.png", full_page=True)

    # In Turkish.
    await page.locator("#language").click()
    await expect(loaded).to_be_attached()
    await expect(page.locator("[data-ref=values] tr[data-tag=torque_nm] .quality-badge")).to_have_text("kötü")
    await expect(page.locator("[data-chart-tag=torque_nm] .quality-note")).to_have_text(
        f"İyi olmayan: {len(TORQUE_QUALITY) + 1} okuma"
    )
    assert problems == []
    await context.close()
