// The gallery: one thumbnail per image (click to explain it), with a caption each; a scroll area
// of bounded height, sorted by index, label or score, filtered by label text, keyboard driven.
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
  container.dataset.count = String(items.length);
  container.replaceChildren(...items);
}

/** Mark thumbnail `index` as the chosen one (.fw-selected) and keep it in the scroll area. */
export function markSelected(container, index) {
  for (const el of container.querySelectorAll(".fw-thumb")) {
    const chosen = Number(el.dataset.index) === index;
    el.classList.toggle("fw-selected", chosen);
    if (chosen) el.setAttribute("aria-current", "true");
    else el.removeAttribute("aria-current");
  }
}

/** The sort picker and the filter box above the gallery. */
export function buildGalleryTools() {
  const sort = h("select", { class: "fw-sort", "aria-label": "sort the gallery" },
    h("option", { value: "index" }, "index"), h("option", { value: "label" }, "label"),
    h("option", { value: "score" }, "score"));
  const filter = h("input", { class: "fw-filter", type: "search", placeholder: "filter by label",
                              "aria-label": "filter the gallery by label" });
  const count = h("span", { class: "fw-gallery-count" });
  const tools = h("div", { class: "fw-gallery-tools" },
    h("label", { class: "fw-control" }, h("span", {}, "sort"), sort), filter, count);
  return { tools, sort, filter, count };
}

/**
 * The order in which thumbnails show: "index", "label" (natural text order) or "score" (the
 * `scores` of the gallery info, highest first; index order when there are none).
 */
export function galleryOrder(info, by) {
  const { n = 0, captions = [], scores = null } = info || {};
  const order = Array.from({ length: n }, (_, i) => i);
  if (by === "label") {
    const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
    order.sort((a, b) => collator.compare(captions[a] || "", captions[b] || "") || a - b);
  } else if (by === "score" && scores && scores.length === n) {
    order.sort((a, b) => scores[b] - scores[a] || a - b);
  }
  return order;
}

/** Put the thumbnails in `order` and hide those whose caption lacks `text`; returns how many show. */
export function arrangeGallery(container, info, by, text) {
  const order = galleryOrder(info, by);
  const captions = (info && info.captions) || [];
  const needle = (text || "").trim().toLowerCase();
  const byIndex = new Map([...container.querySelectorAll(".fw-thumb")].map((el) => [Number(el.dataset.index), el]));
  let shown = 0;
  for (const i of order) {
    const el = byIndex.get(i);
    if (!el) continue;
    const visible = !needle || String(captions[i] ?? i).toLowerCase().includes(needle);
    el.hidden = !visible;
    shown += visible;
    container.append(el); // moves it to its place in the order
  }
  return shown;
}

/** Arrow keys, Home/End move the focus between visible thumbnails; Enter explains the focused one. */
export function galleryKey(container, event, onPick) {
  const items = [...container.querySelectorAll(".fw-thumb:not([hidden])")];
  if (!items.length) return false;
  const doc = container.ownerDocument;
  let at = items.indexOf(doc.activeElement);
  if (event.key === "Enter") {
    if (at < 0) return false;
    event.preventDefault();
    onPick(Number(items[at].dataset.index));
    return true;
  }
  const perRow = columns(items);
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow };
  if (event.key === "Home") at = 0;
  else if (event.key === "End") at = items.length - 1;
  else if (event.key in moves) at = at < 0 ? 0 : Math.min(items.length - 1, Math.max(0, at + moves[event.key]));
  else return false;
  event.preventDefault();
  items[at].focus();
  items[at].scrollIntoView?.({ block: "nearest" });
  return true;
}

/** Thumbnails per row, from their positions (1 where there is no layout, as in jsdom). */
function columns(items) {
  const top = items[0].offsetTop;
  let n = 0;
  while (n < items.length && items[n].offsetTop === top) n++;
  return items[0].offsetWidth > 0 ? Math.max(1, n) : 1;
}

/**
 * The gallery with its tools, wired: ui {gallery, sort, filter, galleryCount}; get(name,
 * fallback) reads a trait; onPick(index) explains. Returns {draw} (after thumbs/gallery change).
 */
export function galleryPanel(ui, get, onPick) {
  const arrange = () => {
    const info = get("gallery", {});
    const shown = arrangeGallery(ui.gallery, info, ui.sort.value, ui.filter.value);
    ui.galleryCount.textContent = `${shown} of ${info.n || 0} images`;
  };
  const draw = () => {
    const info = get("gallery", {});
    renderGallery(ui.gallery, get("thumbs", null), info, onPick);
    const scoreOption = ui.sort.querySelector("option[value=score]");
    scoreOption.disabled = !(info.scores && info.scores.length);
    scoreOption.title = scoreOption.disabled ? "this gallery has no scores" : "";
    if (scoreOption.disabled && ui.sort.value === "score") ui.sort.value = "index";
    arrange();
    markSelected(ui.gallery, get("selected", -1));
  };
  ui.sort.addEventListener("change", arrange);
  ui.filter.addEventListener("input", arrange);
  ui.gallery.addEventListener("keydown", (event) => galleryKey(ui.gallery, event, onPick));
  return { draw };
}
