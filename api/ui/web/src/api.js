// Calls to the Shopfloor API: the bearer token, RFC 9457 problems, and one signal when the session ends.

const TOKEN_KEY = "shopfloor.session";

/** A failed call: `status` and the problem document (title, detail, code) the API answered. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }

  get code() {
    return this.problem.code;
  }
}

/** The logged-in user, kept for this browser tab only (sessionStorage): a short access token, and the refresh
 * token that renews it for the rest of the shift. */
export const session = {
  read() {
    try {
      const value = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
      const now = Date.now();
      if (value && value.token && (value.expiresAt > now || value.refreshExpiresAt > now)) return value;
    } catch {
      // A damaged entry is the same as none.
    }
    return null;
  },
  save(username, token) {
    const now = Date.now();
    const value = {
      username,
      token: token.access_token,
      role: token.role,
      expiresAt: now + token.expires_in * 1000,
      refreshToken: token.refresh_token || null,
      refreshExpiresAt: token.refresh_token ? now + token.refresh_expires_in * 1000 : 0,
    };
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify(value));
    return value;
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** Fired on `window` when the API refuses the token (expired, user deactivated): the app goes back to login. */
export const SESSION_ENDED = "shopfloor:session-ended";

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return { title: response.statusText || `HTTP ${response.status}` };
  }
}

function queryString(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    search.set(name, Array.isArray(value) ? value.join(",") : String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** Log in with the API's JSON form; answers the saved session. */
export async function login(username, password) {
  const response = await fetch("/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return session.save(username.trim().toLowerCase(), await response.json());
}

// Renew the access token this long before it expires, so a call never goes out with a dying one.
const RENEW_BEFORE_MS = 30_000;
let renewing = null;

/** Trade the refresh token for new tokens (one request at a time, shared by every caller).
 * Answers the new session, or null when the login is over (the API refused the refresh token); throws an ApiError
 * when the API could not be asked (offline, 503), which leaves the session as it is. */
function renew() {
  const current = session.read();
  if (!current || !current.refreshToken) return Promise.resolve(null);
  renewing ??= (async () => {
    try {
      let response;
      try {
        response = await fetch("/auth/refresh", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ refresh_token: current.refreshToken }),
        });
      } catch {
        throw new ApiError(0, { title: "The API cannot be reached" });
      }
      if (response.status === 401) return null;
      if (!response.ok) throw new ApiError(response.status, await problemOf(response));
      const tokens = await response.json();
      // Logged out (or in as someone else) while this was on its way: keep what the tab holds now.
      if (session.read()?.refreshToken !== current.refreshToken) return null;
      return session.save(current.username, tokens);
    } finally {
      renewing = null;
    }
  })();
  return renewing;
}

/** Send a call with a live access token: renewed first when about to expire, and once more after a 401. */
async function withToken(path, init) {
  const current = session.read();
  if (current && current.expiresAt - Date.now() < RENEW_BEFORE_MS) await renew();
  const headers = () => ({ ...authorised(), ...init.headers });
  const response = await fetch(path, { ...init, headers: headers() });
  if (response.status !== 401 || !(await renew())) return response;
  return fetch(path, { ...init, headers: headers() });
}

/** End the login on the server too (its refresh token stops working), then forget it here. */
export async function logout() {
  // A renewal on its way would otherwise save a new token pair after the tab forgot the old one.
  await renewing?.catch(() => null);
  const current = session.read();
  session.clear();
  if (current && current.refreshToken) {
    try {
      await fetch("/auth/logout", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: current.refreshToken }),
      });
    } catch {
      // Offline: the refresh token expires on its own.
    }
  }
}

/** The headers of a call with the session's token. */
function authorised() {
  const current = session.read();
  const headers = { Accept: "application/json" };
  if (current) headers.Authorization = `Bearer ${current.token}`;
  return headers;
}

/** The JSON of a successful answer; an ApiError otherwise (a 401 ends the session). */
async function answerOf(response) {
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    if (response.status === 401) {
      session.clear();
      window.dispatchEvent(new CustomEvent(SESSION_ENDED, { detail: error.message }));
    }
    throw error;
  }
  return response.json();
}

/** GET a JSON resource with the session's token. */
export async function get(path, params, { signal } = {}) {
  return answerOf(await withToken(path + queryString(params), { signal }));
}

/** GET a list with the session's token: its items (the JSON array) and the size of the whole list, which the API
 * sends in `X-Total-Count` (a list may be longer than the page asked for). */
export async function getList(path, params, { signal } = {}) {
  const response = await withToken(path + queryString(params), { signal });
  const items = await answerOf(response);
  const total = Number.parseInt(response.headers.get("X-Total-Count") ?? "", 10);
  return { items, total: Number.isNaN(total) ? items.length : total };
}

/** POST (no body) with the session's token; answers the JSON the API sent back. */
export async function post(path, { signal } = {}) {
  return answerOf(await withToken(path, { method: "POST", signal }));
}

/** POST a JSON body (or none) with the session's token and an `Idempotency-Key`: sent again with the same key, the
 * API answers what it answered the first time instead of acting twice. */
export async function postAction(path, body, key) {
  return sendAction("POST", path, body, key);
}

/** Like `postAction` for any writing method (POST, PATCH, DELETE); an answer without a body (204) is null. */
export async function sendAction(method, path, body, key) {
  const headers = { "Idempotency-Key": key };
  if (body !== undefined && body !== null) headers["Content-Type"] = "application/json";
  const init = { method, headers };
  if (body !== undefined && body !== null) init.body = JSON.stringify(body);
  let response;
  try {
    response = await withToken(path, init);
  } catch {
    throw new ApiError(0, { title: "The API cannot be reached" });
  }
  if (response.status === 204) return null;
  return answerOf(response);
}

/** Like `get`, but a missing route or resource (404) or a route not deployed yet (405) answers null. */
export async function getOptional(path, params, options) {
  try {
    return await get(path, params, options);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 405)) return null;
    throw error;
  }
}

/** The items of a list answer (a JSON array); none for a missing one (`getOptional`'s null). */
export function itemsOf(answer) {
  return Array.isArray(answer) ? answer : [];
}
