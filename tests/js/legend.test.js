// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { lut } from "../../js/colormap.js";
import { buildLegend, legendScale, paintLegend } from "../../js/legend.js";

HTMLCanvasElement.prototype.getContext = () => null;

describe("legend", () => {
  it("says what the colours are relative to: the per-image normalised map or a channel's raw range", () => {
    const legend = buildLegend();
    paintLegend(legend, legendScale({ kind: "map", method: "Grad-FAM" }), lut("jet"));
    expect(legend.el.classList.contains("fw-legend")).toBe(true);
    expect(legend.text.textContent).toMatch(/per-image normalised 0-1/);
    expect([legend.lo.textContent, legend.mid.textContent, legend.hi.textContent]).toEqual(["0.0", "0.50", "1.0"]);
    paintLegend(legend, legendScale({ kind: "channel", channel: { name: "#5", lo: 0.2, hi: 8.4 } }), lut("jet"));
    expect(legend.el.dataset.kind).toBe("channel");
    expect(legend.text.textContent).toMatch(/channel #5: its activation, raw range/);
    expect(legend.hi.textContent).toBe("8.4");
    expect(legendScale({ kind: "map", threshold: 0.3 }).text).toMatch(/below 0.30 not drawn/);
    expect(legendScale({ kind: "none" }).kind).toBe("none");
  });
});
