// One uPlot chart per tag; the charts share a cursor, and each says what it plots on data attributes.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import { h } from "./dom.js";
import { number, plantZoneName, plotData, wallClock } from "./format.js";
import { dateLocale, t } from "./i18n.js";

export const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];
const HEIGHT = 200;
const AXIS = { stroke: "#475569", grid: { stroke: "#e2e8f0", width: 1 }, ticks: { stroke: "#cbd5e1", width: 1 } };

const pad = (n) => String(n).padStart(2, "0");

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
 * then carries data-points (plotted, non-null points), data-bucket, data-y-min and data-y-max.
 */
export function tagChart(parent, { tag, color, syncKey, onResize }) {
  const empty = h("p", { class: "chart-empty muted small", hidden: true }, t("chart.empty", { tag }));
  const plot = h("div", { class: "chart-plot" });
  const element = h(
    "figure",
    { class: "chart", dataset: { chartTag: tag } },
    h("figcaption", {}, h("span", { class: "swatch", dataset: { color } }), tag),
    plot,
    empty,
  );
  element.querySelector(".swatch").style.background = color;
  parent.append(element);

  let range = [0, 1];
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
          value: (_u, value) => number(value),
        },
      ],
      axes: [
        { ...AXIS, values: timeTicks },
        { ...AXIS, size: 64, values: (_u, ticks) => ticks.map(number) },
      ],
    },
    [[], []],
    plot,
  );

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
