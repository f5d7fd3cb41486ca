// The operator view: a hash router over three views (login, machines, one machine).
import "./styles.css";

import { SESSION_ENDED, logout, session } from "./api.js";
import { loginView } from "./views/login.js";
import { machineView } from "./views/machine.js";
import { machinesView } from "./views/machines.js";

const app = document.getElementById("app");
let current = null;

function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

function showUser(user) {
  document.getElementById("user-box").hidden = !user;
  document.getElementById("user-name").textContent = user ? `${user.username} (${user.role})` : "";
}

function render(notice) {
  if (current) current.destroy();
  current = null;
  delete app.dataset.loaded;
  const user = session.read();
  showUser(user);
  if (!user) {
    current = loginView(app, { onLoggedIn: () => render(), notice });
    return;
  }
  const { parts, params } = route();
  const id = Number(parts[1]);
  if (parts[0] === "machines" && Number.isInteger(id) && id > 0) {
    current = machineView(app, id, params);
  } else {
    if (location.hash && location.hash !== "#/machines") history.replaceState(null, "", "#/machines");
    current = machinesView(app);
  }
}

document.getElementById("logout").addEventListener("click", async () => {
  await logout();
  render();
});
window.addEventListener("hashchange", () => render());
window.addEventListener(SESSION_ENDED, (event) => {
  // Several calls may fail at once with the same expired token: show the form once.
  if (app.dataset.view !== "login") render(`Your session ended (${event.detail}). Please log in again.`);
});
render();
