// The login form: POST /auth/login, then the caller shows what was asked for.
import { ApiError, login } from "../api.js";
import { fromTemplate, showError } from "../dom.js";

/** Render the form into `app`; `onLoggedIn(session)` runs after a successful login. */
export function loginView(app, { onLoggedIn, notice }) {
  const { root, refs } = fromTemplate("tpl-login");
  app.replaceChildren(root);
  app.dataset.view = "login";
  const form = root.querySelector("form");
  const button = form.querySelector("button");
  showError(refs.error, notice);
  form.username.focus();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = form.username.value.trim();
    const password = form.password.value;
    if (!username || !password) {
      showError(refs.error, "Enter your username and password.");
      return;
    }
    button.disabled = true;
    showError(refs.error, "");
    try {
      onLoggedIn(await login(username, password));
    } catch (error) {
      const message =
        error instanceof ApiError
          ? error.status === 401
            ? "Wrong username or password."
            : error.message
          : "The server cannot be reached. Try again in a moment.";
      showError(refs.error, message);
      form.password.select();
    } finally {
      button.disabled = false;
    }
  });
  return { destroy() {} };
}
