// The login form: POST /auth/login, then the caller shows what was asked for.
import { ApiError, login } from "../api.js";
import { h, showError } from "../dom.js";
import { t } from "../i18n.js";

/** Render the form into `app`; `onLoggedIn(session)` runs after a successful login. */
export function loginView(app, { onLoggedIn, notice }) {
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const username = h("input", { name: "username", autocomplete: "username", autocapitalize: "none", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const button = h("button", { type: "submit", class: "button primary" }, t("login.submit"));
  const form = h(
    "form",
    { id: "login-form", novalidate: true },
    h("label", {}, `${t("login.username")} `, username),
    h("label", {}, `${t("login.password")} `, password),
    error,
    button,
  );
  app.replaceChildren(
    h(
      "section",
      { class: "login card" },
      h("h1", {}, t("login.title")),
      h("p", { class: "muted" }, t("login.hint")),
      form,
    ),
  );
  app.dataset.view = "login";
  showError(error, notice);
  username.focus();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!username.value.trim() || !password.value) {
      showError(error, t("login.need_both"));
      return;
    }
    button.disabled = true;
    showError(error, "");
    try {
      onLoggedIn(await login(username.value.trim(), password.value));
    } catch (failure) {
      const message =
        failure instanceof ApiError
          ? failure.status === 401
            ? t("login.wrong")
            : failure.message
          : t("login.unreachable");
      showError(error, message);
      password.select();
    } finally {
      button.disabled = false;
    }
  });
  return { destroy() {} };
}
