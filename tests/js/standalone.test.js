import { describe, expect, it, vi } from "vitest";
import { StaticModel } from "../../js/standalone.js";

const payload = {
  traits: { method: "grad-fam", layer: "body", selected: 0, heatmap: { $bytes: "AAH/" }, state: "ready" },
  explanations: { "grad-fam|body|1": { heatmap: { $bytes: "/wEA" }, view: { index: 1 } } },
};

describe("StaticModel", () => {
  it("decodes embedded bytes into DataViews", () => {
    const model = new StaticModel(payload);
    const heat = model.get("heatmap");
    expect(heat).toBeInstanceOf(DataView);
    expect(heat.getUint8(2)).toBe(255);
  });

  it("answers a click with the precomputed explanation", async () => {
    const model = new StaticModel(payload);
    const seen = vi.fn();
    model.on("change:heatmap", seen);
    model.on("change:state", seen);
    expect(() => model.on("change:a change:b", seen)).toThrow(/one event name/);
    model.send({ type: "select", index: 1 });
    await new Promise((r) => setTimeout(r, 5));
    expect(model.get("selected")).toBe(1);
    expect(model.get("state")).toBe("ready");
    expect(model.get("heatmap").getUint8(0)).toBe(255);
    expect(seen).toHaveBeenCalledTimes(2);
  });

  it("says clearly when an explanation was not exported", async () => {
    const model = new StaticModel(payload);
    model.send({ type: "select", index: 2 });
    await new Promise((r) => setTimeout(r, 5));
    expect(model.get("state")).toBe("error");
    expect(model.get("error")).toMatch(/exported without the grad-fam explanation of image 2/);
  });

  it("saves local changes and notifies listeners, which can be removed", () => {
    const model = new StaticModel(payload);
    const seen = vi.fn();
    model.on("change:alpha", seen);
    model.set("alpha", 0.9);
    model.save_changes();
    model.off("change:alpha", seen);
    model.set("alpha", 0.1);
    model.save_changes();
    expect(seen).toHaveBeenCalledTimes(1);
    expect(model.get("alpha")).toBe(0.1);
  });
});
