// The operator view: a hash router over its views (login, machines, one machine, the worker's tablet, the manager's
// page, the plant calendar).
import "./styles.css";

import { SESSION_ENDED, logout, session } from "./api.js";
import { clockTime, plantZoneName, setPlantZone } from "./format.js";
import { language, setLanguage, t, translate } from "./i18n.js";
import { calendarView } from "./views/calendar.js";
import { loginView } from "./views/login.js";
import { machineView } from "./views/machine.js";
import { machinesView } from "./views/machines.js";
import { managerView } from "./views/manager.js";
import { tabletView } from "./views/tablet.js";

const app = document.getElementById("app");
let current = null;

function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

function showUser(user) {
  document.getElementById("user-box").hidden = !user;
  document.getElementById("user-name").textContent = user ? `${user.username} (${t(`role.${user.role}`)})` : "";
  // The calendar is kept by planners and admins; the API refuses a worker's changes anyway.
  document.getElementById("nav-calendar").hidden = !user || !["planner", "admin"].includes(user.role);
}

function render(notice) {
  if (current) current.destroy();
  current = null;
  delete app.dataset.loaded;
  const user = session.read();
  showUser(user);
  if (!user) {
    current = loginView(app, { onLoggedIn: () => render(), notice });
    return;
  }
  const { parts, params } = route();
  const id = Number(parts[1]);
  if (parts[0] === "machines" && Number.isInteger(id) && id > 0) {
    current = machineView(app, id, params);
  } else if (parts[0] === "tablet") {
    current = tabletView(app, Number.isInteger(id) && id > 0 ? id : null);
  } else if (parts[0] === "manager") {
    current = managerView(app, params);
  } else if (parts[0] === "calendar") {
    current = calendarView(app);
  } else {
    if (location.hash && location.hash !== "#/machines") history.replaceState(null, "", "#/machines");
    current = machinesView(app);
  }
}

/** The top bar's links, clock and language switch, in the current language. */
function drawChrome() {
  document.documentElement.lang = language();
  translate(document.querySelector(".topbar"));
  document.getElementById("plant-clock").title = t("clock.title", { zone: plantZoneName() });
}

document.getElementById("language").addEventListener("click", () => {
  setLanguage(language() === "tr" ? "en" : "tr");
  drawChrome();
  render();
});

document.getElementById("logout").addEventListener("click", async () => {
  await logout();
  render();
});
window.addEventListener("hashchange", () => render());
window.addEventListener(SESSION_ENDED, (event) => {
  // Several calls may fail at once with the same expired token: show the form once.
  if (app.dataset.view !== "login") render(t("session.ended", { reason: event.detail }));
});

/** The plant's time zone (GET /config, no token needed); times stay in UTC when it cannot be read. */
async function loadPlantZone() {
  try {
    const response = await fetch("/config");
    if (response.ok) setPlantZone((await response.json()).plant_timezone);
  } catch {
    // The views report an unreachable server themselves.
  }
}

/** The top bar's clock: the plant's time, whatever the zone of the tablet or PC showing it. */
function startClock() {
  const clock = document.getElementById("plant-clock");
  const zone = plantZoneName();
  clock.dataset.zone = zone;
  const tick = () => {
    const now = new Date();
    clock.dateTime = now.toISOString();
    clock.textContent = `${clockTime(now)} ${zone}`;
  };
  tick();
  clock.hidden = false;
  setInterval(tick, 1000);
}

loadPlantZone().then(() => {
  drawChrome();
  startClock();
  render();
});
