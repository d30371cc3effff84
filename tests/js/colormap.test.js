import { describe, expect, it } from "vitest";
import { blend, COLORMAPS, lut } from "../../js/colormap.js";

describe("lut", () => {
  it("has the five colormaps with matplotlib's end points", () => {
    expect(COLORMAPS).toEqual(["jet", "turbo", "viridis", "inferno", "gray"]);
    const gray = lut("gray");
    expect(Array.from(gray.slice(0, 3))).toEqual([0, 0, 0]);
    expect(Array.from(gray.slice(765))).toEqual([255, 255, 255]);
    expect(gray[3 * 128]).toBeGreaterThanOrEqual(127);
    expect(gray[3 * 128]).toBeLessThanOrEqual(129);
    expect(Array.from(lut("jet").slice(0, 3))).toEqual([0, 0, 128]); // jet starts dark blue
    expect(Array.from(lut("viridis").slice(765))).toEqual([253, 231, 37]);
  });

  it("rejects unknown names", () => {
    expect(() => lut("rainbow")).toThrow(/unknown colormap rainbow/);
  });
});

describe("blend", () => {
  const rgb = new Uint8Array([100, 100, 100, 10, 20, 30]);
  const heat = new Uint8Array([255, 0]);
  const gray = lut("gray");

  it("alpha 0 shows the image, alpha 1 the heatmap", () => {
    expect(Array.from(blend(rgb, heat, 0, gray))).toEqual([100, 100, 100, 255, 10, 20, 30, 255]);
    expect(Array.from(blend(rgb, heat, 1, gray))).toEqual([255, 255, 255, 255, 0, 0, 0, 255]);
  });

  it("mixes linearly in between", () => {
    const half = blend(rgb, heat, 0.5, gray);
    expect(Array.from(half.slice(0, 3))).toEqual([178, 178, 178]); // 100 + 0.5 * 155, rounded
    expect(Array.from(half.slice(4, 7))).toEqual([5, 10, 15]);
  });

  it("keeps the image where the heat is below the threshold", () => {
    const out = blend(rgb, heat, 1, gray, 0.5);
    expect(Array.from(out)).toEqual([255, 255, 255, 255, 10, 20, 30, 255]);
  });

  it("shows the image alone without a heatmap", () => {
    expect(Array.from(blend(rgb, null, 1, gray).slice(0, 3))).toEqual([100, 100, 100]);
  });
});
