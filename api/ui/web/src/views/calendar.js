// The plant calendar (planners and admins): the weekly shift patterns in force and to come, a form for a new one,
// holidays and extra shifts, the next seven days' shifts as the API plans them, and, for admins, the loss reasons.
import { newKey } from "../actions.js";
import { ApiError, get, getList, sendAction, session } from "../api.js";
import { h, showError } from "../dom.js";
import { clockTime, dateTime, number, wallClock } from "../format.js";
import { dateLocale, labelOf, t } from "../i18n.js";

const WEEKDAYS = [0, 1, 2, 3, 4, 5, 6];
const WORKDAYS = [0, 1, 2, 3, 4];
const UPCOMING_DAYS = 7;
const CATEGORIES = ["planned_stop", "availability", "performance", "quality"];
// The refusals the form explains in the user's language; any other shows the API's own text.
const KNOWN_ERRORS = ["overlapping_shifts", "pattern_exists", "invalid_shift"];

const pad = (n) => String(n).padStart(2, "0");

/** "YYYY-MM-DD" of the plant's date `offset` days after today. */
function plantDay(offset = 0) {
  const today = wallClock(new Date());
  const day = new Date(Date.UTC(today.year, today.month - 1, today.day + offset));
  return `${day.getUTCFullYear()}-${pad(day.getUTCMonth() + 1)}-${pad(day.getUTCDate())}`;
}

/** A local date ("2026-12-03") as "Thu 3 Dec" ("Per 3 Ara"). */
function dayLabel(day) {
  const [year, month, date] = day.split("-").map(Number);
  return new Date(Date.UTC(year, month - 1, date)).toLocaleDateString(dateLocale(), {
    weekday: "short",
    day: "numeric",
    month: "short",
    timeZone: "UTC",
  });
}

/** "06:00:00" as "06:00". */
const hm = (time) => (time ? time.slice(0, 5) : "");

/** What to say about a refused write: the known codes in the user's language, the API's text otherwise. */
function refusal(error) {
  if (error instanceof ApiError && KNOWN_ERRORS.includes(error.code)) return t(`calendar.error.${error.code}`);
  return t("calendar.failed", { error: error.message });
}

/**
 * One Idempotency-Key per write: the same body sent again (after a lost answer) goes with the same key, so the API
 * acts once; an answer (success or refusal) frees it, and a changed body gets a new one.
 */
function writer() {
  let last = null;
  return async (method, path, body = null) => {
    const fingerprint = JSON.stringify([method, path, body]);
    if (!last || last.fingerprint !== fingerprint) last = { fingerprint, key: newKey() };
    try {
      const answer = await sendAction(method, path, body, last.key);
      last = null;
      return answer;
    } catch (error) {
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) last = null;
      throw error;
    }
  };
}

/** A delete button that asks once more (two taps) before `onConfirm`. */
function deleteButton(onConfirm, dataset = {}) {
  const box = h("span", { class: "confirm-box" });
  const ask = () => {
    box.replaceChildren(
      h(
        "button",
        {
          type: "button",
          class: "tap danger",
          dataset: { action: "confirm-delete", ...dataset },
          onclick: onConfirm,
        },
        t("calendar.confirm_delete"),
      ),
      h("button", { type: "button", class: "tap ghost", onclick: idle }, t("calendar.cancel")),
    );
  };
  const idle = () => {
    box.replaceChildren(
      h(
        "button",
        { type: "button", class: "tap ghost", dataset: { action: "delete", ...dataset }, onclick: ask },
        t("calendar.delete"),
      ),
    );
  };
  idle();
  return box;
}

/** A time input (24 h, to the minute). */
const timeInput = (name, label, value = "") =>
  h("input", { type: "time", name, value, required: true, "aria-label": label });

/** Render the calendar into `app`. */
export function calendarView(app) {
  app.dataset.view = "calendar";
  app.dataset.loaded = "false";
  const user = session.read();
  if (user.role !== "planner" && user.role !== "admin") {
    app.replaceChildren(
      h(
        "section",
        { class: "page calendar" },
        h("h1", {}, t("calendar.title")),
        h("p", { class: "muted" }, t("calendar.workers_not_allowed")),
      ),
    );
    app.dataset.loaded = "true";
    return { destroy() {} };
  }
  const write = writer();
  let stopped = false;

  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const patterns = h("div", { class: "patterns", dataset: { ref: "patterns" } });
  const exceptionList = h("ul", { class: "exception-list", dataset: { ref: "exceptions" } });
  const upcoming = h("table", { class: "values upcoming", dataset: { ref: "upcoming" } });
  const reasons = h("div", { class: "reason-groups", dataset: { ref: "reasons" } });

  const refresh = async () => {
    try {
      const [calendar, shifts] = await Promise.all([
        get("/calendar"),
        getList("/calendar/shifts", { from: `${plantDay(0)}T00:00:00`, to: `${plantDay(UPCOMING_DAYS)}T00:00:00` }),
      ]);
      if (stopped) return;
      showError(error, "");
      drawPatterns(calendar.patterns);
      drawExceptions(calendar.exceptions);
      drawUpcoming(shifts.items);
      if (user.role === "admin") {
        const found = await getList("/loss-reasons", { include_inactive: true });
        if (stopped) return;
        drawReasons(found.items);
      }
      app.dataset.loaded = "true";
    } catch (failure) {
      if (!stopped) showError(error, t("calendar.load_failed", { error: failure.message }));
    }
  };

  /** A write, then the page drawn again; answers true when it went through, and shows a refusal in `where`. */
  const submit = async (where, method, path, body = null) => {
    try {
      await write(method, path, body);
    } catch (failure) {
      if (stopped) return false;
      showError(where, refusal(failure));
      // The API's own words (which shifts, which day) stay at hand, in English.
      where.title = failure.message;
      return false;
    }
    showError(where, "");
    where.title = "";
    await refresh();
    return true;
  };

  // --- the weekly patterns ---------------------------------------------------------------------------------------

  const weekTable = (pattern) => {
    const byStart = [...pattern.shifts].sort((a, b) => a.start.localeCompare(b.start));
    const names = [...new Set(byStart.map((shift) => shift.name))];
    return h(
      "table",
      { class: "values week-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, t("calendar.shift")),
          WEEKDAYS.map((day) => h("th", {}, t(`weekday.${day}`))),
        ),
      ),
      h(
        "tbody",
        {},
        names.map((name) =>
          h(
            "tr",
            { dataset: { shift: name } },
            h("th", { scope: "row" }, name),
            WEEKDAYS.map((day) => {
              const shift = pattern.shifts.find((item) => item.name === name && item.weekday === day);
              if (!shift) return h("td", { class: "muted", dataset: { weekday: String(day) } }, "–");
              return h(
                "td",
                { dataset: { weekday: String(day) } },
                h("span", { class: "span" }, `${hm(shift.start)}–${hm(shift.end)}`),
                shift.breaks.map((pause) =>
                  h(
                    "span",
                    { class: "small muted break" },
                    t("calendar.break", { start: hm(pause.start), end: hm(pause.end) }),
                  ),
                ),
              );
            }),
          ),
        ),
      ),
    );
  };

  const drawPatterns = (all) => {
    const today = plantDay(0);
    // The last pattern that began by today is in force; later ones are to come. Older ones no longer matter here.
    const started = all.filter((pattern) => pattern.valid_from <= today);
    const shown = [...started.slice(-1), ...all.filter((pattern) => pattern.valid_from > today)];
    if (!shown.length) {
      patterns.replaceChildren(h("p", { class: "muted" }, t("calendar.no_patterns")));
      return;
    }
    patterns.replaceChildren(
      ...shown.map((pattern) => {
        const failure = h("p", { class: "form-error", role: "alert", hidden: true });
        const current = pattern.valid_from <= today;
        return h(
          "article",
          { class: "pattern", dataset: { patternId: String(pattern.id), validFrom: pattern.valid_from } },
          h(
            "div",
            { class: "pattern-head" },
            h(
              "h3",
              {},
              pattern.name,
              " ",
              h(
                "span",
                { class: "status-badge", dataset: { status: current ? "in_progress" : "planned" } },
                current ? t("calendar.current") : t("calendar.future", { day: dayLabel(pattern.valid_from) }),
              ),
            ),
            h("span", { class: "muted small" }, `${t("calendar.valid_from")}: ${dayLabel(pattern.valid_from)}`),
            deleteButton(() => submit(failure, "DELETE", `/calendar/patterns/${pattern.id}`)),
          ),
          failure,
          pattern.shifts.length
            ? h("div", { class: "table-scroll" }, weekTable(pattern))
            : h("p", { class: "muted" }, t("calendar.no_shifts")),
        );
      }),
    );
  };

  // --- the form of a new pattern ---------------------------------------------------------------------------------

  const breakRow = () => {
    const row = h(
      "li",
      { class: "break-row" },
      timeInput("break_start", `${t("calendar.breaks")} · ${t("calendar.start")}`),
      h("span", {}, "–"),
      timeInput("break_end", `${t("calendar.breaks")} · ${t("calendar.end")}`),
    );
    row.append(h("button", { type: "button", class: "tap ghost", onclick: () => row.remove() }, t("calendar.remove")));
    return row;
  };

  const shiftRow = () => {
    const breaks = h("ul", { class: "break-rows" });
    const row = h(
      "fieldset",
      { class: "shift-row" },
      h("legend", {}, t("calendar.shift")),
      h(
        "div",
        { class: "shift-times" },
        h(
          "label",
          { class: "field" },
          t("calendar.shift_name"),
          h("input", { name: "shift_name", required: true, maxLength: 64 }),
        ),
        h("label", { class: "field" }, t("calendar.start"), timeInput("start", t("calendar.start"))),
        h("label", { class: "field" }, t("calendar.end"), timeInput("end", t("calendar.end"))),
      ),
      h(
        "div",
        { class: "weekday-picks", role: "group", "aria-label": t("calendar.weekdays") },
        WEEKDAYS.map((day) =>
          h(
            "label",
            { class: "weekday-pick" },
            h("input", { type: "checkbox", name: "weekday", value: String(day), checked: WORKDAYS.includes(day) }),
            t(`weekday.${day}`),
          ),
        ),
      ),
      h("p", { class: "muted small" }, t("calendar.end_hint")),
      h("h4", {}, t("calendar.breaks")),
      breaks,
    );
    row.append(
      h(
        "div",
        { class: "row-actions" },
        h(
          "button",
          {
            type: "button",
            class: "tap ghost",
            dataset: { action: "add-break" },
            onclick: () => breaks.append(breakRow()),
          },
          t("calendar.add_break"),
        ),
        h(
          "button",
          {
            type: "button",
            class: "tap ghost",
            dataset: { action: "remove-shift" },
            onclick: () => {
              if (shiftRows.children.length > 1) row.remove();
            },
          },
          t("calendar.remove"),
        ),
      ),
    );
    return row;
  };

  const validFrom = h("input", { type: "date", name: "valid_from", value: plantDay(0), required: true });
  const patternName = h("input", { name: "pattern_name", required: true, maxLength: 100 });
  const shiftRows = h("div", { class: "shift-rows" }, shiftRow());
  const patternError = h("p", { class: "form-error", role: "alert", hidden: true, dataset: { ref: "pattern-error" } });
  const patternNotice = h("p", { class: "notice", role: "status" });

  /** The pattern the form describes, or null when something is missing. */
  const patternBody = () => {
    const value = (root, name) => root.querySelector(`[name=${name}]`).value.trim();
    const shifts = [...shiftRows.querySelectorAll(".shift-row")].map((row) => ({
      name: value(row, "shift_name"),
      weekdays: [...row.querySelectorAll("[name=weekday]:checked")].map((box) => Number(box.value)),
      start: value(row, "start"),
      end: value(row, "end"),
      breaks: [...row.querySelectorAll(".break-row")].map((line) => ({
        start: value(line, "break_start"),
        end: value(line, "break_end"),
      })),
    }));
    const complete = shifts.every(
      (shift) =>
        shift.name && shift.weekdays.length && shift.start && shift.end && shift.breaks.every((b) => b.start && b.end),
    );
    if (!validFrom.value || !patternName.value.trim() || !complete) return null;
    return { valid_from: validFrom.value, name: patternName.value.trim(), shifts };
  };

  const patternForm = h(
    "form",
    {
      class: "pattern-form",
      dataset: { ref: "pattern-form" },
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        patternNotice.textContent = "";
        const body = patternBody();
        if (!body) return showError(patternError, t("calendar.form_incomplete"));
        const button = patternForm.querySelector("button[type=submit]");
        button.disabled = true;
        const done = await submit(patternError, "POST", "/calendar/patterns", body);
        button.disabled = false;
        if (!done || stopped) return;
        patternNotice.textContent = t("calendar.pattern_saved", { name: body.name });
        patternName.value = "";
        shiftRows.replaceChildren(shiftRow());
      },
    },
    h(
      "div",
      { class: "shift-times" },
      h("label", { class: "field" }, t("calendar.valid_from"), validFrom),
      h("label", { class: "field" }, t("calendar.pattern_name"), patternName),
    ),
    shiftRows,
    h(
      "button",
      {
        type: "button",
        class: "tap ghost",
        dataset: { action: "add-shift" },
        onclick: () => shiftRows.append(shiftRow()),
      },
      t("calendar.add_shift"),
    ),
    patternError,
    patternNotice,
    h("button", { type: "submit", class: "tap primary" }, t("calendar.save_pattern")),
  );

  // --- holidays and extra shifts ---------------------------------------------------------------------------------

  const drawExceptions = (all) => {
    const sorted = [...all].sort((a, b) => a.day.localeCompare(b.day) || a.id - b.id);
    if (!sorted.length) {
      exceptionList.replaceChildren(h("li", { class: "muted" }, t("calendar.no_exceptions")));
      return;
    }
    exceptionList.replaceChildren(
      ...sorted.map((entry) => {
        const failure = h("p", { class: "form-error", role: "alert", hidden: true });
        return h(
          "li",
          { class: "exception", dataset: { exceptionId: String(entry.id), kind: entry.kind, day: entry.day } },
          h("strong", {}, dayLabel(entry.day)),
          h(
            "span",
            {},
            entry.kind === "extra_shift"
              ? `${t("calendar.kind.extra_shift")}: ${entry.shift_name} ${hm(entry.start)}–${hm(entry.end)}`
              : t("calendar.kind.non_working"),
          ),
          h("span", { class: "muted small" }, entry.note || ""),
          deleteButton(() => submit(failure, "DELETE", `/calendar/exceptions/${entry.id}`)),
          failure,
        );
      }),
    );
  };

  const exceptionDay = h("input", { type: "date", name: "day", value: plantDay(1), required: true });
  const exceptionKind = h(
    "select",
    { name: "kind" },
    ["non_working", "extra_shift"].map((kind) => h("option", { value: kind }, t(`calendar.kind.${kind}`))),
  );
  const extraName = h("input", { name: "extra_name", maxLength: 64 });
  const extraStart = timeInput("extra_start", t("calendar.start"));
  const extraEnd = timeInput("extra_end", t("calendar.end"));
  const extraFields = h(
    "div",
    { class: "shift-times", hidden: true },
    h("label", { class: "field" }, t("calendar.shift_name"), extraName),
    h("label", { class: "field" }, t("calendar.start"), extraStart),
    h("label", { class: "field" }, t("calendar.end"), extraEnd),
  );
  exceptionKind.addEventListener("change", () => {
    extraFields.hidden = exceptionKind.value !== "extra_shift";
  });
  const note = h("input", { name: "note", maxLength: 2000 });
  const exceptionError = h("p", {
    class: "form-error",
    role: "alert",
    hidden: true,
    dataset: { ref: "exception-error" },
  });
  const exceptionNotice = h("p", { class: "notice", role: "status" });
  const exceptionForm = h(
    "form",
    {
      class: "exception-form",
      dataset: { ref: "exception-form" },
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        exceptionNotice.textContent = "";
        const extra = exceptionKind.value === "extra_shift";
        const body = { day: exceptionDay.value, kind: exceptionKind.value, note: note.value.trim() || null };
        if (extra) {
          Object.assign(body, { shift_name: extraName.value.trim(), start: extraStart.value, end: extraEnd.value });
        }
        if (!body.day || (extra && !(body.shift_name && body.start && body.end))) {
          return showError(exceptionError, t("calendar.exception_incomplete"));
        }
        const button = exceptionForm.querySelector("button[type=submit]");
        button.disabled = true;
        const done = await submit(exceptionError, "POST", "/calendar/exceptions", body);
        button.disabled = false;
        if (!done || stopped) return;
        exceptionNotice.textContent = t("calendar.exception_saved", { day: dayLabel(body.day) });
        note.value = "";
      },
    },
    h(
      "div",
      { class: "shift-times" },
      h("label", { class: "field" }, t("calendar.day"), exceptionDay),
      h("label", { class: "field" }, t("calendar.kind"), exceptionKind),
      h("label", { class: "field" }, t("calendar.note"), note),
    ),
    extraFields,
    exceptionError,
    exceptionNotice,
    h("button", { type: "submit", class: "tap primary" }, t("calendar.add_exception")),
  );

  // --- the next days' shifts -------------------------------------------------------------------------------------

  const drawUpcoming = (items) => {
    upcoming.replaceChildren(
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, t("calendar.day")),
          h("th", {}, t("calendar.shift")),
          h("th", {}, t("calendar.times")),
          h("th", { class: "num" }, t("calendar.planned_min")),
        ),
      ),
      h(
        "tbody",
        {},
        items.length
          ? items.map((shift) =>
              h(
                "tr",
                { dataset: { day: shift.day, shift: shift.name } },
                h("td", {}, dayLabel(shift.day)),
                h("td", {}, shift.name),
                h(
                  "td",
                  { title: `${dateTime(shift.start)} – ${dateTime(shift.end)}` },
                  `${clockTime(new Date(shift.start))}–${clockTime(new Date(shift.end))}`,
                ),
                h("td", { class: "num", dataset: { field: "planned_min" } }, number(shift.planned_min)),
              ),
            )
          : h("tr", {}, h("td", { colSpan: 4, class: "muted" }, t("calendar.no_upcoming"))),
      ),
    );
  };

  // --- loss reasons (admins) -------------------------------------------------------------------------------------

  const drawReasons = (items) => {
    reasons.replaceChildren(
      ...CATEGORIES.map((category) => {
        const group = items.filter((item) => item.category === category);
        if (!group.length) return null;
        return h(
          "section",
          { class: "reason-group", dataset: { category } },
          h("h3", {}, t(`category.${category}`)),
          h(
            "table",
            { class: "values reasons" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                h("th", {}, t("reasons.code")),
                h("th", {}, t("reasons.label_tr")),
                h("th", {}, t("reasons.label_en")),
                h("th", {}, t("reasons.toggle")),
              ),
            ),
            h(
              "tbody",
              {},
              group.map((reason) => {
                const failure = h("span", { class: "form-error small", role: "alert", hidden: true });
                const toggle = h(
                  "button",
                  {
                    type: "button",
                    class: "tap switch",
                    role: "switch",
                    "aria-checked": String(reason.active),
                    "aria-label": `${t("reasons.toggle")}: ${labelOf(reason)}`,
                    dataset: { action: "toggle-reason" },
                    onclick: async () => {
                      toggle.disabled = true;
                      await submit(failure, "PATCH", `/loss-reasons/${encodeURIComponent(reason.code)}`, {
                        active: !reason.active,
                      });
                      toggle.disabled = false;
                    },
                  },
                  reason.active ? t("reasons.active") : t("reasons.inactive"),
                );
                return h(
                  "tr",
                  { dataset: { code: reason.code, active: String(reason.active) } },
                  h("td", {}, h("code", {}, reason.code)),
                  h("td", { lang: "tr" }, reason.label_tr),
                  h("td", { lang: "en" }, reason.label_en),
                  h("td", {}, toggle, failure),
                );
              }),
            ),
          ),
        );
      }),
    );
  };

  app.replaceChildren(
    h(
      "section",
      { class: "page calendar" },
      h("div", { class: "page-head" }, h("h1", {}, t("calendar.title"))),
      error,
      h("section", { class: "card" }, h("h2", {}, t("calendar.patterns")), patterns),
      h("section", { class: "card" }, h("h2", {}, t("calendar.add_pattern")), patternForm),
      h(
        "div",
        { class: "columns even" },
        h("section", { class: "card" }, h("h2", {}, t("calendar.exceptions")), exceptionList, exceptionForm),
        h(
          "section",
          { class: "card" },
          h("h2", {}, t("calendar.upcoming")),
          h("div", { class: "table-scroll" }, upcoming),
        ),
      ),
      user.role === "admin" && h("section", { class: "card" }, h("h2", {}, t("reasons.title")), reasons),
    ),
  );
  refresh();
  return {
    destroy() {
      stopped = true;
    },
  };
}
