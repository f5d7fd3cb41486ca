// Live updates of one machine: the API's Server-Sent Events stream, or polling where the stream is not served.
import { session } from "./api.js";

export const POLL_MS = 5000;

/**
 * Follow a machine: `onReadings({readings})`, `onState({state, ts})`, `onStatus({online, last_seen_at})` for
 * stream events, `poll()` every POLL_MS when the stream cannot be used, `onMode("live" | "reconnecting" |
 * "polling")` when that changes. Answers a function that stops following.
 */
export function follow(machineId, { onReadings, onState, onStatus, poll, onMode }) {
  let stopped = false;
  let source = null;
  let timer = null;

  const startPolling = () => {
    onMode("polling");
    const tick = async () => {
      if (stopped) return;
      try {
        await poll();
      } catch {
        // The next tick tries again; a 401 has already sent the user to the login form.
      }
      if (!stopped) timer = setTimeout(tick, POLL_MS);
    };
    timer = setTimeout(tick, POLL_MS);
  };

  const handle = (callback) => (event) => {
    try {
      const data = JSON.parse(event.data);
      if (String(data.machine_id) === String(machineId)) callback(data);
    } catch {
      // A malformed event is ignored, not fatal.
    }
  };

  const token = session.read()?.token;
  if (typeof EventSource !== "function" || !token) {
    startPolling();
  } else {
    source = new EventSource(`/machines/${machineId}/stream?access_token=${encodeURIComponent(token)}`);
    source.addEventListener("open", () => onMode("live"));
    source.addEventListener("readings", handle(onReadings));
    source.addEventListener("state", handle(onState));
    source.addEventListener("status", handle(onStatus));
    source.addEventListener("error", () => {
      if (stopped) return;
      if (source.readyState === EventSource.CLOSED) {
        // Not served (404), refused (401) or not an event stream: the browser gives up, so poll instead.
        source.close();
        source = null;
        startPolling();
      } else {
        onMode("reconnecting");
      }
    });
  }

  return () => {
    stopped = true;
    if (source) source.close();
    clearTimeout(timer);
  };
}
