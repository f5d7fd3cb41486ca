"""The worker's tablet and the manager's page in a real browser (the system Chromium, driven by Playwright).

A press ran for three hours with one 20-minute stop nobody has explained yet, and the worker has one planned stage on
it. The worker starts it, reports counts, pauses and resumes, finishes it with scrap lines, reports an issue and
classifies the stop, in English on a landscape tablet and in Turkish on a portrait one; the Turkish run does most of
it with the network cut, and everything must reach the API once, in order, when the network returns. The manager
reads OEE by shift and the loss Pareto, and classifies the stop from there; the current shift's card follows the
shift live. A planner keeps the plant calendar (in Turkish) and an admin retires a loss reason. What reached the API is
checked over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, Route, expect
from sqlalchemy.ext.asyncio import async_sessionmaker

from core.contract import MachineState
from core.db import create_engine_from_settings
from core.models import Role, StageAssignment
from core.schema import upgrade
from core.settings import DatabaseSettings
from tests.browser.test_operator_view import ARTIFACTS, log_in, require_prerequisites, watch_console
from tests.support.api import bearer
from tests.support.browser import chromium, serve_api
from tests.support.factories import TEST_PASSWORD, add_readings, add_states, make_machine, make_user, make_work_order

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)

HOURS = 3
STOP_FROM, STOP_TO = 50, 30  # minutes before now: the unexplained stop


@dataclass(frozen=True)
class Plant:
    """What was seeded: the press, the worker's stage, when the stop began, the database, and "now" of the history
    (the minute its last reading closes)."""

    machine_id: int
    stage_id: int
    stop_start: datetime
    database_url: str
    now: datetime


@pytest.fixture
async def plant(tmp_path: Path) -> Plant:
    """A press with three hours of counters and states, one 20-minute stop, and a planned stage for `operator`; a
    `planner` and an `admin` besides."""
    url = f"sqlite:///{tmp_path / 'tablet.db'}"
    upgrade(url)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=HOURS)
    stop_start, stop_end = now - timedelta(minutes=STOP_FROM), now - timedelta(minutes=STOP_TO)
    engine = create_engine_from_settings(DatabaseSettings(database_url=url))
    async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        worker = await make_user(session, "operator")
        await make_user(session, "planner", Role.PLANNER)
        await make_user(session, "admin", Role.ADMIN)
        press = await make_machine(session, "press-7", name="Press 7", ideal_cycle_time_s=30.0, online=True)
        await add_states(
            session,
            press.id,
            [(start, MachineState.RUNNING), (stop_start, MachineState.IDLE), (stop_end, MachineState.RUNNING)],
        )
        # A reading a minute vouches for the state (data gaps are unknown); the counter is flat during the stop.
        counts, rows = 0, []
        for minute in range(HOURS * 60):
            at = start + timedelta(minutes=minute)
            counts += 0 if stop_start <= at < stop_end else 2
            rows += [("cycle_count", at, float(counts)), ("good_count", at, float(counts))]
        await add_readings(session, press.id, rows)
        order = await make_work_order(
            session,
            start=now - timedelta(hours=1),
            stage_hours=4,
            stage_names=["Enjeksiyon"],
            machine_id=press.id,
            product_code="CAP-32",
            lot_no="L-0042",
            qty=500,
        )
        stage = order.stages[0]
        session.add(StageAssignment(stage_id=stage.id, user_id=worker.id))
    await engine.dispose()
    return Plant(machine_id=press.id, stage_id=stage.id, stop_start=stop_start, database_url=url, now=now)


@pytest.fixture
def server(plant: Plant, tmp_path: Path) -> Iterator[str]:
    """`shopfloor api` over the seeded database."""
    yield from serve_api(plant.database_url, tmp_path)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """The system Chromium."""
    require_prerequisites()
    async with chromium() as launched:
        yield launched


async def planner_get(server: str, path: str, **params: Any) -> Any:
    """GET `path` as the planner: what reached the API, seen from outside the browser."""
    async with httpx.AsyncClient(base_url=server) as client:
        login = await client.post("/auth/login", json={"username": "planner", "password": TEST_PASSWORD})
        response = await client.get(path, params=params, headers=bearer(login.json()["access_token"]))
        assert response.status_code == 200, response.text
        return response.json()


async def downtimes(server: str, plant: Plant) -> list[dict[str, Any]]:
    """The press's stops over its history."""
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=HOURS)).isoformat(), "to": now.isoformat()}
    events: list[dict[str, Any]] = (await planner_get(server, f"/machines/{plant.machine_id}/downtimes", **window))[
        "events"
    ]
    return events


async def open_stage(page: Page, server: str, plant: Plant, stage_name: str = "Enjeksiyon") -> None:
    """Log in as the worker, open the tablet from the top bar and the stage from the list."""
    await page.goto(f"{server}/ui#/tablet")
    await log_in(page)
    await expect(page.locator("#app[data-view=tablet][data-loaded=true]")).to_be_attached()
    await page.locator(f".stage-card[data-stage-id='{plant.stage_id}']").click()
    await expect(page.locator("#app[data-view=tablet-stage][data-loaded=true]")).to_be_attached()
    await expect(page.locator("h1")).to_have_text(stage_name)


async def assert_fits(page: Page) -> None:
    """Nothing wider than the screen, and every button a finger can hit (at least 48 px high)."""
    assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    heights = await page.locator("#app .tap:visible").evaluate_all("(all) => all.map((b) => b.offsetHeight)")
    assert heights
    assert min(heights) >= 48, heights


async def test_a_worker_runs_a_stage_from_the_tablet_in_english(browser: Browser, server: str, plant: Plant) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    keys: list[str] = []

    def on_request(request: Request) -> None:
        if request.method == "POST" and "/auth/" not in request.url:
            keys.append(request.headers.get("idempotency-key", ""))

    page.on("request", on_request)
    await open_stage(page, server, plant)
    status = page.locator("[data-ref=status]")
    await expect(status).to_have_text("Planned")

    await page.get_by_role("button", name="Start").click()
    await expect(status).to_have_text("Running")
    await page.get_by_label("Good quantity").fill("40")
    await page.get_by_role("button", name="Report counts").click()
    await page.get_by_label("Reason for the pause").fill("Mould cleaning")
    await page.get_by_role("button", name="Pause").click()
    await expect(status).to_have_text("Paused")
    await page.get_by_role("button", name="Resume").click()
    await expect(status).to_have_text("Running")

    # The issue: a type from the API's list (English labels), and what happened.
    await page.get_by_role("button", name="Machine breakdown").click()
    await page.get_by_label("What happened?").fill("Nozzle heater fails")
    await page.get_by_role("button", name="Report issue").click()

    # The stop: two taps, category then reason.
    stop = page.locator(".downtime")
    await expect(stop).to_have_count(1)
    await stop.get_by_role("button", name="Availability loss").click()
    await stop.get_by_role("button", name="Setup / changeover").click()
    await expect(page.locator("[data-ref=downtimes]")).to_contain_text("No unclassified stops.")

    # Done with the total good and two scrap lines, on the same screen.
    await page.get_by_label("Good quantity").fill("120")
    for reason, qty in (("short_shot", "3"), ("flash", "2")):
        await page.get_by_role("button", name="+ Scrap line").click()
        line = page.locator(".scrap-line").last
        await line.get_by_label("Scrap reason").select_option(reason)
        await line.get_by_label("Scrap quantity").fill(qty)
    await assert_fits(page)
    await page.screenshot(path=ARTIFACTS / "tablet-stage-en.png", full_page=True)
    await page.get_by_role("button", name="Done").click()
    await expect(status).to_have_text("Done")
    await expect(page.locator("[data-ref=pending]")).to_be_hidden()

    stage = await planner_get(server, f"/stages/{plant.stage_id}")
    assert (stage["status"], stage["good_qty"], stage["scrap_qty"]) == ("done", 120, 5)
    assert stage["scrap_by_reason"] == {"short_shot": 3, "flash": 2}
    events = await planner_get(server, f"/stages/{plant.stage_id}/events")
    assert [(event["kind"], event["reason"]) for event in events] == [
        ("start", None),
        ("pause", "Mould cleaning"),
        ("resume", None),
        ("done", None),
    ]
    issues = await planner_get(server, f"/stages/{plant.stage_id}/issues")
    assert [(issue["type"], issue["description"]) for issue in issues] == [("machine_breakdown", "Nozzle heater fails")]
    [event] = await downtimes(server, plant)
    assert (event["reason_code"], datetime.fromisoformat(event["start"])) == ("setup", plant.stop_start)
    # Seven actions, each with its own key.
    assert len(keys) == 7
    assert all(keys)
    assert len(set(keys)) == 7

    # Portrait: still nothing wider than the screen.
    await page.set_viewport_size({"width": 768, "height": 1024})
    await page.goto(f"{server}/ui#/tablet")
    await expect(page.locator("#app[data-view=tablet][data-loaded=true]")).to_be_attached()
    await expect(page.locator("#app")).to_contain_text("No stages assigned to you.")
    assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert problems == []
    await context.close()


async def test_offline_actions_are_queued_and_arrive_once_in_turkish(
    browser: Browser, server: str, plant: Plant
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 768, "height": 1024}, locale="tr-TR", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    counts_keys: list[str] = []

    # The first answer to the counts is lost on the way back (the API did act): the tablet must retry with the same
    # key and the API must not count twice.
    async def lose_first_answer(route: Route) -> None:
        counts_keys.append(route.request.headers["idempotency-key"])
        response = await route.fetch()
        if len(counts_keys) == 1:
            await route.abort("connectionreset")
        else:
            await route.fulfill(response=response)

    await page.route("**/stages/*/counts", lose_first_answer)
    await open_stage(page, server, plant)
    await expect(page.locator(".topbar")).to_contain_text("İşlerim")
    status = page.locator("[data-ref=status]")
    await expect(status).to_have_text("Planlandı")
    await page.get_by_role("button", name="Başlat").click()
    await expect(status).to_have_text("Çalışıyor")
    await page.get_by_label("Sağlam adet").fill("10")
    await page.get_by_role("button", name="Adet bildir").click()
    pending = page.locator("[data-ref=pending]")
    await expect(pending).to_be_hidden()  # sent again after the lost answer
    assert len(counts_keys) == 2
    assert counts_keys[0] == counts_keys[1]
    assert (await planner_get(server, f"/stages/{plant.stage_id}"))["good_qty"] == 10

    # The network goes: an issue, the stop's reason and done are queued, in order, and shown.
    await context.set_offline(True)
    await page.get_by_role("button", name="Malzeme eksikliği").click()
    await page.get_by_label("Ne oldu?").fill("Granül bitti")
    await page.get_by_role("button", name="Sorun bildir").click()
    stop = page.locator(".downtime")
    await stop.get_by_role("button", name="Kullanılabilirlik kaybı").click()
    await stop.get_by_role("button", name="Malzeme eksik").click()
    await page.get_by_label("Sağlam adet").fill("200")
    await page.get_by_role("button", name="+ Hurda satırı").click()
    await page.locator(".scrap-line").get_by_label("Hurda nedeni").select_option("sink_marks")
    await page.locator(".scrap-line").get_by_label("Hurda adedi").fill("4")
    await page.get_by_role("button", name="Bitir").click()
    await expect(pending).to_have_attribute("data-count", "3")
    await expect(pending.locator("h2")).to_have_text("Gönderilmeyi bekliyor (3)")
    await expect(pending).to_contain_text("Çevrimdışı")
    await expect(pending.locator("li")).to_have_count(3)
    await page.screenshot(path=ARTIFACTS / "tablet-offline-tr.png", full_page=True)

    # Nothing reached the API meanwhile.
    assert (await planner_get(server, f"/stages/{plant.stage_id}"))["status"] == "in_progress"
    assert await planner_get(server, f"/stages/{plant.stage_id}/issues") == []
    # The queue outlives the page (localStorage), each action with the key it will be sent with.
    queued = json.loads(await page.evaluate("localStorage.getItem('shopfloor.pending-actions')"))
    assert [action["path"] for action in queued] == [
        f"/stages/{plant.stage_id}/issue",
        f"/machines/{plant.machine_id}/downtimes/classify",
        f"/stages/{plant.stage_id}/done",
    ]
    assert len({action["key"] for action in queued}) == 3

    await context.set_offline(False)
    await expect(pending).to_be_hidden()
    stage = await planner_get(server, f"/stages/{plant.stage_id}")
    assert (stage["status"], stage["good_qty"], stage["scrap_by_reason"]) == ("done", 200, {"sink_marks": 4})
    events = await planner_get(server, f"/stages/{plant.stage_id}/events")
    assert [event["kind"] for event in events] == ["start", "done"]
    issues = await planner_get(server, f"/stages/{plant.stage_id}/issues")
    assert [(issue["type"], issue["description"]) for issue in issues] == [("material_shortage", "Granül bitti")]
    [event] = await downtimes(server, plant)
    assert event["reason_code"] == "material_shortage"

    # The switch: English from now on, in this browser.
    await page.locator("#language").click()
    await expect(page.locator(".topbar")).to_contain_text("My stages")
    await expect(page.locator("#language")).to_have_text("Türkçe")
    assert problems == []
    await context.close()


async def test_the_manager_reads_oee_by_shift_and_works_through_the_stops(
    browser: Browser, server: str, plant: Plant
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    today = datetime.now(UTC).date()
    shifts = [
        {"name": name, "weekdays": list(range(7)), "start": start, "end": end, "breaks": []}
        for name, start, end in (("early", "06:00", "14:00"), ("late", "14:00", "22:00"), ("night", "22:00", "06:00"))
    ]
    pattern = {"valid_from": (today - timedelta(days=30)).isoformat(), "name": "Three shifts", "shifts": shifts}
    async with httpx.AsyncClient(base_url=server) as client:
        login = await client.post("/auth/login", json={"username": "planner", "password": TEST_PASSWORD})
        created = await client.post("/calendar/patterns", json=pattern, headers=bearer(login.json()["access_token"]))
        assert created.status_code == 201, created.text

    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    week_start = datetime.combine(today - timedelta(days=6), time(0), UTC)
    asked: list[dict[str, list[str]]] = []

    def on_request(request: Request) -> None:
        url = urlsplit(request.url)
        query = parse_qs(url.query)
        if (
            url.path == "/oee"
            and query["group_by"] == ["shift"]
            and datetime.fromisoformat(query["from"][0]) == week_start
        ):
            asked.append(query)

    page.on("request", on_request)
    await page.goto(f"{server}/ui#/manager?days=7")
    await log_in(page, "planner")
    loaded = page.locator("#app[data-view=manager][data-loaded=true]")
    await expect(loaded).to_be_attached()
    # The same figures as the API's, over the last seven production days from the plant's midnight (UTC here), up
    # to the moment the page asked for (the figures of a window that ends later differ: time has run on).
    assert asked, "the page never asked for the week by shift"
    week = {"from": week_start.isoformat(), "to": asked[-1]["to"][0]}
    shown = await planner_get(server, "/oee", machine_id=plant.machine_id, group_by="shift", **week)
    rows = page.locator("[data-ref=oee-rows] tbody tr")
    await expect(rows).to_have_count(len(shown["rows"]))
    assert len(shown["rows"]) >= 3 * 6
    await expect(page.locator("[data-ref=oee-rows] tfoot [data-field=availability]")).to_have_text(
        f"{shown['total']['availability'] * 100:.1f} %"
    )
    # The stop is the week's only loss, not explained yet: one bar of 20 minutes.
    pareto = page.locator("[data-ref=pareto] li")
    await expect(pareto).to_have_count(1)
    await expect(pareto).to_have_attribute("data-code", "unclassified")
    await expect(pareto).to_have_attribute("data-minutes", "20")
    await page.screenshot(path=ARTIFACTS / "manager.png", full_page=True)

    # Classified from here, the Pareto names the reason and the list is worked through.
    stop = page.locator(".downtime")
    await expect(stop).to_have_count(1)
    await stop.get_by_role("button", name="Availability loss").click()
    await stop.get_by_role("button", name="Breakdown").click()
    await expect(page.locator("[data-ref=pareto] li[data-code=breakdown]")).to_have_attribute("data-minutes", "20")
    await expect(page.locator("[data-ref=pareto] li")).to_have_count(1)
    await expect(page.locator("[data-ref=downtimes]")).to_contain_text("No unclassified stops.")
    [event] = await downtimes(server, plant)
    assert event["reason_code"] == "breakdown"

    # By day: one row a production day (and the night shift's day that began before the first midnight).
    await page.locator(".chip[data-by=day]").click()
    await expect(page.locator(".chip[data-by=day]")).to_have_attribute("aria-pressed", "true")
    await expect(loaded).to_be_attached()
    assert 7 <= await rows.count() <= 8
    assert problems == []
    await context.close()


async def test_the_manager_follows_the_current_shift(browser: Browser, server: str, plant: Plant) -> None:
    """The current-shift card: "no calendar" until there is one, then the running shift's OEE from its start to
    now, drawn again every 30 s (the page's clock is Playwright's, moved by hand) until the page is left."""
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    shift_start = plant.now - timedelta(hours=2)
    asked: list[dict[str, list[str]]] = []

    def on_request(request: Request) -> None:
        url = urlsplit(request.url)
        if url.path == "/oee" and parse_qs(url.query)["group_by"] == ["shift"]:
            asked.append(parse_qs(url.query))

    def shift_requests() -> list[dict[str, list[str]]]:
        """The card's OEE requests: from the shift's start."""
        return [query for query in asked if datetime.fromisoformat(query["from"][0]) == shift_start]

    page.on("request", on_request)
    await page.clock.install(time=plant.now - timedelta(minutes=1))
    await page.goto(f"{server}/ui#/manager")
    await page.clock.pause_at(plant.now - timedelta(seconds=30))
    await log_in(page, "planner")
    await expect(page.locator("#app[data-view=manager][data-loaded=true]")).to_be_attached()
    card = page.locator("[data-ref=current-shift]")
    await expect(card).to_have_attribute("data-state", "no_calendar")
    await expect(card).to_contain_text("No shift calendar, so no current shift to show.")

    # A shift that began two hours before the history's last minute and runs four more.
    shift = {
        "name": "A",
        "weekdays": list(range(7)),
        "start": f"{shift_start:%H:%M}",
        "end": f"{plant.now + timedelta(hours=4):%H:%M}",
        "breaks": [],
    }
    pattern = {"valid_from": f"{plant.now.date() - timedelta(days=30)}", "name": "One shift", "shifts": [shift]}
    async with httpx.AsyncClient(base_url=server) as client:
        login = await client.post("/auth/login", json={"username": "planner", "password": TEST_PASSWORD})
        created = await client.post("/calendar/patterns", json=pattern, headers=bearer(login.json()["access_token"]))
        assert created.status_code == 201, created.text

    # 30 s later the card finds the shift and shows its two hours by hand: 20 minutes stopped (not classified), 100
    # running at 2 parts a minute (200 parts of 30 s ideal cycle: 100 minutes' worth), all good.
    await page.clock.run_for(30_000)
    await expect(card).to_have_attribute("data-state", "shown")
    figures = {"availability": "83.3 %", "performance": "100.0 %", "quality": "100.0 %", "oee": "83.3 %"}
    for field, text in figures.items():
        await expect(card.locator(f".figure[data-field={field}] .figure-value")).to_have_text(text)
    await expect(card.locator("[data-field=run_min] dd")).to_have_text("100")
    await expect(card.locator("[data-field=unclassified_min] dd")).to_have_text("20")
    await expect(card.locator("[data-ref=shift-note]")).to_have_text(
        f"A ({shift_start:%H:%M} \N{EN DASH} {plant.now + timedelta(hours=4):%H:%M}) · up to {plant.now:%H:%M}"
    )
    [first] = shift_requests()
    assert datetime.fromisoformat(first["to"][0]) == plant.now
    await page.screenshot(path=ARTIFACTS / "manager-current-shift.png", full_page=True)

    # Another 30 s: asked again up to then. Still running, no new parts: 100.5 of 120.5 minutes. The server counts
    # an open state only up to its own clock, so that moment must have passed for real first (the history's "now" is
    # the minute the plant was seeded in; usually long past by here).
    await asyncio.sleep(max(0.0, (plant.now + timedelta(seconds=31) - datetime.now(UTC)).total_seconds()))
    await page.clock.run_for(30_000)
    await expect(card.locator("[data-field=run_min] dd")).to_have_text("100.5")
    await expect(card.locator(".figure[data-field=availability] .figure-value")).to_have_text("83.4 %")
    assert datetime.fromisoformat(shift_requests()[-1]["to"][0]) == plant.now + timedelta(seconds=30)

    # Left for the machine list, the page asks no more.
    await page.locator("#user-box").get_by_role("link", name="Machines").click()
    await expect(page.locator("#app[data-view=machines][data-loaded=true]")).to_be_attached()
    count = len(shift_requests())
    # The list's own 10-second refresh shows the clock's timers did run.
    async with page.expect_request(lambda request: urlsplit(request.url).path == "/machines"):
        await page.clock.run_for(90_000)
    assert len(shift_requests()) == count
    assert problems == []
    await context.close()


def first_workday_after(day: date) -> date:
    """The first Monday to Friday after `day` (at most three days on)."""
    return next(day + timedelta(days=n) for n in range(1, 4) if (day + timedelta(days=n)).weekday() < 5)


async def test_a_planner_keeps_the_plant_calendar_in_turkish(browser: Browser, server: str, plant: Plant) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="tr-TR", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    await page.goto(f"{server}/ui#/machines")
    await log_in(page, "planner")
    await page.locator("#nav-calendar").click()
    loaded = page.locator("#app[data-view=calendar][data-loaded=true]")
    await expect(loaded).to_be_attached()
    await expect(page.locator("[data-ref=patterns]")).to_contain_text("Henüz haftalık düzen yok")

    # Two shifts from today (the plant's zone is UTC): early on weekdays with a break, late on weekdays and Saturday.
    form = page.locator("[data-ref=pattern-form]")
    await form.get_by_label("Düzen adı").fill("İki vardiya")
    await form.get_by_role("button", name="+ Vardiya").click()
    rows = form.locator(".shift-row")
    for row, (name, start, end) in zip(
        [rows.nth(0), rows.nth(1)], [("Sabah", "06:00", "14:00"), ("Akşam", "14:00", "22:00")], strict=True
    ):
        await row.get_by_label("Vardiya adı").fill(name)
        await row.get_by_label("Başlangıç", exact=True).fill(start)
        await row.get_by_label("Bitiş", exact=True).fill(end)
    await rows.nth(0).get_by_role("button", name="+ Mola").click()
    await rows.nth(0).get_by_label("Molalar · Başlangıç").fill("10:00")
    await rows.nth(0).get_by_label("Molalar · Bitiş").fill("10:15")
    await rows.nth(1).get_by_label("Cmt").check()
    await form.get_by_role("button", name="Düzeni kaydet").click()
    await expect(form.locator("[role=status]")).to_have_text("“İki vardiya” düzeni kaydedildi.")
    week = page.locator("[data-ref=patterns] .week-table")
    dash = "\N{EN DASH}"
    cell = "tr[data-shift={}] td[data-weekday='{}']"
    await expect(week.locator(cell.format("Sabah", 0))).to_have_text(f"06:00{dash}14:00mola 10:00{dash}10:15")
    await expect(week.locator(cell.format("Sabah", 5))).to_have_text(dash)
    await expect(week.locator(cell.format("Akşam", 5))).to_have_text(f"14:00{dash}22:00")
    await expect(week.locator(cell.format("Akşam", 6))).to_have_text(dash)
    # One pattern a date: a second one from today is refused, in Turkish, and the form keeps what was typed.
    await form.get_by_label("Düzen adı").fill("Tek vardiya")
    await form.get_by_label("Vardiya adı").fill("Gündüz")
    await form.get_by_label("Başlangıç", exact=True).fill("08:00")
    await form.get_by_label("Bitiş", exact=True).fill("17:00")
    await form.get_by_role("button", name="Düzeni kaydet").click()
    await expect(form.locator("[data-ref=pattern-error]")).to_have_text(
        "Bu tarihte başlayan bir düzen zaten var: önce onu silin."
    )
    await expect(form.get_by_label("Düzen adı")).to_have_value("Tek vardiya")

    # The next seven days as the API plans them: 5 early shifts of 465 minutes and 6 late ones of 480.
    today = datetime.now(UTC).date()
    window = {"from": f"{today}T00:00:00", "to": f"{today + timedelta(days=7)}T00:00:00"}
    planned = await planner_get(server, "/calendar/shifts", **window)
    assert sorted(shift["planned_min"] for shift in planned) == [465] * 5 + [480] * 6
    upcoming = page.locator("[data-ref=upcoming] tbody tr")
    await expect(upcoming).to_have_count(11)
    await expect(upcoming.first.locator("[data-field=planned_min]")).to_have_text(str(int(planned[0]["planned_min"])))

    # An extra shift over the early one is refused, in Turkish; a holiday that day takes its two shifts away.
    day = first_workday_after(today)
    exceptions = page.locator("[data-ref=exception-form]")
    await exceptions.get_by_label("Gün").fill(day.isoformat())
    await exceptions.get_by_label("Tür").select_option("extra_shift")
    await exceptions.get_by_label("Vardiya adı").fill("Ek")
    await exceptions.get_by_label("Başlangıç", exact=True).fill("12:00")
    await exceptions.get_by_label("Bitiş", exact=True).fill("16:00")
    await exceptions.get_by_role("button", name="Ekle").click()
    await expect(page.locator("[data-ref=exception-error]")).to_have_text(
        "Vardiyalar çakışıyor: iki vardiya aynı anda çalışamaz."
    )
    await exceptions.get_by_label("Tür").select_option("non_working")
    await exceptions.get_by_label("Not").fill("Bayram")
    await exceptions.get_by_role("button", name="Ekle").click()
    entry = page.locator("[data-ref=exceptions] .exception")
    await expect(entry).to_have_count(1)
    await expect(entry).to_contain_text("Tatil (vardiya yok)")
    await expect(page.locator("[data-ref=exception-error]")).to_be_hidden()
    await expect(upcoming).to_have_count(9)
    await expect(page.locator(f"[data-ref=upcoming] tr[data-day='{day}']")).to_have_count(0)
    await assert_fits(page)
    await page.screenshot(path=ARTIFACTS / "calendar-tr.png", full_page=True)

    await entry.get_by_role("button", name="Sil").click()
    await entry.get_by_role("button", name="Evet, sil").click()
    await expect(entry).to_have_count(0)
    await expect(upcoming).to_have_count(11)
    calendar = await planner_get(server, "/calendar")
    assert calendar["exceptions"] == []
    assert [pattern["name"] for pattern in calendar["patterns"]] == ["İki vardiya"]
    assert problems == []
    await context.close()


async def test_an_admin_retires_a_loss_reason_and_workers_see_no_calendar(
    browser: Browser, server: str, plant: Plant
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    problems = watch_console(page)
    await page.goto(f"{server}/ui#/calendar")
    await log_in(page, "admin")
    await expect(page.locator("#app[data-view=calendar][data-loaded=true]")).to_be_attached()
    group = page.locator("[data-ref=reasons] .reason-group[data-category=availability]")
    await expect(group.locator("h3")).to_have_text("Availability loss")
    reason = group.locator("tr[data-code=waiting_operator]")
    await expect(reason).to_contain_text("Operatör bekleniyor")
    toggle = reason.get_by_role("switch")
    await expect(toggle).to_have_attribute("aria-checked", "true")
    await toggle.click()
    await expect(group.locator("tr[data-code=waiting_operator]").get_by_role("switch")).to_have_text("Retired")
    await assert_fits(page)
    await page.screenshot(path=ARTIFACTS / "calendar-admin-en.png", full_page=True)
    offered = [item["code"] for item in await planner_get(server, "/loss-reasons")]
    assert "waiting_operator" not in offered
    assert "breakdown" in offered

    # A worker has no calendar link, and the page itself says who keeps the calendar.
    await page.locator("#logout").click()
    await log_in(page, "operator")
    await expect(page.locator("#app[data-view=calendar][data-loaded=true]")).to_be_attached()
    await expect(page.locator("#user-box").get_by_role("link", name="My stages")).to_be_visible()
    await expect(page.locator("#nav-calendar")).to_be_hidden()
    await expect(page.locator("#app")).to_contain_text("The plant calendar is kept by planners and admins.")
    assert problems == []
    await context.close()
