// The gallery: one thumbnail per image (click to explain it), with a caption each.
import { toBytes } from "./buffers.js";
import { drawRGB, h } from "./dom.js";

/**
 * Build the thumbnails from the `thumbs` buffer (n*h*w*3 uint8) and `gallery` info
 * {n, h, w, captions, marks}. onPick(index) is called on a click (or Enter/Space).
 */
export function renderGallery(container, buffer, info, onPick) {
  const bytes = toBytes(buffer);
  const { n = 0, h: th = 0, w: tw = 0, captions = [], marks = [] } = info || {};
  const size = th * tw * 3;
  const items = [];
  for (let i = 0; i < n && (i + 1) * size <= bytes.length; i++) {
    const canvas = h("canvas", { class: "fw-thumb-image" });
    drawRGB(canvas, bytes.subarray(i * size, (i + 1) * size), th, tw);
    const item = h(
      "button",
      { class: "fw-thumb", type: "button", dataset: { index: i }, title: captions[i] || `image ${i}`,
        onclick: () => onPick(i) },
      canvas,
      h("span", { class: "fw-thumb-caption" }, captions[i] || String(i)),
    );
    if (marks[i]) item.classList.add(`fw-mark-${marks[i]}`);
    items.push(item);
  }
  container.replaceChildren(...items);
}

/** Mark thumbnail `index` as the chosen one (.fw-selected). */
export function markSelected(container, index) {
  for (const el of container.querySelectorAll(".fw-thumb")) {
    el.classList.toggle("fw-selected", Number(el.dataset.index) === index);
  }
}
