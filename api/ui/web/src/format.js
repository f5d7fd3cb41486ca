// Small formatting helpers shared by the views (pure functions, no DOM).

export const STATES = ["running", "idle", "setup", "alarm", "off"];

export const STATE_LABELS = {
  running: "Running",
  idle: "Idle",
  setup: "Setup",
  alarm: "Alarm",
  off: "Off",
  unknown: "Unknown",
};

/** "2 h 05 min", "15 min", "4 min 10 s", "12 s" for a number of seconds (seconds only below 10 minutes). */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const total = Math.max(0, Math.round(seconds));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  if (days) return `${days} d ${hours} h`;
  if (hours) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  if (minutes >= 10 || (minutes && !secs)) return `${minutes} min`;
  if (minutes) return `${minutes} min ${String(secs).padStart(2, "0")} s`;
  return `${secs} s`;
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

/** "12 s ago", "5 min ago", "3 h ago", or the date for older moments. */
export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = (now - Date.parse(iso)) / 1000;
  if (seconds < 0) return "just now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return dateTime(iso);
}

/** A moment in the browser's local time, e.g. "26 Nov 14:05". */
export function dateTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString("en-GB", {
    day: "numeric",
    month: "short",
    hour: "2-digit",
    minute: "2-digit",
  });
}

/** The value of an `<input type="datetime-local">` for a Date (local time, minutes). */
export function toLocalInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
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
