// The compare view: every method that applies, on the selected image, side by side on ONE
// colour scale (each map normalised to its own 0-1, the same colormap and range for all).
// Computed on demand: the toolbar's Compare button asks the kernel {type: "compare", index}; it
// answers {type: "compare", status: "ready", index, h, w, scale, cells: [{method, caption,
// degenerate, error}]} with buffers [image h*w*3, map of each cell h*w] (see widget/compare.py).
import { toBytes } from "./buffers.js";
import { blend, lut } from "./colormap.js";
import { h } from "./dom.js";
import { fitSize } from "./paint.js";

/** The CSS box (px) of one cell's picture. */
export const CELL_BOX = 150;

export function buildCompare() {
  const compareTitle = h("span", { class: "fw-compare-title" }, "compare methods");
  const compareStatus = h("span", { class: "fw-compare-status", role: "status" });
  const compareCancel = h("button", { class: "fw-compare-cancel", type: "button", hidden: true }, "Cancel");
  const compareScale = h("div", { class: "fw-compare-scale" });
  const compareGrid = h("div", { class: "fw-compare", role: "list" });
  const panel = h("div", { class: "fw-compare-panel", hidden: true },
    h("div", { class: "fw-compare-head" }, compareTitle, compareStatus, compareCancel), compareScale, compareGrid);
  return { panel, compareStatus, compareCancel, compareScale, compareGrid };
}

/** The answer's pictures: {index, h, w, scale, rgb, cells: [{..., heat}]}, or null if they do not fit. */
export function decodeCompare(content, buffers) {
  const { h: ch = 0, w: cw = 0, cells = [] } = content || {};
  const rgb = toBytes(buffers && buffers[0]);
  if (!ch || !cw || rgb.length !== ch * cw * 3) return null;
  const decoded = cells.map((cell, k) => {
    const heat = toBytes(buffers[k + 1]);
    return { ...cell, heat: heat.length === ch * cw ? heat : null };
  });
  return { index: content.index, h: ch, w: cw, scale: content.scale || "", rgb, cells: decoded };
}

/** What a cell's caption says: the method's map, and why it is flat or missing when it is. */
export function cellCaption(cell) {
  if (cell.error) return `${cell.method}: failed (${cell.error})`;
  if (!cell.heat) return `${cell.method}: no map`;
  return cell.degenerate ? `${cell.caption} · flat map: ${cell.degenerate}` : cell.caption;
}

/**
 * The compare panel, wired: ui has compareToggle (toolbar) and the parts of buildCompare();
 * get(name, fallback) reads a trait; send(content) asks the kernel. Returns {onMessage (true when
 * the message was the panel's), onState(state, selected) (asks again for a newly selected
 * image while open), paint (after colormap, blend or threshold change), open}.
 */
export function comparePanel(ui, get, send) {
  const local = { open: false, data: null, asked: -1 };
  const status = (text) => { ui.compareStatus.textContent = text; };
  const busy = (on) => { ui.compareCancel.hidden = !on; ui.panel.dataset.busy = on ? "true" : "false"; };

  function ask(index) {
    if (index < 0) { status("click a thumbnail first: the compare view shows the selected image"); return; }
    if (get("state", "idle") === "computing") { status("waiting for the view to be ready …"); return; }
    local.asked = index;
    status(`computing every method for ${label(index)} …`);
    busy(true);
    send({ type: "compare", index });
  }

  const label = (index) => (get("gallery", {}).captions || [])[index] ?? `image ${index}`;

  function setOpen(open) {
    local.open = open;
    ui.panel.hidden = !open;
    ui.compareToggle.setAttribute("aria-pressed", open ? "true" : "false");
    if (open && (!local.data || local.data.index !== get("selected", -1))) ask(get("selected", -1));
  }

  function paint() {
    const data = local.data;
    if (!data) return;
    const table = lut(get("colormap", "jet"));
    const alpha = get("alpha", 0.5), threshold = get("threshold", 0);
    for (const [k, cell] of data.cells.entries()) {
      const canvas = ui.compareGrid.children[k]?.querySelector("canvas");
      if (!canvas || !cell.heat) continue;
      const ctx = canvas.getContext("2d");
      if (!ctx) continue; // a DOM without 2-D canvas (tests)
      ctx.putImageData(new ImageData(blend(data.rgb, cell.heat, alpha, table, threshold), data.w, data.h), 0, 0);
    }
  }

  function show(data) {
    local.data = data;
    const { width, height } = fitSize(data.h, data.w, CELL_BOX);
    ui.compareScale.textContent = data.scale;
    ui.panel.dataset.index = String(data.index);
    ui.compareGrid.replaceChildren(...data.cells.map((cell) => {
      const canvas = h("canvas", { class: "fw-compare-map", width: data.w, height: data.h,
                                   style: { width: `${width}px`, height: `${height}px` } });
      const el = h("div", { class: "fw-compare-cell", role: "listitem", dataset: { method: cell.method } },
        canvas, h("div", { class: "fw-compare-caption", title: cellCaption(cell) }, cellCaption(cell)));
      if (cell.error || !cell.heat) el.classList.add("fw-failed");
      if (cell.degenerate) el.classList.add("fw-degenerate");
      return el;
    }));
    paint();
    status(`${label(data.index)} · ${data.cells.length} methods`);
  }

  function onMessage(content, buffers) {
    if (!content || content.type !== "compare") return false;
    if (content.status === "computing") {
      const pct = content.progress != null ? ` ${Math.round(100 * content.progress)}%` : "";
      status(`computing ${content.method} (${content.done + 1} of ${content.total})${pct} …`);
      busy(true);
      return true;
    }
    busy(false);
    if (content.status === "ready") {
      const data = decodeCompare(content, buffers);
      if (data && data.index === get("selected", -1)) show(data);
      else if (!data) status("the comparison arrived damaged (its maps do not fit its size)");
      return true;
    }
    local.asked = content.status === "refused" ? -1 : local.asked; // refused: ask again when ready
    status(content.error || "no comparison");
    if (/needs the kernel/.test(content.error || "")) ui.compareToggle.title = content.error;
    return true;
  }

  function onState(state, selected) {
    if (!local.open || state !== "ready" || selected < 0) return;
    if ((local.data && local.data.index === selected) || local.asked === selected) return;
    ask(selected);
  }

  ui.compareToggle.addEventListener("click", () => setOpen(!local.open));
  ui.compareCancel.addEventListener("click", () => { send({ type: "compare-cancel" }); status("cancelling …"); });
  return { onMessage, onState, paint, open: setOpen };
}
