// The OEE card: the current stage's OEE (or the machine's over the shown range when no stage runs).
import { h } from "./dom.js";
import { dateTime, duration, percent, stateLabel } from "./format.js";
import { t } from "./i18n.js";

export const FIGURES = ["oee", "availability", "performance", "quality"];

function level(fraction) {
  if (fraction === null || fraction === undefined) return "unknown";
  if (fraction >= 0.85) return "good";
  if (fraction >= 0.6) return "fair";
  return "poor";
}

/** One figure of the OEE (`field` of FIGURES) as a labelled percentage with a meter, coloured by its level. */
export function oeeFigure(field, value) {
  const meter = h("span", { class: "meter-fill" });
  meter.style.width = `${Math.min(Math.max((value || 0) * 100, 0), 100)}%`;
  return h(
    "div",
    { class: `figure level-${level(value)} ${field === "oee" ? "main" : ""}`, dataset: { field } },
    h("span", { class: "figure-label" }, t(`oee.${field}`)),
    h("span", { class: "figure-value" }, percent(value)),
    h("span", { class: "meter" }, meter),
  );
}

/** Show `oee` (fields of the OEE endpoints) with a line saying what it covers; `oee` null says it is not known. */
export function renderOee(refs, { oee, context }) {
  refs.oee.dataset.state = oee ? "shown" : "none";
  refs["oee-context"].textContent = context;
  refs["oee-figures"].replaceChildren();
  refs["oee-details"].replaceChildren();
  refs["oee-notes"].replaceChildren();
  if (!oee) return;

  refs["oee-figures"].append(...FIGURES.map((field) => oeeFigure(field, oee[field])));

  const downtime = oee.downtime_s || {};
  const details = [
    [t("oee.counted"), oee.total_count ?? "–"],
    [t("oee.good_scrap"), `${oee.good_count ?? "–"} / ${oee.scrap_count ?? "–"}`],
    [t("oee.running"), duration(oee.running_s)],
    [t("oee.planned_production"), duration(oee.planned_production_s)],
    ...["alarm", "setup", "idle", "unknown"]
      .filter((kind) => downtime[kind])
      .map((kind) => [t("oee.downtime", { kind: stateLabel(kind) }), duration(downtime[kind])]),
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
        t("oee.issue", { ...issue, at: dateTime(issue.opened_at) }),
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
  const parts = [t("oee.stage", { name: stage.stage_name })];
  parts.push(
    order
      ? t("oee.work_order", { id: order.id, product: order.product_code, lot: order.lot_no })
      : t("oee.work_order_id", { id: stage.work_order_id }),
  );
  if (stage.status === "paused") parts.push(t("oee.paused"));
  if (stage.actual_start) parts.push(t("oee.started", { at: dateTime(stage.actual_start) }));
  return parts.join(" · ");
}
