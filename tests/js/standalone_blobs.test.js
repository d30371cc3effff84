import { describe, expect, it } from "vitest";
import { BlobTable, StaticModel } from "../../js/standalone.js";

// an exported page: two views of the same image share blob 0; each has its own map
const payload = {
  blobs: ["AAH/", "/wEA", "BwcH"],
  traits: { method: "grad-fam", layer: "body", selected: 0, image: { $blob: 0 }, heatmap: { $blob: 2 },
            state: "ready" },
  explanations: { "grad-fam|body|1": { image: { $blob: 0 }, heatmap: { $blob: 1 }, view: { index: 1 } } },
};

describe("BlobTable", () => {
  it("decodes a reference once and shares it", () => {
    const table = new BlobTable(payload.blobs);
    const first = table.value({ $blob: 0 });
    expect(first).toBeInstanceOf(DataView);
    expect([first.getUint8(0), first.getUint8(1), first.getUint8(2)]).toEqual([0, 1, 255]);
    expect(table.value({ $blob: 0 })).toBe(first);
    expect(table.value({ $bytes: "/wEA" }).getUint8(0)).toBe(255);
    expect(table.value({ h: 2 })).toEqual({ h: 2 });
  });

  it("says which reference is missing from the table", () => {
    expect(() => new BlobTable(["AAAA"]).value({ $blob: 3 })).toThrow(/image 3, but its table has 1/);
  });
});

describe("StaticModel with a shared table", () => {
  it("resolves the traits and a clicked view's references", async () => {
    const model = new StaticModel(payload);
    expect(model.get("heatmap").getUint8(0)).toBe(7);
    const image = model.get("image");
    model.send({ type: "select", index: 1 });
    await new Promise((r) => setTimeout(r, 5));
    expect(model.get("state")).toBe("ready");
    expect(model.get("heatmap").getUint8(0)).toBe(255);
    expect(model.get("image")).toBe(image);
  });
});
