// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { decodeChannels } from "../../js/channels.js";
import { h } from "../../js/dom.js";
import { inspector, shortNumber } from "../../js/inspect.js";
import { localState } from "../../js/state.js";

describe("inspect", () => {
  it("channel values fit their column: small ones in exponent form", () => {
    expect(shortNumber(0.0000098)).toBe("9.8e-6");
    expect(shortNumber(0.0503)).toBe("0.050");
    expect(shortNumber(8.43)).toBe("8.4");
    expect(shortNumber(123456)).toBe("1.2e5");
  });

  it("lists channels labelled weight x activation; pinning names the channel and its range", () => {
    const ui = { root: h("div"), view: h("canvas"), channels: h("ol"), channelsTitle: h("div"), channelsUnit: h("div") };
    const local = localState();
    const info = { k: 2, h: 1, w: 2, ids: [3, 8], weights: [2, 0.5], lo: [0, 1], scale: [1 / 255, 2 / 255] };
    local.channels = decodeChannels(new Uint8Array([255, 0, 255, 255]), info);
    local.rgb = new Uint8Array(12);
    let paints = 0;
    const inspection = inspector(ui, local, () => { paints += 1; });
    inspection.reset();
    const items = ui.channels.querySelectorAll(".fw-channel");
    expect([...items].map((e) => e.dataset.channel)).toEqual(["8", "3"]); // 0.5 x 3 > 2 x 0.5
    expect(ui.channelsUnit.textContent).toBe("value = weight x activation (mean over the image)");
    items[1].click();
    expect(ui.root.dataset.pinnedChannel).toBe("3");
    expect(inspection.inspected(info)).toEqual({ name: "#3", weight: 2, lo: 0, hi: 1 });
    expect(paints).toBe(1);
    items[1].click(); // a second click unpins
    expect(inspection.inspected(info)).toBeNull();
  });
});
