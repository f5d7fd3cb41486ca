// The machine list: online / offline, current state and last seen of each machine, refreshed every few seconds.
import { getList, getOptional } from "../api.js";
import { fromTemplate, showError } from "../dom.js";
import { STATE_LABELS, ago } from "../format.js";

const REFRESH_MS = 10000;
const PARALLEL = 6;

async function eachLimited(items, limit, work) {
  const queue = [...items];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await work(queue.shift());
  });
  await Promise.all(workers);
}

/** Fill a state badge element: its text, and data-state (which the stylesheet colours). */
export function setStateBadge(element, state) {
  const name = state || "unknown";
  element.textContent = STATE_LABELS[name] || name;
  element.dataset.state = name;
}

/** Fill an online indicator: online, offline, or unknown (no status message seen yet). */
export function setOnline(element, online) {
  const name = online === true ? "online" : online === false ? "offline" : "unknown";
  element.dataset.online = name;
  element.title = { online: "Online", offline: "Offline", unknown: "No status received" }[name];
  if (element.classList.contains("online-pill")) element.textContent = element.title;
}

/** Render the list into `app` and keep it fresh until `destroy()`. */
export function machinesView(app) {
  const { root, refs } = fromTemplate("tpl-machines");
  app.replaceChildren(root);
  app.dataset.view = "machines";
  let machines = [];
  let total = 0;
  const states = new Map();
  let timer = null;
  let stopped = false;

  const draw = () => {
    const needle = refs.filter.value.trim().toLowerCase();
    const shown = machines.filter((machine) =>
      [machine.name, machine.code, machine.site].some((text) => text.toLowerCase().includes(needle)),
    );
    refs.grid.replaceChildren(
      ...shown.map((machine) => {
        const card = fromTemplate("tpl-machine-card");
        const link = card.root.querySelector("a");
        link.href = `#/machines/${machine.id}`;
        link.dataset.machineId = String(machine.id);
        card.refs.name.textContent = machine.name;
        card.refs.code.textContent = `${machine.site} / ${machine.code}${machine.location ? ` · ${machine.location}` : ""}`;
        setOnline(card.refs.online, machine.online);
        setStateBadge(card.refs.state, states.get(machine.id)?.state);
        const seen = `seen ${ago(machine.last_seen_at)}`;
        card.refs.seen.textContent = machine.online === false ? `offline · ${seen}` : seen;
        return card.root;
      }),
    );
    const online = machines.filter((machine) => machine.online).length;
    const alarms = [...states.values()].filter((state) => state?.state === "alarm").length;
    // More machines than one page holds: say how many are not shown rather than under-count the plant.
    const count = total > machines.length ? `${machines.length} of ${total}` : `${machines.length}`;
    refs.summary.textContent = `${count} machines · ${online} online${alarms ? ` · ${alarms} in alarm` : ""}`;
    refs.empty.hidden = machines.length > 0;
  };

  const load = async () => {
    try {
      const page = await getList("/machines", { limit: 500 });
      total = page.total;
      machines = [...page.items].sort(
        (a, b) => a.site.localeCompare(b.site) || a.name.localeCompare(b.name) || a.id - b.id,
      );
      await eachLimited(machines, PARALLEL, async (machine) => {
        const latest = await getOptional(`/machines/${machine.id}/latest`);
        states.set(machine.id, latest?.state || null);
      });
      showError(refs.error, "");
      if (!stopped) draw();
      app.dataset.loaded = "true";
    } catch (error) {
      if (!stopped) showError(refs.error, `Could not load the machines: ${error.message}`);
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  };

  refs.filter.addEventListener("input", draw);
  load();
  return {
    destroy() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
