import { describe, expect, it } from "vitest";
import { describeView, methodName, targetWords } from "../../js/caption.js";

describe("caption", () => {
  it("says the target and its score in words", () => {
    expect(targetWords("Embedding()", 12.345)).toBe("the feature vector's norm ‖f(x)‖ = 12.3");
    expect(targetWords("Similarity(query)", 0.8712)).toBe("cosine similarity to the query = 0.871");
    expect(targetWords("ClassLogit(3)", null)).toBe("the logit of class 3");
    expect(targetWords("Custom(f)", 2)).toBe("target Custom(f) = 2.00");
    expect(methodName("score-fam")).toBe("Score-FAM");
  });

  it("names the method's map, or the inspected channel, and each work state", () => {
    const view = { index: 2, method: "grad-fam", layer: "layer4", target: "Embedding()", score: 3 };
    expect(describeView(view, "c", null, "ready")).toEqual(["c · Grad-FAM map at layer4", "explains the feature vector's norm ‖f(x)‖ = 3.00"]);
    const [first] = describeView(view, "c", { name: "#17", weight: 0.5 }, "ready");
    expect(first).toBe("c · channel #17 at layer4 (weight 0.500 × its activation)");
    expect(describeView({ index: 1, method: "score-fam", pending: true }, "b", null, "computing")[0]).toBe("b · computing Score-FAM …");
    expect(describeView({ index: 1, failed: "score-fam" }, "b", null, "error")[0]).toMatch(/Score-FAM failed: see the error below/);
    expect(describeView({ index: 1, cancelled: "score-fam" }, "b", null, "idle")[0]).toBe("b · Score-FAM cancelled");
    expect(describeView({}, "", null, "idle")[0]).toMatch(/Click a thumbnail/);
  });
});
