// @vitest-environment jsdom
// js/work.js clickIds and its use by the widget: a view made before the newest click is ignored.
import { describe, expect, it } from "vitest";
import widget from "../../js/index.js";
import { clickIds } from "../../js/work.js";
import { fakeHost } from "./fake_host.js";

HTMLCanvasElement.prototype.getContext = () => null; // jsdom: no 2-D canvas

describe("clickIds", () => {
  it("numbers clicks and calls a view of an older click of this page stale", () => {
    const ids = clickIds("p1");
    expect(ids.stale({ request: "p1:1" })).toBe(false); // nothing sent yet
    const first = ids.next();
    const second = ids.next();
    expect([first, second]).toEqual(["p1:1", "p1:2"]);
    expect(ids.stale({ request: first })).toBe(true);
    expect(ids.stale({ request: second })).toBe(false);
    expect(ids.stale({ request: "other:1" })).toBe(false); // another view's click
    expect(ids.stale({ request: "p1:x:1" })).toBe(false); // a prefix with a colon is another's
    expect(ids.stale({})).toBe(false); // no id: an exported page, a method change
    expect(ids.stale(null)).toBe(false);
  });

  it("two views get different prefixes", () => {
    const a = clickIds(), b = clickIds();
    expect(a.next()).not.toBe(b.next());
  });
});

const H = 2, W = 2;
const rgb = (v) => new DataView(new Uint8Array(H * W * 3).fill(v).buffer);
const view = (index, request) => ({ h: H, w: W, index, caption: `#${index}`, method: "grad-fam",
                                    layer: "body", request });

describe("the newest click wins on screen", () => {
  it("a result of an older click stays off screen until the newest one arrives", () => {
    const { model, host } = fakeHost({
      thumbs: new DataView(new Uint8Array(3 * H * W * 3).buffer), gallery: { n: 3, h: H, w: W },
      selected: 0, image: rgb(1), heatmap: new DataView(new Uint8Array(H * W).buffer),
      view: view(0, null), state: "ready", error: "", traceback: "", progress: 1, method: "grad-fam",
      methods: ["grad-fam"], layer: "body", layers: ["body"],
    });
    const el = document.createElement("div");
    document.body.append(el);
    widget.render({ model, el });
    const root = el.querySelector(".famwidget");
    for (const i of [1, 2]) root.querySelector(`.fw-thumb[data-index='${i}']`).click();
    const [one, two] = host.sent.map((m) => m.request);
    expect(host.sent.map((m) => m.index)).toEqual([1, 2]);
    // the kernel answers the first click (it has not seen the second yet): not shown
    host.kernelSet({ image: rgb(50), view: view(1, one), selected: 1, state: "ready" });
    expect(root.dataset.state).toBe("computing");
    expect(root.querySelector(".fw-thumb.fw-selected").dataset.index).toBe("2");
    host.kernelSet({ state: "error", error: "old failure" });
    expect(root.dataset.state).toBe("computing");
    expect(root.querySelector(".fw-error").hidden).toBe(true);
    // the answer to the newest click is shown
    host.kernelSet({ image: rgb(90), view: view(2, two), selected: 2, state: "ready", error: "" });
    expect(root.dataset.state).toBe("ready");
    expect(root.querySelector(".fw-thumb.fw-selected").dataset.index).toBe("2");
    expect(root.querySelector(".fw-caption").textContent).toContain("#2");
  });
});
