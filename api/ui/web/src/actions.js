// The tablet's actions (start, pause, counts, done, issues, classifications): each with its own Idempotency-Key,
// kept in order in localStorage and sent one after the other, so an action taken offline is sent when the network
// returns, and one retried after a lost answer acts once (the API replays its first answer for the same key).
import { ApiError, postAction, session } from "./api.js";

const QUEUE_KEY = "shopfloor.pending-actions";
const RETRY_MS = 5000;
// Fired on `window` when the queue changes or an action is answered:
// detail {kind: "sent" | "failed" | "changed", action, answer | error}.
export const ACTIONS_CHANGED = "shopfloor:actions-changed";

/** A random key (RFC 4122 version 4 shape); getRandomValues works on a plain-HTTP plant network too. */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function read() {
  try {
    const value = JSON.parse(localStorage.getItem(QUEUE_KEY) || "[]");
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}

function write(queue) {
  localStorage.setItem(QUEUE_KEY, JSON.stringify(queue));
}

function announce(kind, detail = {}) {
  window.dispatchEvent(new CustomEvent(ACTIONS_CHANGED, { detail: { kind, ...detail } }));
}

/** The current user's actions not sent yet, oldest first. */
export function pendingActions() {
  const user = session.read()?.username;
  return read().filter((action) => action.user === user);
}

/** True when the action should be sent again later (as opposed to an answer that refused it for good). */
function unreachable(error) {
  if (!(error instanceof ApiError)) return true;
  // 401: the login ended; the action waits for the next one of the same user.
  return (
    error.status === 0 || error.status === 401 || error.status >= 500 || error.code === "idempotency_key_in_progress"
  );
}

let flushing = null;
let timer = null;

function retryLater() {
  clearTimeout(timer);
  timer = setTimeout(flush, RETRY_MS);
}

/** Send the current user's queued actions in order; stops at the first that cannot reach the API. */
async function sendAll() {
  for (;;) {
    const [action] = pendingActions();
    if (!action) return;
    if (navigator.onLine === false) {
      retryLater();
      return;
    }
    let answer;
    try {
      answer = await postAction(action.path, action.body, action.key);
    } catch (error) {
      if (unreachable(error)) {
        retryLater();
        return;
      }
      // Refused (a stage already done, a bad quantity): sending it again would be refused again.
      write(read().filter((item) => item.key !== action.key));
      announce("failed", { action, error });
      continue;
    }
    write(read().filter((item) => item.key !== action.key));
    announce("sent", { action, answer });
  }
}

/** Start sending the queue (one run at a time, shared by every caller). */
export function flush() {
  flushing ??= sendAll().finally(() => {
    flushing = null;
  });
  return flushing;
}

/** Queue an action (`label` says what it is to the worker) behind the ones still pending and start sending. */
export function act(label, path, body = null) {
  const action = { key: newKey(), user: session.read()?.username, label, path, body, at: new Date().toISOString() };
  write([...read(), action]);
  announce("changed", { action });
  flush();
  return action;
}

window.addEventListener("online", () => flush());
