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

/** The logged-in user, kept for this browser tab only (sessionStorage). */
export const session = {
  read() {
    try {
      const value = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
      if (value && value.token && value.expiresAt > Date.now()) return value;
    } catch {
      // A damaged entry is the same as none.
    }
    return null;
  },
  save(username, token) {
    const value = {
      username,
      token: token.access_token,
      role: token.role,
      expiresAt: Date.now() + token.expires_in * 1000,
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
  return answerOf(await fetch(path + queryString(params), { headers: authorised(), signal }));
}

/** POST (no body) with the session's token; answers the JSON the API sent back. */
export async function post(path, { signal } = {}) {
  return answerOf(await fetch(path, { method: "POST", headers: authorised(), signal }));
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

/** The items of a list answer, whether it is a page (`{items}`) or a bare array. */
export function itemsOf(answer) {
  if (!answer) return [];
  return Array.isArray(answer) ? answer : answer.items || [];
}
