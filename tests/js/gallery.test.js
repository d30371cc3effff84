// @vitest-environment jsdom
import { describe, expect, it, vi } from "vitest";
import { h, setOptions } from "../../js/dom.js";
import { arrangeGallery, galleryKey, galleryOrder, markSelected, renderGallery } from "../../js/gallery.js";

// jsdom has no 2-D canvas: the widget then skips painting (pixels are checked in Chromium).
HTMLCanvasElement.prototype.getContext = () => null;

describe("gallery", () => {
  const thumbs = new Uint8Array(3 * 2 * 2 * 3); // three 2x2 thumbnails
  const info = { n: 3, h: 2, w: 2, captions: ["a", "b", "c"], marks: ["match", "miss", ""] };

  it("renders one button per thumbnail with index, caption and mark", () => {
    const box = document.createElement("div");
    renderGallery(box, new DataView(thumbs.buffer), info, () => {});
    const items = box.querySelectorAll(".fw-thumb[data-index]");
    expect(items.length).toBe(3);
    expect(items[1].dataset.index).toBe("1");
    expect(items[1].textContent).toBe("b");
    expect(items[0].classList.contains("fw-mark-match")).toBe(true);
    expect(items[1].classList.contains("fw-mark-miss")).toBe(true);
  });

  it("stops at the data it has and calls back with the clicked index", () => {
    const box = document.createElement("div");
    const pick = vi.fn();
    renderGallery(box, thumbs.subarray(0, 2 * 2 * 2 * 3), info, pick);
    expect(box.querySelectorAll(".fw-thumb").length).toBe(2);
    box.querySelector(".fw-thumb[data-index='1']").click();
    expect(pick).toHaveBeenCalledWith(1);
  });

  it("marks exactly one thumbnail as selected", () => {
    const box = document.createElement("div");
    renderGallery(box, thumbs, info, () => {});
    markSelected(box, 2);
    markSelected(box, 0);
    const selected = [...box.querySelectorAll(".fw-selected")].map((e) => e.dataset.index);
    expect(selected).toEqual(["0"]);
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

describe("gallery of any size", () => {
  const info = { n: 4, h: 1, w: 1, captions: ["cat 10", "dog", "cat 9", "bird"], scores: [0.2, 0.9, 0.5, 0.1] };
  const thumbs = new Uint8Array(4 * 3);

  it("counts its images and sorts by index, label (natural order) or score", () => {
    const box = document.createElement("div");
    renderGallery(box, thumbs, info, () => {});
    expect(box.dataset.count).toBe("4");
    expect(galleryOrder(info, "label")).toEqual([3, 2, 0, 1]);
    expect(galleryOrder(info, "score")).toEqual([1, 2, 0, 3]);
    expect(galleryOrder({ ...info, scores: undefined }, "score")).toEqual([0, 1, 2, 3]);
    arrangeGallery(box, info, "score", "");
    expect([...box.children].map((e) => e.dataset.index)).toEqual(["1", "2", "0", "3"]);
  });

  it("filters by label text", () => {
    const box = document.createElement("div");
    renderGallery(box, thumbs, info, () => {});
    expect(arrangeGallery(box, info, "index", "CAT")).toBe(2);
    expect([...box.querySelectorAll(".fw-thumb:not([hidden])")].map((e) => e.dataset.index)).toEqual(["0", "2"]);
  });

  it("arrow keys and Home/End move between visible thumbnails; Enter explains", () => {
    const box = document.createElement("div");
    document.body.append(box);
    const pick = vi.fn();
    renderGallery(box, thumbs, info, pick);
    arrangeGallery(box, info, "index", "");
    const key = (k) => galleryKey(box, new KeyboardEvent("keydown", { key: k, cancelable: true }), pick);
    box.querySelector(".fw-thumb[data-index='0']").focus();
    key("ArrowRight");
    expect(document.activeElement.dataset.index).toBe("1");
    key("End");
    expect(document.activeElement.dataset.index).toBe("3");
    key("ArrowLeft");
    key("Enter");
    expect(pick).toHaveBeenCalledWith(2);
    key("Home");
    expect(document.activeElement.dataset.index).toBe("0");
    expect(key("x")).toBe(false);
    box.remove();
  });
});
