// @vitest-environment jsdom
import { describe, expect, it, vi } from "vitest";
import widget from "../../js/index.js";
import { fakeHost } from "./fake_host.js";

// jsdom has no 2-D canvas: the widget then skips painting (pixels are checked in Chromium).
HTMLCanvasElement.prototype.getContext = () => null;

const H = 4, W = 4;
const traits = {
  thumbs: new DataView(new Uint8Array(2 * 2 * 2 * 3).buffer),
  gallery: { n: 2, h: 2, w: 2, captions: ["a", "b"] },
  selected: 0,
  image: new DataView(new Uint8Array(H * W * 3).fill(100).buffer),
  heatmap: new DataView(new Uint8Array(H * W).fill(200).buffer),
  view: { h: H, w: W, index: 0, caption: "a · grad-fam", method: "grad-fam", layer: "body",
          target: "Embedding()", score: 12.25 },
  // two 2x2 channels: ids 5 (bright top-left) and 9 (bright bottom-right)
  channels: new DataView(new Uint8Array([255, 0, 0, 0, 0, 0, 0, 255]).buffer),
  channel_info: { k: 2, h: 2, w: 2, ids: [5, 9], weights: [1, 1], lo: [0, 0], scale: [1 / 255, 1 / 255] },
  points: new DataView(new ArrayBuffer(0)),
  state: "ready", error: "", progress: 1, alpha: 0.5, colormap: "jet", threshold: 0,
  side_by_side: false, method: "grad-fam", methods: ["grad-fam", "score-fam"], layer: "body", layers: ["body"],
};

function mount(extra = {}) {
  const { model, host } = fakeHost({ ...traits, ...extra });
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = widget.render({ model, el });
  const root = el.querySelector(".famwidget");
  root.querySelector("canvas.fw-view").getBoundingClientRect = () => ({ left: 0, top: 0, width: W, height: H });
  return { model, host, el, root, cleanup };
}

describe("render", () => {
  it("builds the DOM contract", () => {
    const { root } = mount();
    expect(root.dataset.state).toBe("ready");
    for (const sel of [".fw-thumb[data-index='1']", "canvas.fw-view", "input.fw-alpha[type=range]",
      "select.fw-colormap", "select.fw-method", ".fw-progress[data-progress]", ".fw-error"]) {
      expect(root.querySelector(sel), sel).not.toBeNull();
    }
    expect(root.querySelector(".fw-thumb.fw-selected").dataset.index).toBe("0");
    expect(root.querySelector("select.fw-method").value).toBe("grad-fam");
    expect(root.querySelectorAll(".fw-channel[data-channel]").length).toBe(2);
  });

  it("a click asks the kernel for that image and shows it is computing", () => {
    const { host, root } = mount();
    root.querySelector(".fw-thumb[data-index='1']").click();
    expect(host.sent.at(-1)).toMatchObject({ type: "select", index: 1 });
    expect(root.dataset.state).toBe("computing");
    expect(root.querySelector(".fw-thumb.fw-selected").dataset.index).toBe("1");
  });

  it("controls save their trait without a kernel request", () => {
    const { host, root } = mount();
    const alpha = root.querySelector("input.fw-alpha");
    alpha.value = "0.8";
    alpha.dispatchEvent(new Event("input"));
    expect(host.values.alpha).toBe(0.8);
    expect(host.saves).toBe(1);
    expect(host.sent).toEqual([]);
  });

  it("hovering the image lists the channels there; hovering a channel inspects it", () => {
    const { root } = mount();
    const canvas = root.querySelector("canvas.fw-view");
    canvas.dispatchEvent(new MouseEvent("mousemove", { clientX: 3.5, clientY: 3.5 }));
    const items = root.querySelectorAll(".fw-channel");
    expect(items[0].dataset.channel).toBe("9"); // bottom-right: channel 9 leads
    expect(root.querySelector(".fw-channels-title").textContent).toBe("channels at the pointer");
    items[0].dispatchEvent(new MouseEvent("mouseenter"));
    expect(root.dataset.hoverChannel).toBe("9");
    items[0].dispatchEvent(new MouseEvent("mouseleave"));
    expect(root.dataset.hoverChannel).toBeUndefined();
    items[0].click();
    expect(root.dataset.pinnedChannel).toBe("9");
  });

  it("a click on the image already on screen answers at once; a state message ends 'computing'", () => {
    const { host, root } = mount();
    root.querySelector(".fw-thumb[data-index='0']").click(); // the image already on screen
    expect(root.dataset.state).toBe("ready");
    expect(host.sent).toEqual([]);
    root.querySelector(".fw-thumb[data-index='1']").click();
    expect(root.dataset.state).toBe("computing");
    host.message({ type: "state" }); // the kernel answered (cached): only this message
    expect(root.dataset.state).toBe("ready");
  });

  it("a menu change that keeps the current value changes nothing and leaves no 'computing'", () => {
    const { host, root } = mount();
    const method = root.querySelector("select.fw-method");
    method.value = "grad-fam";
    method.dispatchEvent(new Event("change"));
    expect(root.dataset.state).toBe("ready");
    expect(host.saves).toBe(0);
    method.value = "score-fam";
    method.dispatchEvent(new Event("change"));
    expect(root.dataset.state).toBe("computing");
    expect(host.values.method).toBe("score-fam");
    expect(host.saved).toEqual(["method"]);
  });

  it("shows progress messages and errors, and cleans up its listeners", () => {
    const { host, root, cleanup } = mount();
    host.message({ type: "progress", progress: 0.25, index: 0 });
    expect(root.querySelector(".fw-progress").dataset.progress).toBe("0.25");
    host.kernelSet({ state: "error", error: "ValueError: bad layer" });
    expect(root.dataset.state).toBe("error");
    expect(root.querySelector(".fw-error .fw-error-text").textContent).toBe("ValueError: bad layer");
    expect(root.querySelector(".fw-error details").hidden).toBe(true); // no traceback sent
    host.kernelSet({ traceback: "Traceback (most recent call last):\n  ...\nValueError: bad layer" });
    const details = root.querySelector(".fw-error details");
    expect(details.hidden).toBe(false);
    expect(details.querySelector("pre").textContent).toMatch(/^Traceback/);
    expect(host.listenerCount()).toBeGreaterThan(10);
    cleanup();
    expect(host.listenerCount()).toBe(0);
  });
});

describe("the fake host", () => {
  it("accepts only anywidget's documented interface", () => {
    const { model } = fakeHost({ a: 1 });
    expect(model.get("a")).toBe(1);
    expect(() => model.on("change:a change:b", () => {})).toThrow(/one event name/);
    expect(() => model.attributes).toThrow(/not part of anywidget/);
    expect(() => model.listenTo).toThrow(/not part of anywidget/);
    expect(() => model.set({ a: 2 })).toThrow(/\(name, value\)/);
  });
});

describe("render against the strict host", () => {
  it("a kernel update of the view reaches the caption and the channel list", () => {
    const { host, root } = mount();
    host.kernelSet({ view: { ...traits.view, method: "score-fam", index: 1 }, selected: 1 });
    expect(root.querySelector(".fw-caption").textContent).toMatch("b · Score-FAM map at body");
    expect(root.querySelector(".fw-thumb.fw-selected").dataset.index).toBe("1");
    host.kernelSet({ methods: ["grad-fam", "score-fam", "grad-cam"], method: "grad-cam" });
    expect(root.querySelector("select.fw-method").value).toBe("grad-cam");
  });
});

describe("a view that explains itself", () => {
  it("has the contract's new parts, and an idle hint before any click", () => {
    const { root } = mount({ image: new DataView(new ArrayBuffer(0)), view: {}, selected: -1, state: "idle" });
    for (const sel of [".fw-legend", ".fw-gallery[data-count='2']", "select.fw-sort", "input.fw-filter",
      "button.fw-cancel", "button.fw-download", ".fw-error details"]) {
      expect(root.querySelector(sel), sel).not.toBeNull();
    }
    expect(["light", "dark"]).toContain(root.dataset.theme);
    expect(root.dataset.host).toBe("unknown");
    expect(root.querySelector(".fw-caption").textContent).toMatch(/Click a thumbnail/);
    expect(root.querySelector(".fw-legend").dataset.kind).toBe("none");
    expect(root.classList.contains("fw-empty")).toBe(true);
  });

  it("labels the map, the pinned channel and the values; Cancel asks the kernel to stop", () => {
    const { host, root } = mount();
    expect(root.querySelector(".fw-legend").dataset.kind).toBe("map");
    expect(root.querySelector(".fw-caption").textContent).toMatch(/^a · Grad-FAM map at body/);
    expect(root.querySelector(".fw-channels-unit").textContent).toMatch(/weight x activation/);
    root.querySelector(".fw-channel[data-channel='9']").click();
    expect(root.querySelector(".fw-caption").textContent).toMatch(/^a · channel #9 at body/);
    expect(root.querySelector(".fw-legend").dataset.kind).toBe("channel");
    root.querySelector(".fw-thumb[data-index='1']").click();
    host.message({ type: "progress", progress: 0.5, index: 1 });
    expect(root.querySelector(".fw-status").textContent).toMatch(/^computing 50%/);
    root.querySelector(".fw-cancel").click();
    expect(host.sent.at(-1)).toEqual({ type: "cancel" });
  });

  it("the offline page tells it that it is standalone", async () => {
    const { mountStandalone } = await import("../../js/index.js");
    const el = document.createElement("div");
    mountStandalone(el, { traits: { ...traits, thumbs: undefined, image: undefined } });
    expect(el.querySelector(".famwidget").dataset.host).toBe("standalone");
  });
});
