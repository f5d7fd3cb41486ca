// Small formatting helpers shared by the views (pure functions, no DOM), in the current language.
import { dateLocale, t } from "./i18n.js";

export const STATES = ["running", "idle", "setup", "alarm", "off"];

/** A machine state's name in the current language ("unknown" for none, the code itself for one we do not know). */
export function stateLabel(state) {
  const name = state || "unknown";
  return [...STATES, "unknown"].includes(name) ? t(`state.${name}`) : name;
}

/** "2 h 05 min", "15 min", "4 min 10 s", "12 s" ("2 sa 05 dk"…) for a number of seconds (seconds only below 10
 * minutes). */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const total = Math.max(0, Math.round(seconds));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  const [d, h, min, s] = ["unit.d", "unit.h", "unit.min", "unit.s"].map((key) => t(key));
  if (days) return `${days} ${d} ${hours} ${h}`;
  if (hours) return `${hours} ${h} ${String(minutes).padStart(2, "0")} ${min}`;
  if (minutes >= 10 || (minutes && !secs)) return `${minutes} ${min}`;
  if (minutes) return `${minutes} ${min} ${String(secs).padStart(2, "0")} ${s}`;
  return `${secs} ${s}`;
}

/** A fraction as a percentage with one decimal, or a dash when unknown. */
export function percent(fraction) {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return "–";
  return `${(fraction * 100).toFixed(1)} %`;
}

/** A reading's value: integers as they are, others with up to 3 significant decimals. */
export function number(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  if (Number.isInteger(value)) return value.toLocaleString("en-GB");
  const digits = Math.abs(value) >= 100 ? 1 : Math.abs(value) >= 1 ? 2 : 3;
  return value.toLocaleString("en-GB", { maximumFractionDigits: digits });
}

/** "12 s ago", "5 min ago", "3 h ago" ("5 dk önce"…), or the date for older moments. */
export function ago(iso, now = Date.now()) {
  if (!iso) return t("time.never");
  const seconds = (now - Date.parse(iso)) / 1000;
  if (seconds < 0) return t("time.just_now");
  if (seconds < 60) return t("time.ago", { time: `${Math.round(seconds)} ${t("unit.s")}` });
  if (seconds < 3600) return t("time.ago", { time: `${Math.round(seconds / 60)} ${t("unit.min")}` });
  if (seconds < 86400) return t("time.ago", { time: `${Math.round(seconds / 3600)} ${t("unit.h")}` });
  return dateTime(iso);
}

// Every time is shown on the plant's clock (PLANT_TIMEZONE, from GET /config), whatever the browser's own zone.
let plantZone = "UTC";

/** Show times in `zone` (an IANA name) from now on. */
export function setPlantZone(zone) {
  plantZone = zone;
}

/** The IANA name of the zone times are shown in. */
export function plantZoneName() {
  return plantZone;
}

/** A moment on the plant's clock, e.g. "26 Nov 14:05" ("26 Kas 14:05" in Turkish). */
export function dateTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString(dateLocale(), {
    day: "numeric",
    month: "short",
    hour: "2-digit",
    minute: "2-digit",
    timeZone: plantZone,
  });
}

/** The plant's wall-clock time of a Date, e.g. "14:05". */
export function clockTime(date) {
  return date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: plantZone });
}

/** A Date's fields on the plant's wall clock, as numbers: year, month (1-12), day, hour, minute, second. */
export function wallClock(date) {
  const fields = {};
  const format = new Intl.DateTimeFormat("en-GB", {
    timeZone: plantZone,
    hourCycle: "h23",
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "numeric",
    minute: "numeric",
    second: "numeric",
  });
  for (const { type, value } of format.formatToParts(date)) fields[type] = Number(value);
  return fields;
}

// Milliseconds the plant's clock is ahead of UTC at `ms`.
function offsetAt(ms) {
  const w = wallClock(new Date(ms));
  return Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second) - Math.floor(ms / 1000) * 1000;
}

/** The value of an `<input type="datetime-local">` for a Date: the plant's wall clock, to the minute. */
export function toLocalInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  const w = wallClock(date);
  return `${w.year}-${pad(w.month)}-${pad(w.day)}T${pad(w.hour)}:${pad(w.minute)}`;
}

/**
 * The Date an `<input type="datetime-local">` value means on the plant's clock, read as the API reads a time
 * without an offset: in an hour repeated when clocks go back, the first one; in an hour skipped when they go
 * forward, as if they had not moved yet.
 */
export function fromLocalInput(value) {
  const match = /^(\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d)/.exec(value || "");
  if (!match) return new Date(Number.NaN);
  const [year, month, date, hour, minute] = match.slice(1).map(Number);
  const wall = Date.UTC(year, month - 1, date, hour, minute);
  const before = offsetAt(wall - 86400e3);
  const after = offsetAt(wall + 86400e3);
  const fits = [before, after].map((offset) => wall - offset).filter((ms) => wall - offsetAt(ms) === ms);
  return new Date(fits.length ? Math.min(...fits) : wall - before);
}

/** Seconds of a bucket name the API answers ("1m", "5m", "15m", "1h", "1d"); null for "raw". */
export function bucketSeconds(bucket) {
  const match = /^(\d+)([mhd])$/.exec(bucket || "");
  if (!match) return null;
  return Number(match[1]) * { m: 60, h: 3600, d: 86400 }[match[2]];
}

/**
 * uPlot data for one series: x in seconds and y, with a null after each gap longer than 1.5 buckets, so the line
 * breaks where the machine sent nothing instead of bridging the gap.
 */
export function plotData(points, field, bucket) {
  const step = bucketSeconds(bucket);
  const xs = [];
  const ys = [];
  let previous = null;
  for (const point of points) {
    const x = Date.parse(point.t) / 1000;
    const y = point[field];
    if (step && previous !== null && x - previous > step * 1.5) {
      xs.push(previous + step);
      ys.push(null);
    }
    xs.push(x);
    ys.push(typeof y === "number" ? y : null);
    previous = x;
  }
  return [xs, ys];
}

/**
 * The spans of a series whose data is not good, adjacent ones of the same kind merged: `{from, to, quality, n}` in
 * seconds, `n` the not-good readings in it. Raw points: an uncertain or bad reading, from its time to the next
 * reading's (the last one's to `end`), of its quality. Buckets holding a `not_good` reading: the bucket, "not-good"
 * when it has no good value left (a count of 0, or no `field`, the plotted aggregate: `count` comes only when
 * asked), "partly-good" otherwise.
 */
export function qualitySpans(points, field, bucket, end) {
  const step = bucketSeconds(bucket);
  const spans = [];
  points.forEach((point, index) => {
    const from = Date.parse(point.t) / 1000;
    let quality = null;
    let n = 0;
    let to;
    if (step) {
      n = point.not_good || 0;
      if (n > 0) quality = point.count > 0 || typeof point[field] === "number" ? "partly-good" : "not-good";
      to = from + step;
    } else {
      if (point.quality === "uncertain" || point.quality === "bad") quality = point.quality;
      n = 1;
      to = index + 1 < points.length ? Date.parse(points[index + 1].t) / 1000 : Math.max(end, from);
    }
    if (!quality) return;
    const last = spans[spans.length - 1];
    if (last && last.quality === quality && last.to === from) {
      last.to = to;
      last.n += n;
    } else {
      spans.push({ from, to, quality, n });
    }
  });
  return spans;
}
