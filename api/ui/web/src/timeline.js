// The state timeline: one bar over the chosen range, a coloured segment per state interval, and the totals.
import { h } from "./dom.js";
import { STATES, dateTime, duration, stateLabel } from "./format.js";
import { t } from "./i18n.js";

/** Draw `answer` (the states endpoint's `{from, to, timeline, totals}`) into the bar, its axis and the totals. */
export function renderTimeline(refs, answer) {
  const bar = refs.timeline;
  const start = Date.parse(answer.from);
  const span = Math.max(Date.parse(answer.to) - start, 1);
  bar.replaceChildren();
  for (const interval of answer.timeline) {
    const left = ((Date.parse(interval.start) - start) / span) * 100;
    const width = ((Date.parse(interval.end) - Date.parse(interval.start)) / span) * 100;
    const label = `${stateLabel(interval.state)}: ${dateTime(interval.start)} – ${dateTime(
      interval.end,
    )} (${duration(interval.duration_s)})`;
    const segment = h("div", {
      class: "segment",
      title: label,
      "aria-label": label,
      role: "img",
      dataset: { state: interval.state, start: interval.start, end: interval.end },
    });
    // CSSOM, not a style attribute: allowed by the page's Content-Security-Policy.
    segment.style.left = `${left}%`;
    segment.style.width = `${Math.max(width, 0.15)}%`;
    bar.append(segment);
  }
  bar.dataset.segments = String(answer.timeline.length);
  bar.classList.toggle("is-empty", answer.timeline.length === 0);
  bar.title = answer.timeline.length ? "" : t("timeline.empty");

  refs["timeline-axis"].replaceChildren(h("span", {}, dateTime(answer.from)), h("span", {}, dateTime(answer.to)));

  const totals = refs.totals;
  totals.replaceChildren();
  for (const state of STATES) {
    const seconds = answer.totals[state] || 0;
    totals.append(
      h(
        "li",
        { dataset: { state, seconds: String(seconds) }, class: seconds ? "" : "zero" },
        h("span", { class: "swatch" }),
        `${stateLabel(state)} `,
        h("strong", {}, duration(seconds)),
      ),
    );
  }
}

/** Line the bar up with a chart's plotting area (`insets` from the chart), so a segment sits under its readings. */
export function alignTimeline(refs, insets) {
  for (const element of [refs.timeline, refs["timeline-axis"]]) {
    element.style.marginLeft = insets ? `${insets.left}px` : "";
    element.style.marginRight = insets ? `${insets.right}px` : "";
  }
}
