// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { cellCaption, decodeCompare } from "../../js/compare.js";
import widget from "../../js/index.js";
import { StaticModel } from "../../js/standalone.js";
import { fakeHost } from "./fake_host.js";

// jsdom has no 2-D canvas: painting is skipped (the cells' pixels are checked in Chromium).
HTMLCanvasElement.prototype.getContext = () => null;

const H = 2, W = 3;
const traits = {
  thumbs: new DataView(new Uint8Array(2 * 2 * 2 * 3).buffer),
  gallery: { n: 2, h: 2, w: 2, captions: ["a", "b"] },
  selected: 1, image: new DataView(new Uint8Array(H * W * 3).buffer),
  heatmap: new DataView(new Uint8Array(H * W).buffer),
  view: { h: H, w: W, index: 1, method: "grad-fam", layer: "body" },
  state: "ready", error: "", progress: 1, alpha: 0.5, colormap: "jet", threshold: 0, side_by_side: false,
  method: "grad-fam", methods: ["grad-fam", "score-fam"], layer: "body", layers: ["body"],
};

function mount(extra = {}) {
  const { model, host } = fakeHost({ ...traits, ...extra });
  const el = document.createElement("div");
  document.body.append(el);
  widget.render({ model, el });
  return { host, root: el.querySelector(".famwidget") };
}

const answer = (index, cells) => ({ type: "compare", status: "ready", index, h: H, w: W, layer: "body",
  scale: "one colour scale: each map normalised to its own 0-1", cells });

describe("compare view", () => {
  it("asks the kernel for the selected image when opened, and shows one cell per method", () => {
    const { host, root } = mount();
    const panel = root.querySelector(".fw-compare-panel");
    expect(panel.hidden).toBe(true);
    root.querySelector(".fw-compare-toggle").click();
    expect(panel.hidden).toBe(false);
    expect(host.sent.at(-1)).toEqual({ type: "compare", index: 1 });
    host.message({ type: "compare", status: "computing", index: 1, done: 1, total: 2, method: "score-fam", progress: 0.5 });
    expect(root.querySelector(".fw-compare-status").textContent).toBe("computing score-fam (2 of 2) 50% …");
    expect(root.querySelector(".fw-compare-cancel").hidden).toBe(false);
    const cells = [{ method: "grad-fam", caption: "grad-fam · Embedding()", degenerate: null, error: null },
                   { method: "score-fam", caption: "score-fam · Embedding()", degenerate: "the map is constant", error: null },
                   { method: "fixations", caption: "fixations", degenerate: null, error: "ValueError: no rule" }];
    const maps = [new Uint8Array(H * W * 3), new Uint8Array(H * W), new Uint8Array(H * W), new Uint8Array(0)];
    host.message(answer(1, cells), maps);
    const shown = [...root.querySelectorAll(".fw-compare .fw-compare-cell[data-method]")];
    expect(shown.map((e) => e.dataset.method)).toEqual(["grad-fam", "score-fam", "fixations"]);
    expect(root.querySelector(".fw-compare-scale").textContent).toMatch(/one colour scale/);
    expect(shown[1].classList.contains("fw-degenerate")).toBe(true);
    expect(shown[1].textContent).toMatch(/flat map: the map is constant/);
    expect(shown[2].classList.contains("fw-failed")).toBe(true);
    expect(shown[2].textContent).toMatch(/failed \(ValueError: no rule\)/);
    expect(root.querySelector(".fw-compare-cancel").hidden).toBe(true);
    expect(shown[0].querySelector("canvas").width).toBe(W);
  });

  it("asks again for a newly selected image once its view is ready; drops an old answer", () => {
    const { host, root } = mount();
    root.querySelector(".fw-compare-toggle").click();
    const asked = host.sent.length;
    host.kernelSet({ selected: 0, state: "computing" });
    expect(host.sent.length).toBe(asked); // not while the view computes
    host.kernelSet({ state: "ready" });
    expect(host.sent.at(-1)).toEqual({ type: "compare", index: 0 });
    host.message(answer(1, [{ method: "grad-fam", caption: "g" }]), [new Uint8Array(H * W * 3), new Uint8Array(H * W)]);
    expect(root.querySelectorAll(".fw-compare-cell").length).toBe(0); // image 1 is no longer selected
  });

  it("says what went wrong: refused, cancelled, needs the kernel", () => {
    const { host, root } = mount();
    root.querySelector(".fw-compare-toggle").click();
    root.querySelector(".fw-compare-cancel").click();
    expect(host.sent.at(-1)).toEqual({ type: "compare-cancel" });
    host.message({ type: "compare", status: "cancelled", index: -1, error: "comparison cancelled" });
    expect(root.querySelector(".fw-compare-status").textContent).toBe("comparison cancelled");
    host.message({ type: "compare", status: "refused", index: 1, error: "comparing methods needs the kernel: x" });
    expect(root.querySelector(".fw-compare-toggle").title).toMatch(/needs the kernel/);
  });

  it("decodes only answers whose buffers fit their size; captions name flat and failed maps", () => {
    expect(decodeCompare(answer(0, []), [new Uint8Array(5)])).toBeNull();
    const data = decodeCompare(answer(0, [{ method: "m", caption: "m" }]), [new Uint8Array(18), new Uint8Array(5)]);
    expect(data.cells[0].heat).toBeNull();
    expect(cellCaption(data.cells[0])).toBe("m: no map");
    expect(cellCaption({ method: "m", caption: "m · x", heat: new Uint8Array(1) })).toBe("m · x");
  });
});

describe("the offline page's compare", () => {
  const blob = (bytes) => btoa(String.fromCharCode(...bytes));
  const stored = (image, heat) => ({ image: { $blob: image }, heatmap: { $blob: heat }, view: { h: 1, w: 2, target: "Embedding()" } });
  const payload = (methods) => ({
    traits: { method: "grad-fam", methods, layer: "body", selected: 0 },
    explanations: { "grad-fam|body|0": stored(0, 1), "score-fam|body|0": stored(0, 2) },
    blobs: [blob([1, 2, 3, 4, 5, 6]), blob([0, 255]), blob([255, 0])],
  });

  it("answers from the stored maps of every method the page holds", async () => {
    const model = new StaticModel(payload(["grad-fam", "score-fam"]));
    const got = new Promise((resolve) => model.on("msg:custom", (c, b) => resolve([c, b])));
    model.send({ type: "compare", index: 0 });
    const [content, buffers] = await got;
    expect(content.cells.map((c) => c.method)).toEqual(["grad-fam", "score-fam"]);
    const data = decodeCompare(content, buffers);
    expect([...data.cells[1].heat]).toEqual([255, 0]);
    expect([...data.rgb]).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("says it needs the kernel when the page holds one method only", async () => {
    const model = new StaticModel(payload(["grad-fam", "grad-cam"]));
    const got = new Promise((resolve) => model.on("msg:custom", (c) => resolve(c)));
    model.send({ type: "compare", index: 0 });
    const content = await got;
    expect(content.status).toBe("refused");
    expect(content.error).toMatch(/needs the kernel: this page holds the grad-fam maps only/);
  });
});
