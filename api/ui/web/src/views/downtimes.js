// The unclassified stops of one machine, each given a reason with two taps (category, then reason); shared by the
// worker's tablet and the manager's page.
import { act } from "../actions.js";
import { h } from "../dom.js";
import { dateTime, duration, stateLabel } from "../format.js";
import { labelOf, t } from "../i18n.js";

// Quality reasons are for scrap, not for stops.
export const STOP_CATEGORIES = ["planned_stop", "availability", "performance"];

/** Two taps: the category buttons, then the reasons of the one tapped; `onPick(reason)` gets the reason. */
function classifier(reasons, onPick) {
  const box = h("div", { class: "classifier" });
  const showCategories = () => {
    box.replaceChildren(
      h("p", { class: "muted small" }, t("downtime.pick_category")),
      h(
        "div",
        { class: "tap-grid" },
        STOP_CATEGORIES.map((category) =>
          h(
            "button",
            { type: "button", class: "tap", dataset: { category }, onclick: () => showReasons(category) },
            t(`category.${category}`),
          ),
        ),
      ),
    );
  };
  const showReasons = (category) => {
    const shown = reasons.filter((reason) => reason.category === category && reason.active !== false);
    box.replaceChildren(
      h("p", { class: "muted small" }, `${t(`category.${category}`)} · ${t("downtime.pick_reason")}`),
      h(
        "div",
        { class: "tap-grid" },
        shown.map((reason) =>
          h(
            "button",
            { type: "button", class: "tap primary", dataset: { reason: reason.code }, onclick: () => onPick(reason) },
            labelOf(reason),
          ),
        ),
        h("button", { type: "button", class: "tap ghost", onclick: showCategories }, "←"),
      ),
    );
  };
  showCategories();
  return box;
}

/**
 * Draw `events` (the API's downtime pieces, unclassified) of machine `machineId` into `list`, newest first, the
 * first one open for classifying; a pick queues the classification and takes the stop off the list.
 */
export function drawDowntimes(list, { machineId, events, reasons, onQueued }) {
  const rows = [...events].sort((a, b) => Date.parse(b.start) - Date.parse(a.start));
  if (!rows.length) {
    list.replaceChildren(h("li", { class: "muted empty-row" }, t("downtime.none")));
    return;
  }
  const items = rows.map((event, index) => {
    const when = `${dateTime(event.start)} · ${event.end ? duration(event.duration_s) : t("downtime.open")}`;
    const item = h(
      "li",
      { class: "downtime", dataset: { start: event.start } },
      h(
        "div",
        { class: "downtime-head" },
        h("strong", {}, when),
        h("span", { class: "muted small" }, event.states.map(stateLabel).join(", ")),
      ),
    );
    const open = () => {
      for (const other of list.querySelectorAll(".classifier")) other.remove();
      item.append(
        classifier(reasons, (reason) => {
          act(
            `${t("action.classify")}: ${labelOf(reason)} (${dateTime(event.start)})`,
            `/machines/${machineId}/downtimes/classify`,
            {
              start: event.start,
              reason_code: reason.code,
            },
          );
          item.remove();
          if (!list.querySelector(".downtime")) drawDowntimes(list, { machineId, events: [], reasons, onQueued });
          onQueued?.();
        }),
      );
    };
    item.querySelector(".downtime-head").addEventListener("click", open);
    if (index === 0) queueMicrotask(open);
    return item;
  });
  list.replaceChildren(...items);
}
