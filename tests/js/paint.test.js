import { describe, expect, it } from "vitest";
import { fitSize } from "../../js/paint.js";

describe("paint sizes", () => {
  it("scales small inputs up by whole pixels (crisp) and large ones down to fit", () => {
    expect(fitSize(128, 64)).toEqual({ width: 128, height: 256, crisp: true });
    expect(fitSize(16, 16)).toEqual({ width: 288, height: 288, crisp: true });
    expect(fitSize(224, 224)).toEqual({ width: 300, height: 300, crisp: false });
    expect(fitSize(480, 512)).toEqual({ width: 300, height: 281, crisp: false });
  });
});
