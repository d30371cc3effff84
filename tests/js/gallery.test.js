// @vitest-environment jsdom
import { describe, expect, it, vi } from "vitest";
import { h, setOptions } from "../../js/dom.js";
import {
  MARGIN_ROWS, RENDER_ALL, ThumbStore, UNLAID, VirtualGallery, filteredOrder, galleryOrder, markSelected, windowOf,
} from "../../js/gallery.js";

// jsdom has no 2-D canvas: the widget then skips painting (pixels are checked in Chromium).
HTMLCanvasElement.prototype.getContext = () => null;

/** A gallery box with a layout jsdom does not compute: `width` x `height` px in sight. */
function laidOut(width, height) {
  const box = document.createElement("div");
  Object.defineProperty(box, "clientWidth", { get: () => width });
  Object.defineProperty(box, "clientHeight", { get: () => height });
  document.body.append(box);
  return box;
}

const ids = (box, sel = ".fw-thumb") => [...box.querySelectorAll(sel)].map((e) => Number(e.dataset.index));

describe("gallery", () => {
  const thumbs = new Uint8Array(3 * 2 * 2 * 3); // three 2x2 thumbnails
  const info = { n: 3, h: 2, w: 2, captions: ["a", "b", "c"], marks: ["match", "miss", ""] };

  it("renders one button per thumbnail with index, caption and mark", () => {
    const box = document.createElement("div");
    const g = new VirtualGallery(box, () => {});
    g.setData(info, new DataView(thumbs.buffer));
    const items = box.querySelectorAll(".fw-thumb[data-index]");
    expect(items.length).toBe(3);
    expect(box.dataset.count).toBe("3");
    expect(items[1].dataset.index).toBe("1");
    expect(items[1].textContent).toBe("b");
    expect(items[0].classList.contains("fw-mark-match")).toBe(true);
    expect(items[1].classList.contains("fw-mark-miss")).toBe(true);
    expect(items[0].hasAttribute("data-loading")).toBe(false);
  });

  it("calls back with the clicked index; a thumbnail with no bytes waits for them", () => {
    const box = document.createElement("div");
    const pick = vi.fn();
    const g = new VirtualGallery(box, pick);
    g.setData(info, thumbs.subarray(0, 2 * 2 * 2 * 3));
    expect(box.querySelector(".fw-thumb[data-index='2']").hasAttribute("data-loading")).toBe(true);
    box.querySelector(".fw-thumb[data-index='1']").click();
    expect(pick).toHaveBeenCalledWith(1);
  });

  it("marks exactly one thumbnail as selected", () => {
    const box = document.createElement("div");
    new VirtualGallery(box, () => {}).setData(info, thumbs);
    markSelected(box, 2);
    markSelected(box, 0);
    expect(ids(box, ".fw-selected")).toEqual([0]);
    expect(box.querySelector(".fw-selected").getAttribute("aria-current")).toBe("true");
  });
});

describe("dom helpers", () => {
  it("h builds elements with classes, data, listeners and children", () => {
    const click = vi.fn();
    const el = h("button", { class: "x", dataset: { index: 4 }, onclick: click, disabled: false }, "hi", null);
    el.click();
    expect(el.className).toBe("x");
    expect(el.dataset.index).toBe("4");
    expect(el.hasAttribute("disabled")).toBe(false);
    expect(el.textContent).toBe("hi");
    expect(click).toHaveBeenCalledOnce();
  });

  it("setOptions replaces options only when they change", () => {
    const select = document.createElement("select");
    setOptions(select, ["a", "b"], "b");
    const first = select.options[0];
    setOptions(select, ["a", "b"], "a");
    expect(select.options[0]).toBe(first);
    expect(select.value).toBe("a");
    setOptions(select, ["c"], "c");
    expect([...select.options].map((o) => o.value)).toEqual(["c"]);
  });
});

describe("sort, filter, keys", () => {
  const info = { n: 4, h: 1, w: 1, captions: ["cat 10", "dog", "cat 9", "bird"], scores: [0.2, 0.9, 0.5, 0.1] };
  const thumbs = new Uint8Array(4 * 3);

  it("sorts by index, label (natural order) or score, and filters by label text", () => {
    expect(galleryOrder(info, "label")).toEqual([3, 2, 0, 1]);
    expect(galleryOrder(info, "score")).toEqual([1, 2, 0, 3]);
    expect(galleryOrder({ ...info, scores: undefined }, "score")).toEqual([0, 1, 2, 3]);
    expect(filteredOrder(info, "index", " CAT ")).toEqual([0, 2]);
    const box = document.createElement("div");
    const g = new VirtualGallery(box, () => {});
    g.setData(info, thumbs);
    expect(g.arrange("score", "")).toBe(4);
    // placed in rows in that order: one column without a layout, so top grows with the order
    const tops = Object.fromEntries([...box.querySelectorAll(".fw-thumb")].map((e) => [e.dataset.index, parseFloat(e.style.top)]));
    expect([1, 2, 0, 3].map((i) => tops[i])).toEqual([...[0, 1, 2, 3].map((r) => r * g.pitchY)]);
    expect(g.arrange("index", "CAT")).toBe(2);
    expect(ids(box)).toEqual([0, 2]);
    expect(box.dataset.count).toBe("4"); // still the number of images
  });

  it("arrow keys and Home/End move between the thumbnails shown; Enter explains", () => {
    const box = laidOut(4 * 100, 1000); // four columns (pitch 100)
    const pick = vi.fn();
    const g = new VirtualGallery(box, pick);
    g.setData({ ...info, n: 10, captions: [] }, new Uint8Array(30));
    g.arrange("index", "");
    const key = (k) => g.key(new KeyboardEvent("keydown", { key: k, cancelable: true }));
    box.querySelector(".fw-thumb[data-index='0']").focus();
    key("ArrowRight");
    expect(document.activeElement.dataset.index).toBe("1");
    key("ArrowDown");
    expect(document.activeElement.dataset.index).toBe("5");
    key("End");
    expect(document.activeElement.dataset.index).toBe("9");
    key("ArrowLeft");
    key("Enter");
    expect(pick).toHaveBeenCalledWith(8);
    key("Home");
    expect(document.activeElement.dataset.index).toBe("0");
    expect(key("x")).toBe(false);
    box.remove();
  });
});

describe("a gallery of 10,000", () => {
  const n = 10_000;
  const info = { n, h: 4, w: 2, paged: true, page_size: 100, pages: 100,
                 captions: Array.from({ length: n }, (_, i) => `person ${i}`) };

  it("keeps only the rows in sight (plus a margin) in the DOM, however far it scrolls", () => {
    const box = laidOut(500, 320);
    const sent = [];
    const g = new VirtualGallery(box, () => {}, (m) => sent.push(m));
    g.setData(info, null);
    g.arrange("index", "");
    const cols = g.columns();
    expect(cols).toBe(5);
    const rowsInSight = Math.ceil(320 / g.pitchY) + 1;
    const bound = (rowsInSight + 2 * MARGIN_ROWS) * cols;
    expect(box.querySelectorAll(".fw-thumb").length).toBeLessThanOrEqual(bound);
    expect(parseFloat(g.space.style.height)).toBeGreaterThan((n / cols - 1) * g.pitchY);
    box.scrollTop = (n / cols) * g.pitchY - 320; // the end
    g.render();
    const shown = ids(box);
    expect(shown).toContain(n - 1);
    expect(shown.length).toBeLessThanOrEqual(bound);
    expect(Math.min(...shown)).toBeGreaterThan(n - bound - 1);
    // it asked for the pages of what it shows, each once
    expect(sent.every((m) => m.type === "thumbs")).toBe(true);
    expect(sent.map((m) => m.page)).toContain(99);
    expect(new Set(sent.map((m) => m.page)).size).toBe(sent.length);
    g.render();
    expect(new Set(sent.map((m) => m.page)).size).toBe(sent.length);
    box.remove();
  });

  it("paints a page when it arrives; refuses one that does not fit", () => {
    const box = laidOut(500, 320);
    const g = new VirtualGallery(box, () => {}, () => {});
    g.setData(info, null);
    g.arrange("index", "");
    expect(box.querySelector(".fw-thumb[data-index='3']").hasAttribute("data-loading")).toBe(true);
    expect(g.onMessage({ type: "thumbs", page: 0, start: 0, count: 100, h: 4, w: 2 }, [new Uint8Array(99 * 24)])).toBe(true);
    expect(g.store.bytes(3)).toBeNull(); // wrong length: not kept
    const page = new Uint8Array(100 * 24).map((_, i) => i % 251);
    g.onMessage({ type: "thumbs", page: 0, start: 0, count: 100, h: 4, w: 2 }, [new DataView(page.buffer)]);
    expect(box.querySelector(".fw-thumb[data-index='3']").hasAttribute("data-loading")).toBe(false);
    expect([...g.store.bytes(3)]).toEqual([...page.subarray(72, 96)]);
    expect(g.onMessage({ type: "state" }, [])).toBe(false);
    box.remove();
  });

  it("scrolls the selected one into sight, also after a filter", () => {
    const box = laidOut(500, 320);
    const g = new VirtualGallery(box, () => {}, () => {});
    g.setData(info, null);
    g.arrange("index", "");
    g.select(n - 1);
    expect(box.scrollTop).toBeGreaterThan(0);
    expect(box.querySelector(".fw-thumb.fw-selected").dataset.index).toBe(String(n - 1));
    expect(g.arrange("index", "person 999")).toBe(11); // 999, 9990..9999
    g.select(9995);
    expect(ids(box).sort((a, b) => a - b)).toEqual([999, ...Array.from({ length: 10 }, (_, k) => 9990 + k)]);
    box.remove();
  });

  it("windowOf and ThumbStore: the maths behind it", () => {
    expect(windowOf(1000, 4, 100, 0, 0)).toEqual({ from: 0, to: UNLAID });
    expect(windowOf(1000, 4, 100, 1000, 300)).toEqual({ from: (10 - MARGIN_ROWS) * 4, to: (13 + MARGIN_ROWS) * 4 });
    expect(windowOf(RENDER_ALL, 4, 100, 1000, 300)).toEqual({ from: 0, to: RENDER_ALL }); // small: all in the DOM
    const store = new ThumbStore({ n: 250, h: 1, w: 1, paged: true, page_size: 100 }, null);
    expect(store.pageOf(249)).toBe(2);
    expect(store.ask(2)).toBe(true);
    expect(store.ask(2)).toBe(false);
    expect(store.waiting).toBe(1);
    expect(store.receive({ page: 2, start: 200, count: 50, h: 1, w: 1 }, new Uint8Array(150))).toEqual([200, 250]);
    expect(store.waiting).toBe(0);
    expect(store.bytes(249).length).toBe(3);
  });
});
