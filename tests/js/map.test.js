// @vitest-environment jsdom
import { describe, expect, it, vi } from "vitest";
import { colourSteps, decodeMap, inBox, mapPanel, nearest, packColours, paintPoints, transform } from "../../js/map.js";
import { neighbourList } from "../../js/neighbours.js";

// jsdom has no 2-D canvas: the map then keeps positions and counts but paints nothing.
HTMLCanvasElement.prototype.getContext = () => null;

/** A map buffer laid out as famwidget/widget/map_panel.py encode_map writes it. */
function mapBuffer(xy, knn, sim, group, score) {
  const n = xy.length / 2, k = knn ? knn.length / n : 0;
  const out = new Uint8Array(n * (8 + 8 * k + 3) + 4).subarray(4); // a byteOffset, as hosts give
  let at = 0;
  const put = (typed) => { out.set(new Uint8Array(typed.buffer), at); at += typed.byteLength; };
  put(new Float32Array(xy));
  if (k) { put(new Uint32Array(knn)); put(new Float32Array(sim)); }
  put(new Uint16Array(group));
  put(new Uint8Array(score));
  return new DataView(out.buffer, out.byteOffset, out.byteLength);
}

const XY = [0, 0, 1, 0, 0, 1, 1, 1];
const KNN = [1, 2, 0, 3, 0, 3, 1, 2];
const SIM = [0.9, 0.8, 0.9, 0.7, 0.8, 0.6, 0.7, 0.6];
const INFO = { n: 4, k: 2, bounds: [0, 1, 0, 1], groups: ["a", "b"], group_name: "label",
               colour_by: ["label", "rank", "score"], score_range: [0, 1] };

function fakeModel(traits) {
  return { traits, get: (name, fallback) => traits[name] ?? fallback,
           setTrait: vi.fn((name, value) => { traits[name] = value; }) };
}

const frame = () => new Promise((resolve) => setTimeout(resolve, 30));

describe("map buffer", () => {
  it("decodes xy, the neighbour table, groups and scores at any byteOffset", () => {
    const data = decodeMap(mapBuffer(XY, KNN, SIM, [0, 1, 1, 0], [0, 255, 128, 7]), INFO);
    expect(Array.from(data.xy)).toEqual(XY);
    expect(Array.from(data.knn)).toEqual(KNN);
    expect(data.sim[3]).toBeCloseTo(0.7);
    expect(Array.from(data.group)).toEqual([0, 1, 1, 0]);
    expect(Array.from(data.score)).toEqual([0, 255, 128, 7]);
    expect(decodeMap(new Uint8Array(10), INFO)).toBe(null);
    const plain = decodeMap(mapBuffer(XY, null, null, [0, 0, 0, 0], [1, 2, 3, 4]), { n: 4, k: 0 });
    expect(plain.knn).toBe(null);
    expect(Array.from(plain.score)).toEqual([1, 2, 3, 4]);
  });

  it("colours by group, rank and score", () => {
    const data = decodeMap(mapBuffer(XY, KNN, SIM, [0, 1, 17, 0], [0, 255, 128, 7]), INFO);
    expect(Array.from(colourSteps(data, "label").steps)).toEqual([0, 1, 1, 0]); // 17 wraps to 1
    const rank = colourSteps(data, "rank");
    expect(rank.steps[0]).toBe(0);
    expect(rank.steps[3]).toBe(rank.colours.length - 1);
    expect(colourSteps(data, "score").steps[1]).toBe(15);
  });

  it("paints each point as a square of its colour; a selection on top, the rest faded", () => {
    const packed = packColours(["#ff0000", "rgb(0,0,255)"]);
    expect(packed[0]).toBe(0xff0000ff); // RGBA bytes in memory: ff 00 00 ff
    expect(packColours(["#000000"], 0.5)[0]).toBe(0xff808080);
    const faded = packColours(["#ff0000", "rgb(0,0,255)"], 0.7);
    const pixels = new Uint32Array(20 * 10);
    const screen = new Float32Array([5, 5, 15, 5]);
    paintPoints(pixels, 20, 10, screen, 1, new Uint8Array([0, 1]), packed, faded, null, 2);
    expect(pixels[5 * 20 + 5]).toBe(packed[0]);
    expect(pixels[4 * 20 + 14]).toBe(packed[1]);
    expect(pixels[0]).toBe(0);
    expect(pixels.filter((p) => p === packed[0]).length).toBe(16); // 4 x 4 device px
    paintPoints(pixels, 20, 10, screen, 1, new Uint8Array([0, 1]), packed, faded, new Uint8Array([0, 1]), 2);
    expect(pixels[5 * 20 + 5]).toBe(faded[0]);
    expect(pixels[5 * 20 + 15]).toBe(packed[1]);
    expect(pixels[2 * 20 + 12]).toBe(0xff222222); // the selected point's border
  });

  it("fits the bounds, picks the nearest point and the points in a box", () => {
    const t = transform([0, 1, 0, 1], 200, 100, { zoom: 1 });
    expect([t.x(0.5), t.y(0.5)]).toEqual([100, 50]);
    expect(t.y(1)).toBeLessThan(t.y(0)); // y up
    const screen = new Float32Array([10, 10, 50, 50, 52, 49, 90, 90]);
    expect(nearest(screen, 52, 50)).toBe(2);
    expect(nearest(screen, 49, 50)).toBe(1);
    expect(nearest(screen, 30, 30)).toBe(-1);
    expect(inBox(screen, 0, 0, 60, 60)).toEqual([0, 1, 2]);
    expect(inBox(screen, 60, 60, 40, 40)).toEqual([1, 2]); // any corner order
  });

  it("lists neighbours from the table, else from the kernel's trait", () => {
    const data = decodeMap(mapBuffer(XY, KNN, SIM, [0, 0, 0, 0], [0, 0, 0, 0]), INFO);
    expect(neighbourList(data, {}, 2).map((x) => x.index)).toEqual([0, 3]);
    const plain = decodeMap(mapBuffer(XY, null, null, [0, 0, 0, 0], [0, 0, 0, 0]), { n: 4, k: 0 });
    const trait = { of: 1, indices: [3, 0], scores: [0.5, 0.4] };
    expect(neighbourList(plain, trait, 1)).toEqual([{ index: 3, score: 0.5 }, { index: 0, score: 0.4 }]);
    expect(neighbourList(plain, trait, 2)).toEqual([]);
  });
});

describe("map panel", () => {
  function panel() {
    const traits = { map_points: mapBuffer(XY, KNN, SIM, [0, 1, 1, 0], [0, 9, 99, 255]), map_info: INFO,
                     selection: [], view: { index: 2 }, selected: 2, gallery: { n: 4, captions: ["p", "q", "r", "s"] } };
    const model = fakeModel(traits);
    const gallery = document.createElement("div");
    for (let i = 0; i < 4; i++) {
      const b = document.createElement("button");
      b.className = "fw-thumb";
      b.dataset.index = String(i);
      gallery.append(b);
    }
    const pick = vi.fn(), pair = vi.fn();
    const map = mapPanel({ get: model.get, setTrait: model.setTrait, pick, pair, gallery });
    document.body.replaceChildren(map.el);
    map.start();
    return { map, model, pick, pair, gallery, canvas: map.el.querySelector("canvas.fw-map") };
  }

  const pointer = (canvas, type, x, y, shiftKey = false) =>
    canvas.dispatchEvent(new MouseEvent(type, { clientX: x, clientY: y, shiftKey, bubbles: true }));

  it("draws every point, tells where each is, lists the neighbours of the image on screen", async () => {
    const { map, canvas, pair } = panel();
    await frame();
    expect(map.el.hidden).toBe(false);
    expect(canvas.dataset.count).toBe("4");
    const [a, b] = [canvas.fwPointPosition(0), canvas.fwPointPosition(3)];
    expect(b.x).toBeGreaterThan(a.x);
    expect(b.y).toBeLessThan(a.y);
    expect(canvas.fwPointPosition(9)).toBe(null);
    const items = [...map.el.querySelectorAll(".fw-neighbours .fw-neighbour[data-index]")];
    expect(items.map((e) => e.dataset.index)).toEqual(["0", "3"]);
    expect(items[0].textContent).toContain("0.800");
    items[1].click();
    expect(pair).toHaveBeenCalledWith(3, 2);
    expect([...map.el.querySelectorAll(".fw-map-colour option")].map((o) => o.value))
      .toEqual(["label", "rank", "score"]);
  });

  it("a click picks the point under it; shift+drag sets the selection; the gallery shows it", async () => {
    const { map, canvas, pick, model, gallery } = panel();
    await frame();
    const p = canvas.fwPointPosition(1);
    pointer(canvas, "pointerdown", p.x + 1, p.y);
    pointer(canvas, "pointerup", p.x + 1, p.y);
    expect(pick).toHaveBeenCalledWith(1);
    const [lo, hi] = [canvas.fwPointPosition(2), canvas.fwPointPosition(1)]; // (0,1) and (1,0)
    pointer(canvas, "pointerdown", lo.x - 5, lo.y - 5, true);
    pointer(canvas, "pointermove", hi.x + 5, hi.y + 5, true);
    pointer(canvas, "pointerup", hi.x + 5, hi.y + 5, true);
    const chosen = model.traits.selection;
    expect([...chosen].sort()).toEqual([0, 1, 2, 3]); // the box spans the whole map
    for (const [names, fn] of map.handlers) if (names.includes("selection")) fn();
    await frame();
    expect(canvas.dataset.selected).toBe("4");
    expect(gallery.querySelectorAll(".fw-in-selection").length).toBe(4);
    model.traits.selection = [3];
    for (const [names, fn] of map.handlers) if (names.includes("selection")) fn();
    await frame();
    expect([...gallery.querySelectorAll(".fw-in-selection")].map((e) => e.dataset.index)).toEqual(["3"]);
  });

  it("drag pans and the wheel zooms about the pointer", async () => {
    const { canvas } = panel();
    await frame();
    const before = canvas.fwPointPosition(0);
    pointer(canvas, "pointerdown", 100, 100);
    pointer(canvas, "pointermove", 130, 90);
    pointer(canvas, "pointerup", 130, 90);
    const moved = canvas.fwPointPosition(0);
    expect(moved.x - before.x).toBeCloseTo(30, 3);
    expect(moved.y - before.y).toBeCloseTo(-10, 3);
    const centre = canvas.fwPointPosition(3);
    canvas.dispatchEvent(new WheelEvent("wheel", { deltaY: -400, clientX: centre.x, clientY: centre.y, cancelable: true }));
    const zoomed = canvas.fwPointPosition(3);
    expect(zoomed.x).toBeCloseTo(centre.x, 3); // the point under the pointer stays put
    const far = canvas.fwPointPosition(0);
    expect(Math.hypot(far.x - zoomed.x, far.y - zoomed.y))
      .toBeGreaterThan(Math.hypot(moved.x - centre.x, moved.y - centre.y));
  });

  it("hover in a paged gallery asks the kernel for the thumbnail's page once", async () => {
    const { canvas, gallery, map } = panel();
    const send = vi.fn();
    const asked = new Set();
    gallery.fwGallery = { send, store: { paged: true, h: 1, w: 1, bytes: () => null, pageOf: (i) => Math.floor(i / 2),
                                         ask: (p) => !asked.has(p) && asked.add(p) } };
    await frame();
    const p = canvas.fwPointPosition(3);
    pointer(canvas, "pointermove", p.x, p.y);
    pointer(canvas, "pointermove", p.x + 1, p.y);
    expect(send).toHaveBeenCalledTimes(1);
    expect(send).toHaveBeenCalledWith({ type: "thumbs", page: 1 });
    const tip = map.el.querySelector(".fw-map-tip");
    expect(tip.hidden).toBe(false);
    expect(tip.dataset.index).toBe("3");
    expect(tip.textContent).toBe("s · a"); // caption and group
  });

  it("stays hidden with no map", () => {
    const model = fakeModel({ map_info: {}, map_points: null });
    const map = mapPanel({ get: model.get, setTrait: model.setTrait, pick() {}, pair() {}, gallery: document.createElement("div") });
    map.start();
    expect(map.el.hidden).toBe(true);
  });
});
