// One machine: live header and current values, charts of chosen tags over a chosen range, the state timeline, OEE,
// and for planners and admins its setpoints and the commands sent to it.
import { ApiError, get, getOptional, itemsOf, session } from "../api.js";
import { COLORS, tagChart } from "../chart.js";
import { h, refsOf, showError } from "../dom.js";
import { ago, dateTime, fromLocalInput, number, toLocalInput } from "../format.js";
import { t } from "../i18n.js";
import { follow } from "../live.js";
import { renderOee, stageContext } from "../oee.js";
import { alignTimeline, renderTimeline } from "../timeline.js";
import { commandsSection } from "./commands.js";
import { setOnline, setStateBadge, since } from "./machines.js";

const RANGES = { "1h": 3600e3, "8h": 8 * 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };
const DEFAULT_RANGE = "8h";
const DEFAULT_TAGS = 2;
const MAX_TAGS = 8;
// Charts over a range that ends now are redrawn this often, so new buckets appear.
const REFRESH_MS = 30000;

// Commands write to real machines: workers neither see them nor may send them (the API answers them 403).
const COMMAND_ROLES = ["planner", "admin"];

/** The page's parts, in the current language; the ones the view fills carry a `data-ref`; `commands`, the commands
 * block when the user may send commands. */
function layout(commands) {
  const ref = (name, attributes = {}) => ({ ...attributes, dataset: { ...attributes.dataset, ref: name } });
  return h(
    "section",
    { class: "page" },
    h("a", { class: "back", href: "#/machines" }, t("machine.back")),
    h(
      "div",
      { class: "machine-head card" },
      h("div", {}, h("h1", ref("name")), h("p", ref("meta", { class: "muted small" }))),
      h(
        "div",
        { class: "machine-head-status" },
        h("span", ref("state", { class: "state-badge big" })),
        h("span", ref("since", { class: "muted small" })),
        h("span", ref("online", { class: "online-pill" })),
        h("span", ref("mode", { class: "live-mode small" })),
      ),
    ),
    h("p", ref("error", { class: "form-error", role: "alert", hidden: true })),
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "card values-card" },
        h("h2", {}, t("machine.values")),
        h(
          "table",
          { class: "values" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              h("th", {}, t("machine.tag")),
              h("th", { class: "num" }, t("machine.value")),
              h("th", {}, t("machine.at")),
            ),
          ),
          h("tbody", ref("values")),
        ),
        h("p", ref("no-values", { class: "muted small", hidden: true }), t("machine.no_values")),
      ),
      h(
        "section",
        ref("oee", { class: "card oee-card" }),
        h("h2", {}, t("oee.oee")),
        h("p", ref("oee-context", { class: "muted small" }), t("machine.loading")),
        h("div", ref("oee-figures", { class: "oee-figures" })),
        h("dl", ref("oee-details", { class: "oee-details" })),
        h("ul", ref("oee-notes", { class: "notes small" })),
      ),
    ),
    commands ? commands.element : null,
    h(
      "section",
      { class: "card history" },
      h(
        "div",
        { class: "history-head" },
        h("h2", {}, t("machine.history")),
        h(
          "div",
          ref("ranges", { class: "ranges", role: "group", "aria-label": t("machine.time_range") }),
          [...Object.keys(RANGES), "custom"].map((range) =>
            h("button", { type: "button", class: "chip", dataset: { range } }, t(`machine.range.${range}`)),
          ),
        ),
      ),
      h(
        "form",
        ref("custom", { class: "custom-range", hidden: true }),
        h("label", {}, `${t("machine.from")} `, h("input", { type: "datetime-local", name: "from", required: true })),
        h("label", {}, `${t("machine.to")} `, h("input", { type: "datetime-local", name: "to", required: true })),
        h("button", { type: "submit", class: "button" }, t("machine.show")),
      ),
      h("div", ref("tags", { class: "tag-picker", role: "group", "aria-label": t("machine.tags_label") })),
      h("p", ref("range-label", { class: "muted small" })),
      h("div", ref("charts", { class: "charts" })),
      h(
        "div",
        { class: "timeline-block" },
        h("h3", {}, t("machine.timeline")),
        h("div", ref("timeline", { class: "timeline" })),
        h("div", ref("timeline-axis", { class: "timeline-axis small muted" })),
        h("ul", ref("totals", { class: "timeline-totals small" })),
      ),
    ),
  );
}

/** Render machine `machineId` into `app`; `params` (the hash's query) holds range, from, to and tags. */
export function machineView(app, machineId, params) {
  const latest = new Map();
  const commands = COMMAND_ROLES.includes(session.read()?.role)
    ? commandsSection(machineId, { latestOf: (tag) => latest.get(tag) })
    : null;
  const root = layout(commands);
  const refs = refsOf(root);
  app.replaceChildren(root);
  app.dataset.view = "machine";
  app.dataset.loaded = "false";

  const asked = params.get("range");
  const view = {
    range: asked in RANGES || asked === "custom" ? asked : DEFAULT_RANGE,
    from: params.get("from"),
    to: params.get("to"),
    tags: params.get("tags") ? params.get("tags").split(",").filter(Boolean).slice(0, MAX_TAGS) : null,
  };
  if (view.range === "custom" && !(Date.parse(view.from) < Date.parse(view.to))) view.range = DEFAULT_RANGE;

  let machine = null;
  let state = null;
  const charts = new Map();
  let stopLive = () => {};
  let timer = null;
  let loads = 0;
  let stopped = false;

  // --- header and current values ------------------------------------------------------------------------------

  const drawHead = () => {
    refs.name.textContent = machine.name;
    const meta = [`${machine.site} / ${machine.code}`, machine.machine_type, machine.location];
    if (machine.ideal_cycle_time_s) meta.push(t("machine.ideal_cycle", { n: number(machine.ideal_cycle_time_s) }));
    refs.meta.textContent = meta.filter(Boolean).join(" · ");
    setStateBadge(refs.state, state?.state);
    refs.since.textContent = since(state?.since);
    setOnline(refs.online, machine.online);
    refs.online.title = t("machine.last_seen", { ago: ago(machine.last_seen_at) });
    document.title = `${machine.name} · Shopfloor`;
  };

  const drawValues = () => {
    const rows = [...latest.values()].sort((a, b) => a.tag.localeCompare(b.tag));
    refs.values.replaceChildren(
      ...rows.map((row) => {
        // An uncertain or bad value is greyed and says so; a bad one may have no value at all.
        const quality = row.quality || "good";
        return h(
          "tr",
          { dataset: { tag: row.tag, quality } },
          h("td", {}, row.tag),
          h(
            "td",
            { class: "num" },
            quality === "good"
              ? null
              : h("span", { class: "quality-badge", dataset: { quality } }, t(`quality.${quality}`)),
            h("span", { class: "value" }, row.value === null || row.value === undefined ? "—" : number(row.value)),
          ),
          h("td", { class: "muted", title: row.ts }, ago(row.ts)),
        );
      }),
    );
    refs["no-values"].hidden = rows.length > 0;
    commands?.drawLatest();
  };

  const takeLatest = (answer) => {
    for (const value of answer.values) latest.set(value.tag, value);
    state = answer.state;
  };

  // --- range and tags ---------------------------------------------------------------------------------------------

  const window_ = () => {
    if (view.range === "custom") return { from: new Date(view.from), to: new Date(view.to) };
    const to = new Date();
    return { from: new Date(to.getTime() - RANGES[view.range]), to };
  };

  const remember = () => {
    const query = new URLSearchParams({ range: view.range });
    if (view.range === "custom") {
      query.set("from", view.from);
      query.set("to", view.to);
    }
    if (view.tags.length) query.set("tags", view.tags.join(","));
    // Commas need no escaping in a fragment: keep "tags=a,b" readable (and shareable).
    history.replaceState(null, "", `#/machines/${machineId}?${String(query).replaceAll("%2C", ",")}`);
  };

  const drawRanges = () => {
    for (const button of refs.ranges.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === view.range));
    }
    refs.custom.hidden = view.range !== "custom";
    if (view.range === "custom") {
      refs.custom.from.value = toLocalInput(new Date(view.from));
      refs.custom.to.value = toLocalInput(new Date(view.to));
    }
  };

  const drawTagPicker = () => {
    const known = [...new Set([...latest.keys(), ...view.tags])].sort();
    if (!known.length) {
      refs.tags.replaceChildren(h("span", { class: "muted small" }, t("machine.no_tags")));
      return;
    }
    refs.tags.replaceChildren(
      ...known.map((tag) =>
        h(
          "button",
          {
            type: "button",
            class: "chip tag-chip",
            dataset: { tag },
            "aria-pressed": String(view.tags.includes(tag)),
            disabled: !view.tags.includes(tag) && view.tags.length >= MAX_TAGS,
          },
          tag,
        ),
      ),
    );
  };

  // --- history: charts, timeline, OEE -----------------------------------------------------------------------------

  const align = () => {
    const first = charts.values().next().value;
    alignTimeline(refs, first ? first.plotInsets() : null);
  };

  const syncCharts = () => {
    for (const [tag, chart] of charts) {
      if (!view.tags.includes(tag)) {
        chart.destroy();
        charts.delete(tag);
      }
    }
    view.tags.forEach((tag, index) => {
      if (!charts.has(tag)) {
        charts.set(
          tag,
          tagChart(refs.charts, {
            tag,
            color: COLORS[index % COLORS.length],
            syncKey: `m${machineId}`,
            onResize: align,
          }),
        );
      }
      refs.charts.append(charts.get(tag).element);
    });
  };

  const loadOee = async (from, to) => {
    // The current stage: running, or paused (the API takes `status` repeated).
    const stages = itemsOf(await getOptional(`/machines/${machineId}/stages?status=in_progress&status=paused`));
    const running = stages.find((item) => (item.stage || item).status === "in_progress") || stages[0];
    if (running) {
      const oee = await getOptional(`/stages/${(running.stage || running).id}/oee`);
      const context = stageContext(running);
      return { oee, context: oee ? context : t("machine.no_stage_oee", { context }) };
    }
    const oee = await getOptional(`/machines/${machineId}/oee`, { from, to });
    return {
      oee,
      context: oee ? t("machine.range_oee") : t("machine.no_stage"),
    };
  };

  const loadHistory = async () => {
    const load = ++loads;
    app.dataset.loaded = "false";
    const { from, to } = window_();
    const range = { from: from.toISOString(), to: to.toISOString() };
    syncCharts();
    try {
      const [readings, timeline, oee] = await Promise.all([
        view.tags.length
          ? get(`/machines/${machineId}/readings`, { ...range, tags: view.tags, bucket: "auto", agg: "avg" })
          : null,
        get(`/machines/${machineId}/states`, range),
        loadOee(range.from, range.to).catch((error) => ({
          oee: null,
          context: t("machine.oee_failed", { error: error.message }),
        })),
      ]);
      if (load !== loads || stopped) return;
      showError(refs.error, "");
      drawHead();
      for (const chart of charts.values()) chart.update(readings, "avg");
      const bucket = readings
        ? ` · ${readings.bucket === "raw" ? t("machine.raw") : t("machine.averages", { bucket: readings.bucket })}`
        : "";
      refs["range-label"].textContent = `${dateTime(range.from)} – ${dateTime(range.to)}${bucket}`;
      renderTimeline(refs, timeline);
      align();
      renderOee(refs, oee);
      app.dataset.loaded = "true";
    } catch (error) {
      if (load !== loads || stopped) return;
      const detail = error instanceof ApiError ? error.message : t("machine.unreachable");
      showError(refs.error, t("machine.history_failed", { error: detail }));
      app.dataset.loaded = "error";
    }
  };

  const refreshLater = () => {
    clearTimeout(timer);
    if (!stopped && view.range !== "custom")
      timer = setTimeout(async () => {
        await loadHistory();
        refreshLater();
      }, REFRESH_MS);
  };

  const changed = () => {
    remember();
    drawRanges();
    drawTagPicker();
    loadHistory();
    refreshLater();
  };

  // --- events -----------------------------------------------------------------------------------------------------

  refs.ranges.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-range]");
    if (!button || !machine) return;
    if (button.dataset.range === "custom") {
      const { from, to } = window_();
      Object.assign(view, { range: "custom", from: from.toISOString(), to: to.toISOString() });
    } else {
      view.range = button.dataset.range;
    }
    changed();
  });

  refs.custom.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!machine) return;
    // The inputs hold plant time (see toLocalInput), whatever the browser's zone.
    const from = fromLocalInput(refs.custom.from.value);
    const to = fromLocalInput(refs.custom.to.value);
    if (!(from < to)) {
      showError(refs.error, t("machine.bad_range"));
      return;
    }
    Object.assign(view, { from: from.toISOString(), to: to.toISOString() });
    changed();
  });

  refs.tags.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-tag]");
    if (!button || !machine) return;
    const tag = button.dataset.tag;
    view.tags = view.tags.includes(tag) ? view.tags.filter((item) => item !== tag) : [...view.tags, tag];
    changed();
  });

  const live = {
    onReadings(data) {
      for (const reading of data.readings || []) {
        const known = latest.get(reading.tag);
        if (!known || Date.parse(reading.ts) >= Date.parse(known.ts)) latest.set(reading.tag, reading);
      }
      drawValues();
    },
    onState(data) {
      if (!state || Date.parse(data.ts) >= Date.parse(state.since)) {
        state = state?.state === data.state ? state : { state: data.state, since: data.ts };
        drawHead();
      }
    },
    onStatus(data) {
      Object.assign(machine, { online: data.online, last_seen_at: data.last_seen_at });
      drawHead();
    },
    async poll() {
      const [fresh, answer] = await Promise.all([get(`/machines/${machineId}`), get(`/machines/${machineId}/latest`)]);
      if (stopped) return;
      machine = fresh;
      takeLatest(answer);
      drawHead();
      drawValues();
    },
    onMode(mode) {
      refs.mode.textContent = t(`mode.${mode}`);
      refs.mode.dataset.mode = mode;
    },
  };

  // --- start ------------------------------------------------------------------------------------------------------

  (async () => {
    try {
      const [found, answer] = await Promise.all([get(`/machines/${machineId}`), get(`/machines/${machineId}/latest`)]);
      if (stopped) return;
      machine = found;
      takeLatest(answer);
    } catch (error) {
      if (stopped) return;
      refs.name.textContent = t("machine.title");
      showError(
        refs.error,
        error.status === 404 ? t("machine.not_found") : t("machine.load_failed", { error: error.message }),
      );
      app.dataset.loaded = "error";
      return;
    }
    if (view.tags === null) view.tags = [...latest.keys()].sort().slice(0, DEFAULT_TAGS);
    drawHead();
    drawValues();
    changed();
    stopLive = follow(machineId, live);
  })();

  return {
    destroy() {
      stopped = true;
      stopLive();
      commands?.destroy();
      clearTimeout(timer);
      for (const chart of charts.values()) chart.destroy();
      document.title = "Shopfloor · operator view";
    },
  };
}
