// The manager's page: a machine's OEE in the current shift (kept fresh), by shift or by day over the last days, the
// loss Pareto, and its unclassified stops to work through (classified from here too).
import { ACTIONS_CHANGED, pendingActions } from "../actions.js";
import { ApiError, get, getList } from "../api.js";
import { h, showError } from "../dom.js";
import { clockTime, dateTime, fromLocalInput, number, percent, wallClock } from "../format.js";
import { labelOf, t } from "../i18n.js";
import { FIGURES as SHIFT_FIGURES, oeeFigure } from "../oee.js";
import { drawDowntimes } from "./downtimes.js";

const DAYS = [1, 7, 14];
const DEFAULT_DAYS = 7;
const FIGURES = ["availability", "performance", "quality", "oee"];
const SHIFT_REFRESH_MS = 30000;
// The shifts asked for reach this far back: enough for any shift that is still running.
const SHIFT_LOOKBACK_MS = 24 * 3600e3;

/** Midnight on the plant's clock `days - 1` days before today: the start of the last `days` production days. */
function plantDaysAgo(days) {
  const pad = (n) => String(n).padStart(2, "0");
  const today = wallClock(new Date());
  const day = new Date(Date.UTC(today.year, today.month - 1, today.day - (days - 1)));
  return fromLocalInput(`${day.getUTCFullYear()}-${pad(day.getUTCMonth() + 1)}-${pad(day.getUTCDate())}T00:00`);
}

/** Render the page into `app`; `params` (the hash's query) holds machine, days and by (shift or day). */
export function managerView(app, params) {
  app.dataset.view = "manager";
  app.dataset.loaded = "false";
  const view = {
    machine: Number(params.get("machine")) || null,
    days: DAYS.includes(Number(params.get("days"))) ? Number(params.get("days")) : DEFAULT_DAYS,
    by: params.get("by") === "day" ? "day" : "shift",
  };
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const note = h("p", { class: "muted small", dataset: { ref: "note" } });
  const machineSelect = h("select", { name: "machine", "aria-label": t("manager.machine") });
  const controls = h(
    "div",
    { class: "manager-controls" },
    h("label", { class: "field" }, t("manager.machine"), machineSelect),
  );
  const chips = (name, values, label) =>
    h(
      "div",
      { class: "ranges", role: "group", "aria-label": label },
      values.map(([value, text]) =>
        h(
          "button",
          {
            type: "button",
            class: "chip",
            "aria-pressed": String(view[name] === value),
            dataset: { [name]: String(value) },
            onclick: () => {
              view[name] = value;
              navigate();
            },
          },
          text,
        ),
      ),
    );
  controls.append(
    chips(
      "days",
      DAYS.map((days) => [days, String(days)]),
      t("manager.days"),
    ),
    chips(
      "by",
      [
        ["shift", t("manager.by_shift")],
        ["day", t("manager.by_day")],
      ],
      t("manager.period"),
    ),
  );
  const table = h("table", { class: "values oee-table", dataset: { ref: "oee-rows" } });
  const pareto = h("ol", { class: "pareto", dataset: { ref: "pareto" } });
  const stops = h("ul", { class: "downtimes", dataset: { ref: "downtimes" } });
  const shiftNote = h("p", { class: "muted small", dataset: { ref: "shift-note" } });
  const shiftFigures = h("div", { class: "oee-figures", dataset: { ref: "shift-figures" } });
  const shiftDetails = h("dl", { class: "oee-details", dataset: { ref: "shift-details" } });
  const shiftCard = h(
    "section",
    { class: "card current-shift", dataset: { ref: "current-shift" } },
    h("h2", {}, t("manager.current_shift")),
    shiftNote,
    shiftFigures,
    shiftDetails,
  );
  app.replaceChildren(
    h(
      "section",
      { class: "page manager" },
      h("div", { class: "page-head" }, h("h1", {}, t("manager.title")), controls),
      error,
      shiftCard,
      h("section", { class: "card" }, note, h("div", { class: "table-scroll" }, table)),
      h(
        "div",
        { class: "columns" },
        h("section", { class: "card" }, h("h2", {}, t("manager.pareto")), pareto),
        h("section", { class: "card" }, h("h2", {}, t("downtime.title")), stops),
      ),
    ),
  );
  let stopped = false;
  let reasons = [];
  let shiftTimer = null;

  const navigate = () => {
    location.hash = `#/manager?machine=${view.machine}&days=${view.days}&by=${view.by}`;
  };

  const drawRows = (answer) => {
    const row = (item, total = false) =>
      h(
        "tr",
        { dataset: { group: total ? "total" : item.group } },
        h("th", { scope: "row" }, total ? t("manager.total") : item.label),
        h("td", { class: "num" }, number(item.planned_production_min)),
        FIGURES.map((field) => h("td", { class: "num", dataset: { field } }, percent(item[field]))),
        h("td", { class: "num" }, number(item.unclassified_min)),
      );
    table.replaceChildren(
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, t("manager.period")),
          h("th", { class: "num" }, t("manager.planned")),
          FIGURES.map((field) => h("th", { class: "num" }, t(`oee.${field}`))),
          h("th", { class: "num" }, t("manager.unclassified")),
        ),
      ),
      h(
        "tbody",
        {},
        answer.rows.map((item) => row(item)),
      ),
      h("tfoot", {}, row(answer.total, true)),
    );
    const losses = answer.pareto_min.filter(([, minutes]) => minutes > 0);
    const largest = Math.max(1, ...losses.map(([, minutes]) => minutes));
    const byCode = new Map(reasons.map((reason) => [reason.code, reason]));
    pareto.replaceChildren(
      ...(losses.length
        ? losses.map(([code, minutes]) => {
            const bar = h("span", { class: "pareto-bar" });
            bar.style.width = `${(minutes / largest) * 100}%`;
            return h(
              "li",
              { dataset: { code, minutes: String(minutes) } },
              h(
                "span",
                { class: "pareto-label" },
                code === "unclassified" ? t("reason.unclassified") : labelOf(byCode.get(code)) || code,
              ),
              h("span", { class: "pareto-track" }, bar),
              h("span", { class: "num" }, t("minutes", { n: number(minutes) })),
            );
          })
        : [h("li", { class: "muted" }, t("manager.no_losses"))]),
    );
  };

  const load = async () => {
    const from = plantDaysAgo(view.days).toISOString();
    const to = new Date().toISOString();
    try {
      let answer;
      try {
        answer = await get("/oee", { machine_id: view.machine, group_by: view.by, from, to });
        note.textContent = `${dateTime(from)} – ${dateTime(to)}`;
      } catch (failure) {
        if (!(failure instanceof ApiError && failure.code === "no_calendar")) throw failure;
        answer = await get("/oee", { machine_id: view.machine, group_by: "day", from, to });
        note.textContent = t("manager.no_calendar");
      }
      const found = await get(`/machines/${view.machine}/downtimes`, { from, to, unclassified: true });
      if (stopped) return;
      showError(error, "");
      drawRows(answer);
      const queued = new Set(
        pendingActions()
          .map((action) => action.body?.start)
          .filter(Boolean),
      );
      drawDowntimes(stops, {
        machineId: view.machine,
        events: found.events.filter((e) => !queued.has(e.start)),
        reasons,
      });
      app.dataset.loaded = "true";
    } catch (failure) {
      if (!stopped) showError(error, t("manager.load_failed", { error: failure.message }));
    }
  };

  /** The card says what it shows on data-state: shown, no_calendar, no_shift or error. */
  const drawShift = (state, text, row = null) => {
    shiftCard.dataset.state = state;
    shiftNote.textContent = text;
    shiftFigures.replaceChildren(...(row ? SHIFT_FIGURES.map((field) => oeeFigure(field, row[field])) : []));
    const details = row
      ? [
          ["run_min", t("manager.run_min"), row.run_min],
          ["unclassified_min", t("manager.unclassified"), row.unclassified_min],
        ]
      : [];
    shiftDetails.replaceChildren(
      ...details.map(([field, term, minutes]) =>
        h("div", { dataset: { field } }, h("dt", {}, term), h("dd", {}, number(minutes))),
      ),
    );
  };

  // The shift running now (plant calendar, times as instants), then its OEE from its start to now.
  const loadShift = async () => {
    const now = new Date();
    const at = now.getTime();
    const shifts = await getList("/calendar/shifts", {
      from: new Date(at - SHIFT_LOOKBACK_MS).toISOString(),
      to: new Date(at + 1000).toISOString(),
    });
    const shift = shifts.items.find((item) => Date.parse(item.start) <= at && at < Date.parse(item.end));
    if (!shift) {
      // No shift now: with no calendar at all, OEE by shift says so (409 no_calendar).
      try {
        await get("/oee", {
          machine_id: view.machine,
          group_by: "shift",
          from: new Date(at - 60e3).toISOString(),
          to: now.toISOString(),
        });
      } catch (failure) {
        if (failure instanceof ApiError && failure.code === "no_calendar") {
          return () => drawShift("no_calendar", t("manager.shift_no_calendar"));
        }
        throw failure;
      }
      return () => drawShift("no_shift", t("manager.no_shift_now"));
    }
    const answer = await get("/oee", {
      machine_id: view.machine,
      group_by: "shift",
      from: shift.start,
      to: now.toISOString(),
    });
    const span = {
      name: shift.name,
      start: clockTime(new Date(shift.start)),
      end: clockTime(new Date(shift.end)),
      now: clockTime(now),
    };
    return () => drawShift("shown", t("manager.shift_window", span), answer.total);
  };

  const refreshShift = async () => {
    let draw;
    try {
      draw = await loadShift();
    } catch (failure) {
      draw = () => drawShift("error", t("manager.shift_failed", { error: failure.message }));
    }
    if (stopped) return;
    draw();
    // A refresh asked meanwhile (a classification sent) may have set a timer too: keep one.
    clearTimeout(shiftTimer);
    shiftTimer = setTimeout(refreshShift, SHIFT_REFRESH_MS);
  };

  // A classification sent from here changes the figures: draw them again once the queue is empty.
  const onActions = (event) => {
    const { kind, action } = event.detail || {};
    if (kind === "changed" || pendingActions().length) return;
    // Drawn again, then the refusal shown (a successful load clears the error line).
    refreshShift();
    load().then(() => {
      if (kind === "failed")
        showError(error, t("pending.failed", { label: action.label, error: event.detail.error.message }));
    });
  };
  window.addEventListener(ACTIONS_CHANGED, onActions);

  (async () => {
    try {
      const [machines, found] = await Promise.all([getList("/machines", { limit: 500 }), getList("/loss-reasons")]);
      reasons = found.items;
      if (stopped) return;
      if (!machines.items.length) {
        shiftCard.hidden = true;
        note.textContent = t("manager.no_machines");
        app.dataset.loaded = "true";
        return;
      }
      const sorted = [...machines.items].sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id);
      machineSelect.replaceChildren(
        ...sorted.map((machine) => h("option", { value: String(machine.id) }, machine.name)),
      );
      if (!sorted.some((machine) => machine.id === view.machine)) view.machine = sorted[0].id;
      machineSelect.value = String(view.machine);
      machineSelect.addEventListener("change", () => {
        view.machine = Number(machineSelect.value);
        navigate();
      });
      await Promise.all([load(), refreshShift()]);
    } catch (failure) {
      if (!stopped) showError(error, t("manager.load_failed", { error: failure.message }));
    }
  })();
  return {
    destroy() {
      stopped = true;
      clearTimeout(shiftTimer);
      window.removeEventListener(ACTIONS_CHANGED, onActions);
    },
  };
}
