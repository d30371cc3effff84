// Work states: progress with percentage and time left, Cancel, errors with their traceback.
import { h } from "./dom.js";

/** The status row: progress bar, its text, Cancel; and the error box with a traceback. */
export function buildWork() {
  const progressBar = h("span", { class: "fw-progress-bar" });
  const progress = h("div", { class: "fw-progress", dataset: { progress: 0 } }, progressBar);
  const status = h("span", { class: "fw-status", "aria-live": "polite" });
  const cancel = h("button", { class: "fw-cancel", type: "button", title: "stop this explanation" }, "Cancel");
  const statusRow = h("div", { class: "fw-status-row" }, status, cancel);
  const errorText = h("div", { class: "fw-error-text" });
  const tracePre = h("pre", { class: "fw-traceback" });
  const details = h("details", {}, h("summary", {}, "Python traceback"), tracePre);
  const error = h("div", { class: "fw-error", role: "alert" }, errorText, details);
  error.hidden = true;
  return { progress, progressBar, status, cancel, statusRow, error, errorText, details, tracePre };
}

/** "42% · about 3 s left" from the progress and the time since the request (ms). */
export function progressText(progress, elapsedMs) {
  const pct = `${Math.round(100 * progress)}%`;
  if (!(progress > 0.02) || progress >= 1 || !(elapsedMs > 0)) return `${pct}`;
  const left = (elapsedMs * (1 - progress)) / progress / 1000;
  const words = left < 1 ? "under 1 s" : left < 90 ? `about ${Math.round(left)} s` : `about ${Math.round(left / 60)} min`;
  return `${pct} · ${words} left`;
}

/** Show progress (0..1); while computing the status says how far and how long. */
export function showProgress(ui, value, state, startedMs, nowMs) {
  ui.progress.dataset.progress = String(value);
  ui.progressBar.style.width = `${Math.round(100 * value)}%`;
  ui.status.textContent = state === "computing" ? `computing ${progressText(value, nowMs - startedMs)}` : "";
}

/** Show an error message and the kernel's traceback (expandable), or hide both. */
export function showError(ui, message, traceback) {
  ui.errorText.textContent = message || "";
  ui.tracePre.textContent = traceback || "";
  ui.details.hidden = !traceback;
  ui.error.hidden = !message;
}

/**
 * Click ids: each click this view sends is numbered ("<view id>:<n>"), and the kernel labels
 * every view it puts on screen with the newest click it had received (view.request). A view
 * labelled with an older click of this page was made before the newest click reached the
 * kernel: it is stale, and the page keeps showing "computing" instead of it.
 */
export function clickIds(prefix = Math.random().toString(36).slice(2, 10)) {
  let sent = 0;
  return {
    next() { sent += 1; return `${prefix}:${sent}`; },
    stale(view) {
      const id = view && view.request;
      if (typeof id !== "string") return false; // no id: a page, an older kernel, a method change
      const cut = id.lastIndexOf(":");
      return id.slice(0, cut) === prefix && Number(id.slice(cut + 1)) < sent;
    },
  };
}
