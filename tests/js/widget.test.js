// @vitest-environment jsdom
import { describe, expect, it, vi } from "vitest";
import widget from "../../js/index.js";

// jsdom has no 2-D canvas: the widget then skips painting (pixels are checked in Chromium).
HTMLCanvasElement.prototype.getContext = () => null;

/** A stand-in for the anywidget model: traits, change events, messages. */
function fakeModel(traits) {
  const listeners = new Map();
  const sent = [];
  const model = {
    values: { ...traits },
    sent,
    saved: 0,
    get: (name) => model.values[name],
    set: (name, value) => { model.values[name] = value; },
    save_changes: () => { model.saved += 1; },
    send: (content) => sent.push(content),
    on: (events, fn) => events.split(" ").forEach((e) => listeners.set(e, [...(listeners.get(e) || []), fn])),
    off: (events, fn) => events.split(" ").forEach((e) => listeners.set(e, (listeners.get(e) || []).filter((f) => f !== fn))),
    emit: (event, ...args) => (listeners.get(event) || []).forEach((fn) => fn(...args)),
    count: () => [...listeners.values()].reduce((n, fns) => n + fns.length, 0),
  };
  return model;
}

const H = 4, W = 4;
const traits = {
  thumbs: new DataView(new Uint8Array(2 * 2 * 2 * 3).buffer),
  gallery: { n: 2, h: 2, w: 2, captions: ["a", "b"] },
  selected: 0,
  image: new DataView(new Uint8Array(H * W * 3).fill(100).buffer),
  heatmap: new DataView(new Uint8Array(H * W).fill(200).buffer),
  view: { h: H, w: W, index: 0, caption: "a · grad-fam" },
  // two 2x2 channels: ids 5 (bright top-left) and 9 (bright bottom-right)
  channels: new DataView(new Uint8Array([255, 0, 0, 0, 0, 0, 0, 255]).buffer),
  channel_info: { k: 2, h: 2, w: 2, ids: [5, 9], weights: [1, 1], lo: [0, 0], scale: [1 / 255, 1 / 255] },
  points: new DataView(new ArrayBuffer(0)),
  state: "ready", error: "", progress: 1, alpha: 0.5, colormap: "jet", threshold: 0,
  side_by_side: false, method: "grad-fam", methods: ["grad-fam", "score-fam"], layer: "body", layers: ["body"],
};

function mount() {
  const model = fakeModel(traits);
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = widget.render({ model, el });
  const root = el.querySelector(".famwidget");
  root.querySelector("canvas.fw-view").getBoundingClientRect = () => ({ left: 0, top: 0, width: W, height: H });
  return { model, el, root, cleanup };
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
    const { model, root } = mount();
    root.querySelector(".fw-thumb[data-index='1']").click();
    expect(model.sent.at(-1)).toMatchObject({ type: "select", index: 1 });
    expect(root.dataset.state).toBe("computing");
    expect(root.querySelector(".fw-thumb.fw-selected").dataset.index).toBe("1");
  });

  it("controls save their trait without a kernel request", () => {
    const { model, root } = mount();
    const alpha = root.querySelector("input.fw-alpha");
    alpha.value = "0.8";
    alpha.dispatchEvent(new Event("input"));
    expect(model.values.alpha).toBe(0.8);
    expect(model.saved).toBe(1);
    expect(model.sent).toEqual([]);
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

  it("a state message restores the kernel's state after a local 'computing'", () => {
    const { model, root } = mount();
    root.querySelector(".fw-thumb[data-index='0']").click(); // the image already on screen
    expect(root.dataset.state).toBe("computing");
    model.emit("msg:custom", { type: "state" }, []); // no trait changed: only this message
    expect(root.dataset.state).toBe("ready");
  });

  it("shows progress messages and errors, and cleans up its listeners", () => {
    const { model, root, cleanup } = mount();
    model.emit("msg:custom", { type: "progress", progress: 0.25, index: 0 }, []);
    expect(root.querySelector(".fw-progress").dataset.progress).toBe("0.25");
    model.values.state = "error";
    model.values.error = "ValueError: bad layer";
    model.emit("change:state");
    expect(root.dataset.state).toBe("error");
    expect(root.querySelector(".fw-error").textContent).toBe("ValueError: bad layer");
    expect(model.count()).toBeGreaterThan(10);
    cleanup();
    expect(model.count()).toBe(0);
  });
});
