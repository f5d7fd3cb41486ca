// One uPlot chart per tag; the charts share a cursor, and each says what it plots on data attributes. Spans whose
// data is not good are shaded grey behind the line, so a frozen or guessed value does not pass for a measured one.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import { h } from "./dom.js";
import { number, plantZoneName, plotData, qualitySpans, wallClock } from "./format.js";
import { dateLocale, t } from "./i18n.js";

export const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];
const HEIGHT = 200;
const AXIS = { stroke: "#475569", grid: { stroke: "#e2e8f0", width: 1 }, ticks: { stroke: "#cbd5e1", width: 1 } };

const pad = (n) => String(n).padStart(2, "0");
const notGoodText = (n) => (n === 1 ? t("chart.not_good_one") : t("chart.not_good", { n }));

/** Time-axis labels in 24-hour plant time; the date under the first label of each day (alone for day steps). */
function timeTicks(_u, ticks, _axis, _space, step) {
  const dayOf = new Intl.DateTimeFormat(dateLocale(), { day: "numeric", month: "short", timeZone: plantZoneName() });
  return ticks.map((tick, index) => {
    const moment = new Date(tick * 1000);
    const day = dayOf.format(moment);
    if (step >= 86400) return day;
    const wall = wallClock(moment);
    const clock = `${pad(wall.hour)}:${pad(wall.minute)}`;
    const firstOfDay = index === 0 || dayOf.format(new Date(ticks[index - 1] * 1000)) !== day;
    return firstOfDay ? `${clock}\n${day}` : clock;
  });
}

/**
 * A chart of one tag in `parent`. `update(answer)` draws a series of the readings endpoint's answer; the element
 * then carries data-points (plotted, non-null points), data-bucket, data-y-min, data-y-max and data-not-good (the
 * uncertain and bad readings in the range). Each span of them is a `.quality-band` behind the plot, its
 * data-quality "uncertain" or "bad" (raw readings) or "not-good" or "partly-good" (buckets with no good value left,
 * or with some), data-readings how many.
 */
export function tagChart(parent, { tag, color, syncKey, onResize }) {
  const empty = h("p", { class: "chart-empty muted small", hidden: true }, t("chart.empty", { tag }));
  const plot = h("div", { class: "chart-plot" });
  const element = h(
    "figure",
    { class: "chart", dataset: { chartTag: tag } },
    h(
      "figcaption",
      {},
      h("span", { class: "swatch", dataset: { color } }),
      tag,
      h("span", { class: "quality-note muted small", hidden: true }),
    ),
    plot,
    empty,
  );
  element.querySelector(".swatch").style.background = color;
  parent.append(element);
  const note = element.querySelector(".quality-note");
  const bands = h("div", { class: "quality-bands" });

  let range = [0, 1];
  let spans = [];
  // Not-good readings by x (seconds), for the legend at the cursor: a bucket's count, or a raw reading's quality.
  let notGood = new Map();

  const placeBands = (u) => {
    const width = u.over.clientWidth;
    spans.forEach((span, index) => {
      const band = bands.children[index];
      const left = Math.min(Math.max(u.valToPos(span.from, "x"), 0), width);
      const right = Math.min(Math.max(u.valToPos(span.to, "x"), 0), width);
      band.style.left = `${left}px`;
      band.style.width = `${right - left}px`;
      band.hidden = !(right > left);
    });
  };

  const legendValue = (u, value, _series, index) => {
    const shown = number(value);
    const flaw = index === null || index === undefined ? null : notGood.get(u.data[0][index]);
    if (typeof flaw === "number") return `${shown} · ${notGoodText(flaw)}`;
    return flaw ? `${shown} · ${t(`quality.${flaw}`)}` : shown;
  };

  const chart = new uPlot(
    {
      width: Math.max(plot.clientWidth, 280),
      height: HEIGHT,
      cursor: { sync: { key: syncKey }, drag: { x: false, y: false } },
      legend: { show: true, live: true },
      scales: { x: { time: true, range: () => range } },
      // Ticks and the legend's time on the plant's clock (ticks fall on its hours and midnights).
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), plantZoneName()),
      series: [
        { value: "{YYYY}-{MM}-{DD} {HH}:{mm}" },
        {
          label: tag,
          stroke: color,
          width: 2,
          fill: `${color}1f`,
          spanGaps: false,
          value: legendValue,
        },
      ],
      axes: [
        { ...AXIS, values: timeTicks },
        { ...AXIS, size: 64, values: (_u, ticks) => ticks.map(number) },
      ],
      hooks: { draw: [placeBands] },
    },
    [[], []],
    plot,
  );
  chart.under.append(bands);

  const resize = new ResizeObserver(() => {
    const width = Math.max(plot.clientWidth, 280);
    if (Math.abs(width - chart.width) > 1) {
      chart.setSize({ width, height: HEIGHT });
      if (onResize) onResize();
    }
  });
  resize.observe(plot);

  return {
    element,
    chart,
    /** Draw the series of this tag from a readings answer (`bucket`, `from`, `to`, `series`). */
    update(answer, field) {
      const series = answer.series.find((item) => item.tag === tag) || { points: [] };
      const data = plotData(series.points, field, answer.bucket);
      range = [Date.parse(answer.from) / 1000, Date.parse(answer.to) / 1000];
      spans = qualitySpans(series.points, field, answer.bucket, range[1]);
      bands.replaceChildren(
        ...spans.map((span) =>
          h("div", { class: "quality-band", dataset: { quality: span.quality, readings: String(span.n) } }),
        ),
      );
      notGood = new Map();
      for (const point of series.points) {
        const flaw = answer.bucket === "raw" ? point.quality : point.not_good;
        if (flaw) notGood.set(Date.parse(point.t) / 1000, flaw);
      }
      const total = spans.reduce((sum, span) => sum + span.n, 0);
      note.textContent = notGoodText(total);
      note.hidden = total === 0;
      element.dataset.notGood = String(total);
      chart.setData(data);
      const values = data[1].filter((value) => value !== null);
      element.dataset.points = String(values.length);
      element.dataset.bucket = answer.bucket;
      element.dataset.yMin = values.length ? String(Math.min(...values)) : "";
      element.dataset.yMax = values.length ? String(Math.max(...values)) : "";
      empty.hidden = values.length > 0;
    },
    /** The gaps left and right of the plotting area, in CSS pixels, within the chart's width. */
    plotInsets() {
      const left = chart.over.offsetLeft;
      return { left, right: Math.max(plot.clientWidth - left - chart.over.offsetWidth, 0) };
    },
    destroy() {
      resize.disconnect();
      chart.destroy();
      element.remove();
    },
  };
}
