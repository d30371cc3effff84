// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { buildWork, progressText, showError, showProgress } from "../../js/work.js";

describe("work states", () => {
  it("says the percentage and the time left", () => {
    expect(progressText(0, 100)).toBe("0%");
    expect(progressText(0.25, 3000)).toBe("25% · about 9 s left");
    expect(progressText(0.9, 900)).toBe("90% · under 1 s left");
    expect(progressText(0.1, 60000)).toBe("10% · about 9 min left");
  });

  it("shows progress while computing, and errors with an expandable traceback", () => {
    const ui = buildWork();
    showProgress(ui, 0.5, "computing", 0, 2000);
    expect(ui.progress.dataset.progress).toBe("0.5");
    expect(ui.status.textContent).toBe("computing 50% · about 2 s left");
    showProgress(ui, 1, "ready", 0, 2000);
    expect(ui.status.textContent).toBe("");
    expect(ui.cancel.classList.contains("fw-cancel")).toBe(true);
    showError(ui, "RuntimeError: boom", "Traceback ...\nRuntimeError: boom");
    expect(ui.error.hidden).toBe(false);
    expect(ui.error.querySelector("details pre").textContent).toMatch(/^Traceback/);
    showError(ui, "", "");
    expect(ui.error.hidden).toBe(true);
  });
});
