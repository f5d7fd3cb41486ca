// The OEE card: the current stage's OEE (or the machine's over the shown range when no stage runs).
import { h } from "./dom.js";
import { dateTime, duration, percent } from "./format.js";

const FIGURES = [
  ["oee", "OEE"],
  ["availability", "Availability"],
  ["performance", "Performance"],
  ["quality", "Quality"],
];

function level(fraction) {
  if (fraction === null || fraction === undefined) return "unknown";
  if (fraction >= 0.85) return "good";
  if (fraction >= 0.6) return "fair";
  return "poor";
}

/** Show `oee` (fields of the OEE endpoints) with a line saying what it covers; `oee` null says it is not known. */
export function renderOee(refs, { oee, context }) {
  refs.oee.dataset.state = oee ? "shown" : "none";
  refs["oee-context"].textContent = context;
  refs["oee-figures"].replaceChildren();
  refs["oee-details"].replaceChildren();
  refs["oee-notes"].replaceChildren();
  if (!oee) return;

  for (const [field, label] of FIGURES) {
    const value = oee[field];
    const meter = h("span", { class: "meter-fill" });
    meter.style.width = `${Math.min(Math.max((value || 0) * 100, 0), 100)}%`;
    refs["oee-figures"].append(
      h(
        "div",
        { class: `figure level-${level(value)} ${field === "oee" ? "main" : ""}`, dataset: { field } },
        h("span", { class: "figure-label" }, label),
        h("span", { class: "figure-value" }, percent(value)),
        h("span", { class: "meter" }, meter),
      ),
    );
  }

  const downtime = oee.downtime_s || {};
  const details = [
    ["Counted", oee.total_count ?? "–"],
    ["Good / scrap", `${oee.good_count ?? "–"} / ${oee.scrap_count ?? "–"}`],
    ["Running", duration(oee.running_s)],
    ["Planned production", duration(oee.planned_production_s)],
    ...["alarm", "setup", "idle", "unknown"]
      .filter((kind) => downtime[kind])
      .map((kind) => [`Downtime (${kind})`, duration(downtime[kind])]),
  ];
  for (const [term, value] of details) {
    refs["oee-details"].append(h("div", {}, h("dt", {}, term), h("dd", {}, String(value))));
  }
  for (const note of oee.notes || []) refs["oee-notes"].append(h("li", {}, String(note)));
  for (const issue of oee.issues || []) {
    refs["oee-notes"].append(
      h(
        "li",
        { class: "issue" },
        `Issue (${issue.status}): ${issue.type}, ${issue.description} · ${dateTime(issue.opened_at)}`,
      ),
    );
  }
}

/**
 * What a machine-stages item (`{stage, work_order}`, or a bare stage) covers, e.g.
 * "Stage Enjeksiyon · work order 12 (P-100, lot L7) · started 26 Nov, 08:00".
 */
export function stageContext(item) {
  const stage = item.stage || item;
  const order = item.work_order;
  const parts = [`Stage ${stage.stage_name}`];
  parts.push(
    order ? `work order ${order.id} (${order.product_code}, lot ${order.lot_no})` : `work order ${stage.work_order_id}`,
  );
  if (stage.status === "paused") parts.push("paused");
  if (stage.actual_start) parts.push(`started ${dateTime(stage.actual_start)}`);
  return parts.join(" · ");
}
