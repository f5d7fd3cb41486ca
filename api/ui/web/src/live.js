// Live updates of one machine: the API's Server-Sent Events stream, or polling where the stream is not served.
// EventSource cannot send the Authorization header, so each connection is opened with a single-use ticket that a
// POST with the header returns (a token in the URL would stay in proxy logs and the browser history).
import { ApiError, post, session } from "./api.js";

export const POLL_MS = 5000;
// As the API's `retry:` advice (STREAM_RETRY_MS): EventSource's own reconnect cannot be used, it reuses the URL.
export const RECONNECT_MS = 3000;

/**
 * Follow a machine: `onReadings({readings})`, `onState({state, ts})`, `onStatus({online, last_seen_at})` for
 * stream events, `poll()` every POLL_MS when the stream cannot be used, `onMode("live" | "reconnecting" |
 * "polling")` when that changes. Answers a function that stops following.
 */
export function follow(machineId, { onReadings, onState, onStatus, poll, onMode }) {
  let stopped = false;
  let source = null;
  let timer = null;
  let retry = null;

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

  const reconnect = () => {
    onMode("reconnecting");
    retry = setTimeout(connect, RECONNECT_MS);
  };

  async function connect() {
    let ticket;
    try {
      ticket = await post(`/machines/${machineId}/stream/ticket`);
    } catch (error) {
      if (stopped) return;
      // Refused or not served (an API without tickets answers 404 or 405): poll; a 401 has already sent the user to
      // the login form. The API cannot be reached: try again later, as EventSource would.
      if (error instanceof ApiError) startPolling();
      else reconnect();
      return;
    }
    if (stopped) return;
    let opened = false;
    source = new EventSource(ticket.url);
    source.addEventListener("open", () => {
      opened = true;
      onMode("live");
    });
    source.addEventListener("readings", handle(onReadings));
    source.addEventListener("state", handle(onState));
    source.addEventListener("status", handle(onStatus));
    source.addEventListener("error", () => {
      if (stopped) return;
      // The browser would reconnect with the same URL, whose ticket is spent: close it and ask for a new ticket.
      source.close();
      source = null;
      if (opened) {
        reconnect();
      } else {
        // Not served (404), refused (401, 429, 503) or not an event stream: poll instead.
        startPolling();
      }
    });
  }

  if (typeof EventSource !== "function" || !session.read()) {
    startPolling();
  } else {
    connect();
  }

  return () => {
    stopped = true;
    if (source) source.close();
    clearTimeout(timer);
    clearTimeout(retry);
  };
}
