// The worker's tablet: my stages, and one stage's actions on one screen (start, pause with a reason, resume, counts,
// done with good and scrap lines, an issue, the machine's stops to classify), queued while offline.
import { ACTIONS_CHANGED, act, flush, pendingActions } from "../actions.js";
import { get, getList } from "../api.js";
import { h, showError } from "../dom.js";
import { dateTime } from "../format.js";
import { labelOf, t } from "../i18n.js";
import { drawDowntimes } from "./downtimes.js";

const DOWNTIME_WINDOW_MS = 24 * 3600e3;
// What a stage allows once an action is queued, before the API has said so (it says so again when reached).
const ALLOWED_AFTER = {
  planned: ["start"],
  in_progress: ["pause", "done"],
  paused: ["resume", "done"],
  done: [],
};
const STATUS_AFTER = { start: "in_progress", pause: "paused", resume: "in_progress", done: "done" };

/** The list of queued actions, and a line saying the tablet is offline. */
function pendingBox() {
  const box = h("section", { class: "card pending", "aria-live": "polite", dataset: { ref: "pending" } });
  const draw = () => {
    const pending = pendingActions();
    box.hidden = pending.length === 0 && navigator.onLine !== false;
    box.dataset.count = String(pending.length);
    box.replaceChildren(
      h("h2", {}, t("pending.title", { count: pending.length })),
      h("p", { class: "muted small", hidden: navigator.onLine !== false }, t("pending.offline")),
      h(
        "ol",
        { class: "pending-list" },
        pending.map((action) => h("li", { dataset: { key: action.key } }, action.label)),
      ),
    );
  };
  draw();
  return { box, draw };
}

/** Render the tablet into `app`: the stage list, or stage `stageId` when given. */
export function tabletView(app, stageId) {
  app.dataset.view = stageId ? "tablet-stage" : "tablet";
  app.dataset.loaded = "false";
  const pending = pendingBox();
  const notice = h("p", { class: "notice", role: "status", dataset: { ref: "notice" } });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const body = h("div", { class: "tablet-body" });
  const page = h("section", { class: "page tablet" }, pending.box, notice, error, body);
  app.replaceChildren(page);
  let stopped = false;
  let reload = () => {};
  let onStage = () => {};

  const onActions = (event) => {
    pending.draw();
    const { kind, action } = event.detail || {};
    if (kind === "sent") {
      notice.textContent = t("sent", { label: action.label });
      // The stage as the API answered it, once nothing else is on its way (a redraw would drop what is typed).
      const answer = event.detail.answer;
      if (!pendingActions().length) {
        if (!stageId) reload();
        else if (answer?.id === stageId && answer.allowed_actions) onStage(answer);
      }
    } else if (kind === "failed") {
      showError(error, t("pending.failed", { label: action.label, error: event.detail.error.message }));
      reload();
    }
  };
  const onNetwork = () => pending.draw();
  window.addEventListener(ACTIONS_CHANGED, onActions);
  window.addEventListener("online", onNetwork);
  window.addEventListener("offline", onNetwork);

  const queue = (label, path, bodyOf = null) => {
    const action = act(label, path, bodyOf);
    showError(error, "");
    notice.textContent = navigator.onLine === false ? t("queued", { label }) : "";
    pending.draw();
    return action;
  };

  const loadList = async () => {
    try {
      const { items } = await getList("/me/stages", { limit: 100 });
      if (stopped) return;
      const open = items.filter((item) => item.stage.status !== "done");
      body.replaceChildren(
        h("h1", {}, t("tablet.title")),
        open.length
          ? h(
              "ul",
              { class: "stage-list" },
              open.map(({ stage, work_order: order }) =>
                h(
                  "li",
                  {},
                  h(
                    "a",
                    {
                      class: "card stage-card tap-card",
                      href: `#/tablet/${stage.id}`,
                      dataset: { stageId: String(stage.id) },
                    },
                    h("strong", {}, stage.stage_name),
                    h("span", {}, `${order.product_code} · ${order.lot_no} · ${order.qty}`),
                    h(
                      "span",
                      { class: "status-badge", dataset: { status: stage.status } },
                      t(`status.${stage.status}`),
                    ),
                    h("span", { class: "muted small" }, dateTime(stage.planned_start)),
                  ),
                ),
              ),
            )
          : h("p", { class: "muted" }, t("tablet.none")),
      );
      app.dataset.loaded = "true";
    } catch (failure) {
      if (!stopped) showError(error, t("tablet.load_failed", { error: failure.message }));
    }
  };

  const loadStage = async () => {
    let mine;
    let reasons;
    let issueTypes;
    try {
      [mine, reasons, issueTypes] = await Promise.all([
        getList("/me/stages", { limit: 100 }),
        getList("/loss-reasons"),
        getList("/issue-types"),
      ]);
    } catch (failure) {
      if (!stopped) showError(error, t("tablet.load_failed", { error: failure.message }));
      return;
    }
    if (stopped) return;
    const found = mine.items.find((item) => item.stage.id === stageId);
    if (!found) {
      location.hash = "#/tablet";
      return;
    }
    drawStage(found.stage, found.work_order, reasons.items, issueTypes.items);
    app.dataset.loaded = "true";
  };

  const drawStage = (stage, order, reasons, issueTypes) => {
    let status = stage.status;
    let allowed = stage.allowed_actions;
    const scrapReasons = reasons.filter((reason) => reason.category === "quality" && reason.active !== false);
    const badge = h("span", { class: "status-badge big", dataset: { ref: "status" } });
    const actions = h("div", { class: "tap-grid actions", dataset: { ref: "actions" } });
    const pauseReason = h("input", {
      name: "pause_reason",
      "aria-label": t("pause.reason"),
      placeholder: t("pause.reason"),
    });

    onStage = (answer) => {
      status = answer.status;
      allowed = answer.allowed_actions;
      drawActions();
    };

    const step = (kind, label, path, payload = null) => {
      queue(`${label} · ${stage.stage_name}`, path, payload);
      status = STATUS_AFTER[kind] || status;
      allowed = ALLOWED_AFTER[status];
      drawActions();
    };

    const drawActions = () => {
      badge.dataset.status = status;
      badge.textContent = t(`status.${status}`);
      const can = (kind) => allowed.includes(kind);
      const buttons = [
        can("start") &&
          h(
            "button",
            {
              type: "button",
              class: "tap primary",
              dataset: { action: "start" },
              onclick: () => step("start", t("action.start"), `/stages/${stage.id}/start`),
            },
            t("action.start"),
          ),
        can("pause") &&
          h(
            "div",
            { class: "pause-box" },
            pauseReason,
            h(
              "button",
              {
                type: "button",
                class: "tap",
                dataset: { action: "pause" },
                onclick: () => {
                  const reason = pauseReason.value.trim();
                  if (!reason) return showError(error, t("pause.need_reason"));
                  pauseReason.value = "";
                  step("pause", `${t("action.pause")} (${reason})`, `/stages/${stage.id}/pause`, { reason });
                },
              },
              t("action.pause"),
            ),
          ),
        can("resume") &&
          h(
            "button",
            {
              type: "button",
              class: "tap primary",
              dataset: { action: "resume" },
              onclick: () => step("resume", t("action.resume"), `/stages/${stage.id}/resume`),
            },
            t("action.resume"),
          ),
      ];
      actions.replaceChildren(...buttons.filter(Boolean));
      quantities.hidden = !(status === "in_progress" || status === "paused");
      doneButton.hidden = !can("done");
    };

    // --- good and scrap, for interim counts and for done -------------------------------------------------------
    const good = h("input", {
      name: "good_qty",
      type: "number",
      min: "0",
      step: "1",
      inputmode: "numeric",
      value: "0",
    });
    const lines = h("ul", { class: "scrap-lines", dataset: { ref: "scrap-lines" } });
    const addLine = () => {
      const reason = h(
        "select",
        { name: "scrap_reason", "aria-label": t("qty.scrap_reason") },
        scrapReasons.map((item) => h("option", { value: item.code }, labelOf(item))),
      );
      const qty = h("input", {
        name: "scrap_qty",
        type: "number",
        min: "1",
        step: "1",
        inputmode: "numeric",
        "aria-label": t("qty.scrap_qty"),
      });
      const line = h("li", { class: "scrap-line" }, reason, qty);
      line.append(h("button", { type: "button", class: "tap ghost", onclick: () => line.remove() }, t("qty.remove")));
      lines.append(line);
      qty.focus();
    };
    /** The form's good quantity and scrap lines, or null (and a message) when they cannot be sent. */
    const counted = () => {
      const goodQty = Number(good.value || "0");
      const scrap = [...lines.querySelectorAll(".scrap-line")].map((line) => ({
        reason: line.querySelector("select").value,
        qty: Number(line.querySelector("input").value),
      }));
      const whole = (n, min) => Number.isInteger(n) && n >= min;
      if (!whole(goodQty, 0) || scrap.some((line) => !line.reason || !whole(line.qty, 1))) {
        showError(error, t("qty.invalid"));
        return null;
      }
      return { good_qty: goodQty, scrap };
    };
    const clearCounts = () => {
      good.value = "0";
      lines.replaceChildren();
    };
    const doneButton = h(
      "button",
      {
        type: "button",
        class: "tap primary",
        dataset: { action: "done" },
        onclick: () => {
          const figures = counted();
          if (!figures) return;
          const named = (code) => labelOf(scrapReasons.find((item) => item.code === code)) || code;
          const scrap = figures.scrap.map((line) => `${named(line.reason)} ${line.qty}`).join(", ") || "0";
          step("done", `${t("action.done")} (${figures.good_qty} / ${scrap})`, `/stages/${stage.id}/done`, figures);
          clearCounts();
        },
      },
      t("action.done"),
    );
    const quantities = h(
      "section",
      { class: "card quantities", dataset: { ref: "quantities" } },
      h("h2", {}, t("qty.title")),
      h("p", { class: "muted small" }, t("qty.hint")),
      h("label", { class: "field" }, t("qty.good"), good),
      h("h3", {}, t("qty.scrap")),
      lines,
      h(
        "button",
        { type: "button", class: "tap ghost", dataset: { action: "add-scrap" }, onclick: addLine },
        t("qty.add_scrap"),
      ),
      h(
        "div",
        { class: "tap-grid" },
        h(
          "button",
          {
            type: "button",
            class: "tap",
            dataset: { action: "counts" },
            onclick: () => {
              const figures = counted();
              if (!figures) return;
              queue(
                `${t("action.counts")} (${figures.good_qty}) · ${stage.stage_name}`,
                `/stages/${stage.id}/counts`,
                figures,
              );
              clearCounts();
            },
          },
          t("action.counts"),
        ),
        doneButton,
      ),
    );

    // --- an issue ----------------------------------------------------------------------------------------------
    let issueType = null;
    const typeButtons = issueTypes.map((type) =>
      h(
        "button",
        {
          type: "button",
          class: "tap chip-tap",
          "aria-pressed": "false",
          dataset: { issueType: type.code },
          onclick: (event) => {
            issueType = type.code;
            for (const button of typeButtons)
              button.setAttribute("aria-pressed", String(button === event.currentTarget));
          },
        },
        labelOf(type),
      ),
    );
    const description = h("textarea", {
      name: "description",
      rows: 3,
      "aria-label": t("issue.description"),
      placeholder: t("issue.description"),
    });
    const issue = h(
      "section",
      { class: "card issue" },
      h("h2", {}, t("issue.title")),
      h("div", { class: "tap-grid", role: "group", "aria-label": t("issue.type") }, typeButtons),
      description,
      h(
        "button",
        {
          type: "button",
          class: "tap",
          dataset: { action: "issue" },
          onclick: () => {
            const text = description.value.trim();
            if (!issueType || !text) return showError(error, t("issue.need_all"));
            const type = issueTypes.find((item) => item.code === issueType);
            queue(`${t("action.issue")}: ${labelOf(type)} · ${stage.stage_name}`, `/stages/${stage.id}/issue`, {
              type: issueType,
              description: text,
            });
            description.value = "";
            issueType = null;
            for (const button of typeButtons) button.setAttribute("aria-pressed", "false");
          },
        },
        t("action.issue"),
      ),
    );

    // --- the machine's stops -----------------------------------------------------------------------------------
    const stops = h("ul", { class: "downtimes", dataset: { ref: "downtimes" } });
    const downtime = h("section", { class: "card downtime-card" }, h("h2", {}, t("downtime.title")), stops);
    const loadStops = async () => {
      if (!stage.machine_id) {
        stops.replaceChildren(h("li", { class: "muted" }, t("downtime.no_machine")));
        return;
      }
      try {
        const now = Date.now();
        const found = await get(`/machines/${stage.machine_id}/downtimes`, {
          from: new Date(now - DOWNTIME_WINDOW_MS).toISOString(),
          to: new Date(now).toISOString(),
          unclassified: true,
        });
        // A classification still queued: its stop is not shown again.
        const queued = new Set(
          pendingActions()
            .map((action) => action.body?.start)
            .filter(Boolean),
        );
        if (!stopped)
          drawDowntimes(stops, {
            machineId: stage.machine_id,
            events: found.events.filter((e) => !queued.has(e.start)),
            reasons,
          });
      } catch (failure) {
        if (!stopped) stops.replaceChildren(h("li", { class: "form-error" }, failure.message));
      }
    };

    body.replaceChildren(
      h("a", { class: "back", href: "#/tablet" }, t("tablet.back")),
      h(
        "div",
        { class: "card stage-head" },
        h(
          "div",
          {},
          h("h1", {}, stage.stage_name),
          h("p", { class: "muted" }, `${order.product_code} · ${order.lot_no} · ${order.qty}`),
        ),
        badge,
      ),
      actions,
      quantities,
      issue,
      downtime,
    );
    drawActions();
    loadStops();
  };

  reload = stageId ? loadStage : loadList;
  reload();
  flush();
  return {
    destroy() {
      stopped = true;
      window.removeEventListener(ACTIONS_CHANGED, onActions);
      window.removeEventListener("online", onNetwork);
      window.removeEventListener("offline", onNetwork);
    },
  };
}
