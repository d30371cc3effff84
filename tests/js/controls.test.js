// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { buildControls, setMethodOptions, syncControls } from "../../js/controls.js";

describe("controls", () => {
  it("shows the methods that are not offered as disabled options saying why", () => {
    const ui = buildControls();
    const notes = { "score-cam": "the model has no classes", "grad-fam": "ignored: it is offered" };
    setMethodOptions(ui.method, ["grad-fam", "score-fam"], notes, "score-fam", ui.methodNotes);
    const options = [...ui.method.options];
    expect(options.map((o) => o.value)).toEqual(["grad-fam", "score-fam", "score-cam"]);
    expect(options[2].disabled).toBe(true);
    expect(options[2].title).toBe("the model has no classes");
    expect(ui.method.value).toBe("score-fam");
    expect(ui.methodNotes.textContent).toBe("not offered here: score-cam (why: hover)");
    expect(ui.methodNotes.title).toBe("score-cam: the model has no classes");
    setMethodOptions(ui.method, ["grad-fam"], {}, "grad-fam", ui.methodNotes);
    expect(ui.methodNotes.hidden).toBe(true);
  });

  it("puts every control at its trait's value, with a download button", () => {
    const ui = buildControls();
    const traits = { methods: ["grad-fam"], method: "grad-fam", layers: ["a", "b"], layer: "b",
                     colormap: "viridis", alpha: 0.3, threshold: 0.1, side_by_side: true };
    syncControls(ui, (name, fallback) => traits[name] ?? fallback);
    expect([ui.layer.value, ui.colormap.value, ui.alpha.value, ui.sideBySide.checked]).toEqual(["b", "viridis", "0.3", true]);
    expect(ui.download.classList.contains("fw-download")).toBe(true);
  });
});
