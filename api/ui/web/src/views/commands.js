// Commands to one machine (planners and admins): a row per writable tag to send a setpoint, after a second click
// that says what will be written, and the machine's latest commands with what the gateway answered.
import { newKey } from "../actions.js";
import { ApiError, get, getList, postAction } from "../api.js";
import { h, showError } from "../dom.js";
import { dateTime, number } from "../format.js";
import { t } from "../i18n.js";

const LIST_SIZE = 10;
// A `sent` command is asked about this often until it is answered or has expired.
const POLL_MS = 1000;
// The server turns a `sent` command into `expired` at its own clock: ask once more a little after the expiry.
const EXPIRY_GRACE_MS = 2000;
// An armed Send button (the second click writes to the machine) goes back to Send when left this long.
const CONFIRM_MS = 15000;

/** A value as the page shows it: On / Off for a bool tag, the number otherwise. */
function shown(value, type) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "boolean" || type === "bool") return value ? t("commands.on") : t("commands.off");
  return number(value);
}

/** What a tag may be set to, in words: a range, one of a few values, or on / off. */
function limitsText(spec) {
  if (spec.type === "bool") return t("commands.on_off");
  if (spec.allowed) return t("commands.one_of", { values: spec.allowed.map((value) => number(value)).join(", ") });
  const [min, max] = [spec.min, spec.max].map((bound) => (bound === null ? null : number(bound)));
  if (min !== null && max !== null) return t("commands.range", { min, max });
  if (min !== null) return t("commands.at_least", { min });
  if (max !== null) return t("commands.at_most", { max });
  return t("commands.any");
}

/** The value an input holds for `spec`, checked as the API checks it: `{value}`, or `{error}` saying why not. */
function checkValue(spec, raw) {
  if (spec.type === "bool") {
    if (raw === "true" || raw === "false") return { value: raw === "true" };
    return { error: t("commands.need_value") };
  }
  if (String(raw).trim() === "") return { error: t("commands.need_value") };
  const value = Number(raw);
  if (!Number.isFinite(value)) return { error: t("commands.not_number") };
  if (spec.type === "int" && !Number.isInteger(value)) return { error: t("commands.not_whole") };
  const words = { value: number(value) };
  if (spec.allowed && !spec.allowed.includes(value)) {
    return { error: t("commands.not_allowed", { ...words, values: spec.allowed.map((v) => number(v)).join(", ") }) };
  }
  if (spec.min !== null && value < spec.min) {
    return { error: t("commands.below_min", { ...words, min: number(spec.min) }) };
  }
  if (spec.max !== null && value > spec.max) {
    return { error: t("commands.above_max", { ...words, max: number(spec.max) }) };
  }
  return { value };
}

/** The input for a tag: a select for on / off or a few allowed values, a number field within the limits otherwise. */
function inputFor(spec) {
  const label = `${t("commands.new_value")}: ${spec.tag}`;
  const choices = spec.type === "bool" ? [true, false] : spec.allowed;
  if (choices) {
    return h(
      "select",
      { class: "setpoint-input", name: spec.tag, "aria-label": label },
      h("option", { value: "" }, t("commands.choose")),
      choices.map((value) => h("option", { value: String(value) }, shown(value, spec.type))),
    );
  }
  return h("input", {
    class: "setpoint-input",
    type: "number",
    name: spec.tag,
    "aria-label": label,
    min: spec.min ?? undefined,
    max: spec.max ?? undefined,
    step: spec.type === "int" ? "1" : "any",
    inputmode: spec.type === "int" ? "numeric" : "decimal",
  });
}

/** What to say when the API did not take a command. */
function failureText(error) {
  if (!(error instanceof ApiError) || error.status === 0) {
    return t("commands.not_sent", { error: t("machine.unreachable") });
  }
  if (error.code === "broker_unavailable") return t("commands.broker_unavailable");
  if (error.status === 422 || error.status === 409) return t("commands.refused", { error: error.message });
  return t("commands.not_sent", { error: error.message });
}

/** One command: its status as a badge, what it wrote (asked → read back), who asked and when, and why it did not. */
function commandItem(command, types) {
  return h(
    "li",
    { class: "command", dataset: { commandId: command.id, status: command.status } },
    h(
      "div",
      { class: "command-head" },
      h(
        "span",
        { class: "command-badge", dataset: { status: command.status } },
        t(`commands.status.${command.status}`),
      ),
      h(
        "span",
        { class: "muted small", title: command.requested_at },
        t("commands.by", { user: command.requested_by, at: dateTime(command.requested_at) }),
      ),
    ),
    h(
      "ul",
      { class: "command-writes" },
      command.writes.map((write) => {
        const type = types.get(write.tag);
        // What the gateway read back after writing; still to come while the command is sent.
        let readBack = "";
        if (write.read_back !== null && write.read_back !== undefined) readBack = ` → ${shown(write.read_back, type)}`;
        else if (command.status === "sent") readBack = " → …";
        return h(
          "li",
          { class: "command-write", dataset: { tag: write.tag, readBack: String(write.read_back ?? "") } },
          h("code", {}, write.tag),
          ` ${shown(write.value, type)}${readBack}`,
          write.old_value === null || write.old_value === undefined
            ? null
            : h("span", { class: "muted small" }, ` (${t("commands.was", { value: shown(write.old_value, type) })})`),
        );
      }),
    ),
    command.stage_id ? h("p", { class: "muted small" }, t("commands.job_data", { id: command.stage_id })) : null,
    command.reason ? h("p", { class: "command-reason small" }, command.reason) : null,
  );
}

/** What the server says of itself (GET /config, no token); nothing when it cannot be read (a refused send says it). */
async function serverConfig() {
  try {
    const response = await fetch("/config");
    return response.ok ? await response.json() : {};
  } catch {
    return {};
  }
}

/**
 * The commands block of machine `machineId`'s page: the setpoints card and the commands card. `latestOf(tag)`
 * answers the page's latest reading of a tag (or nothing); the page calls `drawLatest()` when its values change.
 */
export function commandsSection(machineId, { latestOf }) {
  const offNote = h("p", { class: "notice commands-off", role: "status", hidden: true }, t("commands.commands_off"));
  const setpoints = h("ul", { class: "setpoints", dataset: { ref: "setpoints" } });
  const setpointsNote = h("p", { class: "muted small", hidden: true });
  const list = h("ol", { class: "command-list", dataset: { ref: "command-list" } });
  const listNote = h("p", { class: "muted small", hidden: true }, t("commands.none"));
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const element = h(
    "div",
    { class: "columns even commands-block", dataset: { ref: "commands", loaded: "false" } },
    h(
      "section",
      { class: "card setpoints-card", dataset: { ref: "setpoints-card" } },
      h("h2", {}, t("commands.setpoints")),
      offNote,
      error,
      setpoints,
      setpointsNote,
    ),
    h("section", { class: "card commands-card" }, h("h2", {}, t("commands.title")), list, listNote),
  );

  let specs = [];
  let types = new Map();
  let commands = [];
  let rows = [];
  let commandsOff = false;
  let timer = null;
  let loads = 0;
  let stopped = false;

  // --- the commands list ------------------------------------------------------------------------------------------

  const drawCommands = () => {
    list.replaceChildren(...commands.map((command) => commandItem(command, types)));
    listNote.hidden = commands.length > 0;
  };

  const waiting = () =>
    commands.some(
      (command) => command.status === "sent" && Date.parse(command.expires_at) + EXPIRY_GRACE_MS > Date.now(),
    );

  const pollLater = () => {
    clearTimeout(timer);
    if (!stopped && waiting()) timer = setTimeout(loadCommands, POLL_MS);
  };

  async function loadCommands() {
    const load = ++loads;
    try {
      const { items } = await getList(`/machines/${machineId}/commands`, { limit: LIST_SIZE });
      if (stopped || load !== loads) return;
      commands = items;
      drawCommands();
    } catch (failure) {
      if (stopped || load !== loads) return;
      showError(error, t("commands.load_failed", { error: failure.message }));
    }
    pollLater();
  }

  // --- the setpoints ----------------------------------------------------------------------------------------------

  const showOff = () => {
    commandsOff = true;
    offNote.hidden = false;
    for (const row of rows) row.off();
  };

  const setpointRow = (spec) => {
    const input = inputFor(spec);
    const current = h("span", { class: "setpoint-current num" });
    const failure = h("p", { class: "form-error small", role: "alert", hidden: true });
    const send = h("button", { type: "button", class: "button", dataset: { action: "send" } }, t("commands.send"));
    const cancel = h(
      "button",
      { type: "button", class: "button", dataset: { action: "cancel" }, hidden: true },
      t("commands.cancel"),
    );
    const actions = h("span", { class: "setpoint-actions" }, send, cancel);
    const item = h(
      "li",
      { class: "setpoint", dataset: { tag: spec.tag, type: spec.type } },
      h(
        "div",
        { class: "setpoint-name" },
        h("code", {}, spec.tag),
        spec.description ? h("span", { class: "muted small" }, spec.description) : null,
      ),
      h("span", { class: "setpoint-limits small", title: t("commands.limits") }, limitsText(spec)),
      current,
      input,
      actions,
      failure,
    );
    // The same value sent again after a lost answer goes with the same key: the API acts once.
    let pending = null;
    let armed = null;
    let confirmTimer = null;

    const disarm = () => {
      clearTimeout(confirmTimer);
      armed = null;
      send.textContent = t("commands.send");
      send.classList.remove("primary");
      delete send.dataset.armed;
      cancel.hidden = true;
    };

    const arm = (value) => {
      armed = { value };
      send.textContent = t("commands.confirm", { value: shown(value, spec.type), tag: spec.tag });
      send.classList.add("primary");
      send.dataset.armed = "true";
      cancel.hidden = false;
      clearTimeout(confirmTimer);
      confirmTimer = setTimeout(disarm, CONFIRM_MS);
    };

    const submit = async (value) => {
      const body = { tag: spec.tag, value };
      const fingerprint = JSON.stringify(body);
      if (!pending || pending.fingerprint !== fingerprint) pending = { fingerprint, key: newKey() };
      send.disabled = true;
      send.textContent = t("commands.sending");
      cancel.hidden = true;
      let command;
      try {
        command = await postAction(`/machines/${machineId}/commands`, body, pending.key);
      } catch (refusal) {
        if (stopped) return;
        if (refusal instanceof ApiError && refusal.status !== 0) pending = null;
        send.disabled = false;
        disarm();
        if (refusal instanceof ApiError && refusal.code === "commands_off") {
          showOff();
          return;
        }
        showError(failure, failureText(refusal));
        // The API's own words (which limit, which tag) stay at hand, in English.
        failure.title = refusal.message;
        // A command the broker did not take is recorded as failed: show it in the list.
        if (refusal instanceof ApiError && refusal.code === "broker_unavailable") loadCommands();
        return;
      }
      pending = null;
      if (stopped) return;
      send.disabled = false;
      disarm();
      showError(failure, "");
      // Shown at once as sent; answers in flight from before it are dropped (`loads`), then it is followed.
      loads += 1;
      commands = [command, ...commands.filter((item) => item.id !== command.id)].slice(0, LIST_SIZE);
      drawCommands();
      pollLater();
    };

    send.addEventListener("click", () => {
      if (commandsOff || send.disabled) return;
      if (armed) {
        const { value } = armed;
        submit(value);
        return;
      }
      const checked = checkValue(spec, input.value);
      if (checked.error) {
        showError(failure, checked.error);
        failure.title = "";
        return;
      }
      showError(failure, "");
      arm(checked.value);
    });
    cancel.addEventListener("click", disarm);
    // A changed value needs its own confirmation.
    input.addEventListener("input", disarm);
    input.addEventListener("change", disarm);

    const drawCurrent = () => {
      const latest = latestOf(spec.tag);
      const value = latest?.value;
      current.textContent = value === null || value === undefined ? "–" : shown(value, spec.type);
      current.title = latest?.ts ? dateTime(latest.ts) : "";
      current.dataset.value = value === null || value === undefined ? "" : String(value);
    };
    drawCurrent();

    return {
      item,
      drawCurrent,
      off() {
        disarm();
        actions.hidden = true;
        input.disabled = true;
      },
      destroy() {
        clearTimeout(confirmTimer);
      },
    };
  };

  const drawSetpoints = () => {
    for (const row of rows) row.destroy();
    rows = specs.map(setpointRow);
    setpoints.replaceChildren(...rows.map((row) => row.item));
    setpointsNote.textContent = specs.length ? "" : t("commands.none_writable");
    setpointsNote.hidden = specs.length > 0;
    if (commandsOff) showOff();
  };

  // --- start ------------------------------------------------------------------------------------------------------

  (async () => {
    const load = ++loads;
    try {
      const [writable, listed, server] = await Promise.all([
        get(`/machines/${machineId}/writable-tags`),
        getList(`/machines/${machineId}/commands`, { limit: LIST_SIZE }),
        serverConfig(),
      ]);
      if (stopped) return;
      // Commands off on this server: said at once, not after a first send is refused.
      if (server.commands_enabled === false) commandsOff = true;
      specs = writable;
      types = new Map(specs.map((spec) => [spec.tag, spec.type]));
      drawSetpoints();
      if (load === loads) commands = listed.items;
      drawCommands();
      pollLater();
    } catch (failure) {
      if (stopped) return;
      // Not the user's to see (a role changed since login): the block goes, as it is never shown to workers.
      if (failure instanceof ApiError && failure.status === 403) {
        element.remove();
        return;
      }
      showError(error, t("commands.load_failed", { error: failure.message }));
    }
    element.dataset.loaded = "true";
  })();

  return {
    element,
    drawLatest() {
      for (const row of rows) row.drawCurrent();
    },
    destroy() {
      stopped = true;
      clearTimeout(timer);
      for (const row of rows) row.destroy();
    },
  };
}
