// The machine list: online / offline, current state (since when) and running stage, and last seen of each machine,
// all from one GET /machines, refreshed every few seconds.
import { getList } from "../api.js";
import { h, showError } from "../dom.js";
import { ago, dateTime, duration, stateLabel } from "../format.js";
import { t } from "../i18n.js";

const REFRESH_MS = 10000;

/** Fill a state badge element: its text, and data-state (which the stylesheet colours). */
export function setStateBadge(element, state) {
  const name = state || "unknown";
  element.textContent = stateLabel(name);
  element.dataset.state = name;
}

/** Fill an online indicator: online, offline, or unknown (no status message seen yet). */
export function setOnline(element, online) {
  const name = online === true ? "online" : online === false ? "offline" : "unknown";
  element.dataset.online = name;
  element.title = t(`online.${name}`);
  if (element.classList.contains("online-pill")) element.textContent = element.title;
}

/** "since 26 Nov 14:05 (2 h 05 min)": when a state began, and how long ago. */
export function since(iso) {
  if (!iso) return "";
  return t("machines.since", { time: dateTime(iso), duration: duration((Date.now() - Date.parse(iso)) / 1000) });
}

function machineCard(machine) {
  const online = h("span", { class: "online-dot", dataset: { ref: "online" } });
  const state = h("span", { class: "state-badge", dataset: { ref: "state" } });
  setOnline(online, machine.online);
  setStateBadge(state, machine.state);
  const seen = t(machine.online === false ? "machines.offline_seen" : "machines.seen", {
    ago: ago(machine.last_seen_at),
  });
  return h(
    "li",
    {},
    h(
      "a",
      { class: "card machine-card", href: `#/machines/${machine.id}`, dataset: { machineId: String(machine.id) } },
      h("div", { class: "machine-card-head" }, online, h("strong", { dataset: { ref: "name" } }, machine.name)),
      h(
        "span",
        { class: "muted small", dataset: { ref: "code" } },
        `${machine.site} / ${machine.code}${machine.location ? ` · ${machine.location}` : ""}`,
      ),
      h(
        "div",
        { class: "machine-card-state" },
        state,
        h("span", { class: "muted small", dataset: { ref: "since" } }, since(machine.state_since)),
      ),
      h(
        "div",
        { class: "machine-card-foot" },
        h(
          "span",
          { class: "small", dataset: { ref: "stage" } },
          machine.running_stage_id ? t("machines.stage", { id: machine.running_stage_id }) : "",
        ),
        h("span", { class: "muted small", dataset: { ref: "seen" } }, seen),
      ),
    ),
  );
}

/** A gateway's line: online or not, and what waits in its disk buffer (how old, how long the disk lasts). */
function gatewayItem(gateway) {
  const online = h("span", { class: "online-dot" });
  setOnline(online, gateway.online);
  const waiting = gateway.backlog_readings ?? gateway.backlog_messages;
  const parts = [];
  if (waiting) {
    parts.push(t("gateways.waiting", { n: waiting.toLocaleString() }));
    if (gateway.backlog_oldest_age_s != null) {
      parts.push(t("gateways.oldest", { age: duration(gateway.backlog_oldest_age_s) }));
    }
    if (gateway.backlog_seconds_to_full != null) {
      parts.push(t("gateways.full_in", { time: duration(gateway.backlog_seconds_to_full) }));
    }
  } else if (waiting === 0) {
    parts.push(t("gateways.empty"));
  }
  return h(
    "li",
    { class: "gateway", dataset: { gateway: gateway.gateway_id, backlog: String(waiting ?? "") } },
    online,
    h("strong", {}, `${gateway.site} / ${gateway.gateway_id}`),
    h("span", { class: waiting ? "small gateway-backlog" : "muted small" }, parts.join(" · ")),
  );
}

/** Render the list into `app` and keep it fresh until `destroy()`. */
export function machinesView(app) {
  const summary = h("p", { class: "muted", dataset: { ref: "summary" } });
  const filter = h("input", {
    type: "search",
    class: "filter",
    placeholder: t("machines.filter"),
    "aria-label": t("machines.filter_label"),
    dataset: { ref: "filter" },
  });
  const error = h("p", { class: "form-error", role: "alert", hidden: true, dataset: { ref: "error" } });
  const grid = h("ul", { class: "machine-grid", dataset: { ref: "grid" } });
  const gateways = h("ul", {
    class: "gateway-list",
    hidden: true,
    "aria-label": t("gateways.title"),
    dataset: { ref: "gateways" },
  });
  const empty = h("p", { class: "muted empty", hidden: true, dataset: { ref: "empty" } }, t("machines.empty"));
  app.replaceChildren(
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" }, h("h1", {}, t("machines.title")), summary, filter),
      error,
      gateways,
      grid,
      empty,
    ),
  );
  app.dataset.view = "machines";
  let machines = [];
  let total = 0;
  let timer = null;
  let stopped = false;

  const draw = () => {
    const needle = filter.value.trim().toLowerCase();
    const shown = machines.filter((machine) =>
      [machine.name, machine.code, machine.site].some((text) => text.toLowerCase().includes(needle)),
    );
    grid.replaceChildren(...shown.map(machineCard));
    const online = machines.filter((machine) => machine.online).length;
    const alarms = machines.filter((machine) => machine.state === "alarm").length;
    // More machines than one page holds: say how many are not shown rather than under-count the plant.
    const count = total > machines.length ? t("machines.some_of", { shown: machines.length, total }) : machines.length;
    summary.textContent = [
      t("machines.count", { count }),
      t("machines.online", { n: online }),
      alarms ? t("machines.in_alarm", { n: alarms }) : null,
    ]
      .filter(Boolean)
      .join(" · ");
    empty.hidden = machines.length > 0;
  };

  const load = async () => {
    try {
      const page = await getList("/machines", { limit: 500 });
      total = page.total;
      machines = [...page.items].sort(
        (a, b) => a.site.localeCompare(b.site) || a.name.localeCompare(b.name) || a.id - b.id,
      );
      const edges = await getList("/gateways", { limit: 500 });
      gateways.replaceChildren(...edges.items.map(gatewayItem));
      gateways.hidden = edges.items.length === 0;
      showError(error, "");
      if (!stopped) draw();
      app.dataset.loaded = "true";
    } catch (failure) {
      if (!stopped) showError(error, t("machines.load_failed", { error: failure.message }));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  };

  filter.addEventListener("input", draw);
  load();
  return {
    destroy() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
