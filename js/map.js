// The embedding map: every image a point of its feature space (PCA or UMAP, made in the kernel),
// drawn on a 2-D canvas as pixels (one ImageData per frame). Drag pans, the wheel zooms, hovering shows the point's
// thumbnail, a click explains that image, shift+drag selects a box (the `selection` trait).
// Tests find point i on screen with canvas.fwPointPosition(i) -> {x, y} (CSS px, canvas-relative);
// canvas.fwRedraw() draws at once (benchmarks).
import { toBytes } from "./buffers.js";
import { lut } from "./colormap.js";
import { drawRGB, h, setOptions } from "./dom.js";
import { buildNeighbours, neighbourList, renderNeighbours } from "./neighbours.js";

/** Categorical colours (colour-blind friendly first), repeated beyond their number. */
export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
  "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#17becf"];
const RAMP = 16; // continuous colourings use this many steps of viridis
const RADIUS = 2; // a point's half side, CSS px
const PICK = 8; // a click or hover finds the nearest point within this many CSS px
const HEIGHT = 320;

/**
 * Decode map_points (map_info {n, k}): xy float32 (2n), then knn uint32 (n*k) and sim float32
 * (n*k) when k > 0, then group uint16 (n), then score uint8 (n). Null when the buffer is short.
 */
export function decodeMap(buffer, info) {
  const { n = 0, k = 0 } = info || {};
  let bytes = toBytes(buffer);
  if (!n || bytes.length < n * (8 + 8 * k + 3)) return null;
  if (bytes.byteOffset % 4) bytes = bytes.slice(); // typed arrays need aligned starts
  const { buffer: raw, byteOffset: o } = bytes;
  const xy = new Float32Array(raw, o, 2 * n);
  let at = o + 8 * n;
  const knn = k ? new Uint32Array(raw, at, n * k) : null;
  at += 4 * n * k;
  const sim = k ? new Float32Array(raw, at, n * k) : null;
  at += 4 * n * k;
  const group = new Uint16Array(raw, at, n);
  const score = new Uint8Array(raw, at + 2 * n, n);
  return { n, k, xy, knn, sim, group, score };
}

/** The colour step of each point (Uint8Array n) and the CSS colour of each step, for a mode. */
export function colourSteps(data, mode) {
  const steps = new Uint8Array(data.n);
  if (mode === "rank" || mode === "score") {
    const ramp = lut("viridis");
    const colours = Array.from({ length: RAMP }, (_, s) => {
      const v = 3 * Math.round((s / (RAMP - 1)) * 255);
      return `rgb(${ramp[v]},${ramp[v + 1]},${ramp[v + 2]})`;
    });
    for (let i = 0; i < data.n; i++) {
      const t = mode === "rank" ? i / Math.max(1, data.n - 1) : data.score[i] / 255;
      steps[i] = Math.min(RAMP - 1, Math.floor(t * RAMP));
    }
    return { steps, colours };
  }
  for (let i = 0; i < data.n; i++) steps[i] = data.group[i] % PALETTE.length;
  return { steps, colours: PALETTE };
}

/** CSS colours ("#rrggbb" or "rgb(r,g,b)") as 32-bit RGBA pixels (little-endian), mixed with
 * white by `fade` (0 = the colour, 1 = white). */
export function packColours(colours, fade = 0) {
  return Uint32Array.from(colours, (css) => {
    const m = /^#(..)(..)(..)$/.exec(css);
    const rgb = m ? m.slice(1).map((x) => parseInt(x, 16)) : css.match(/\d+/g).slice(0, 3).map(Number);
    const [r, g, b] = rgb.map((v) => Math.round(v + (255 - v) * fade));
    return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
  });
}

/**
 * Paint every point as a square of side 2*radius device px straight into `pixels` (Uint32Array
 * width*height, RGBA): one pass, no path per point, so 50,000 points take a few ms. `screen`:
 * CSS px (2n); `steps` the colour of each point; `packed` the pixel of each colour; `chosen`
 * (Uint8Array n or null): those points are drawn last, full colour, with a dark border, the
 * others in `faded` colours.
 */
export function paintPoints(pixels, width, height, screen, dpr, steps, packed, faded, chosen, radius = RADIUS) {
  pixels.fill(0);
  const r = Math.max(1, Math.round(radius * dpr));
  const square = (i, half, colour) => {
    const cx = Math.round(screen[2 * i] * dpr), cy = Math.round(screen[2 * i + 1] * dpr);
    const x0 = Math.max(0, cx - half), x1 = Math.min(width, cx + half);
    const y0 = Math.max(0, cy - half), y1 = Math.min(height, cy + half);
    for (let y = y0; y < y1; y++) {
      const row = y * width;
      for (let x = x0; x < x1; x++) pixels[row + x] = colour;
    }
  };
  const n = steps.length;
  for (let i = 0; i < n; i++) if (!chosen || !chosen[i]) square(i, r, (chosen ? faded : packed)[steps[i]]);
  if (!chosen) return;
  const dark = 0xff222222;
  for (let i = 0; i < n; i++) {
    if (chosen[i]) { square(i, r + 1, dark); square(i, r, packed[steps[i]]); }
  }
}

/** The view: data bounds fitted into width x height (y up), zoomed by `zoom` about (cx, cy). */
export function transform(bounds, width, height, view) {
  const [x0, x1, y0, y1] = bounds;
  const margin = 12;
  const fit = Math.min((width - 2 * margin) / Math.max(x1 - x0, 1e-12), (height - 2 * margin) / Math.max(y1 - y0, 1e-12));
  const s = fit * view.zoom;
  const cx = view.cx ?? (x0 + x1) / 2, cy = view.cy ?? (y0 + y1) / 2;
  return { s, cx, cy, width, height,
    x: (x) => width / 2 + (x - cx) * s,
    y: (y) => height / 2 - (y - cy) * s };
}

/** The nearest point to (px, py) within `radius` in screen coordinates `screen` (2n), or -1. */
export function nearest(screen, px, py, radius = PICK) {
  let best = -1, bestD = radius * radius;
  for (let i = 0, n = screen.length / 2; i < n; i++) {
    const dx = screen[2 * i] - px, dy = screen[2 * i + 1] - py;
    const d = dx * dx + dy * dy;
    if (d <= bestD) { bestD = d; best = i; }
  }
  return best;
}

/** Indices of the points inside the box (x0, y0)-(x1, y1) in screen coordinates. */
export function inBox(screen, x0, y0, x1, y1) {
  const [l, r, t, b] = [Math.min(x0, x1), Math.max(x0, x1), Math.min(y0, y1), Math.max(y0, y1)];
  const found = [];
  for (let i = 0, n = screen.length / 2; i < n; i++) {
    const x = screen[2 * i], y = screen[2 * i + 1];
    if (x >= l && x <= r && y >= t && y <= b) found.push(i);
  }
  return found;
}

/**
 * The map panel, wired: ctx {get(name, fallback), setTrait(name, value), pick(index),
 * pair(index, other), gallery (the .fw-gallery element)}. Returns {el, handlers} (handlers: the
 * [[trait names], fn] pairs to bind).
 */
export function mapPanel(ctx) {
  const { get, setTrait } = ctx;
  const canvas = h("canvas", { class: "fw-map", dataset: { count: 0, selected: 0 },
                               role: "img", "aria-label": "map of the images' feature space" });
  const colour = h("select", { class: "fw-map-colour", "aria-label": "colour the points by" });
  const reset = h("button", { type: "button", class: "fw-map-reset", title: "fit all points" }, "fit");
  const clear = h("button", { type: "button", class: "fw-map-clear", title: "clear the selection" }, "clear");
  const note = h("span", { class: "fw-map-note" });
  const legend = h("div", { class: "fw-map-legend" });
  const tipCanvas = h("canvas", { class: "fw-map-tip-image" });
  const tipText = h("div", { class: "fw-map-tip-text" });
  const tip = h("div", { class: "fw-map-tip", hidden: true }, tipCanvas, tipText);
  const box = h("div", { class: "fw-map-box", hidden: true });
  const near = buildNeighbours();
  const el = h("div", { class: "fw-map-panel", hidden: true },
    h("div", { class: "fw-map-tools" }, h("label", { class: "fw-control" }, h("span", {}, "colour by"), colour),
      reset, clear, note),
    h("div", { class: "fw-map-body" },
      h("div", { class: "fw-map-area" }, canvas, box, tip), near.el),
    legend);

  let data = null, steps = null, image = null, view = { zoom: 1, cx: null, cy: null };
  let screen = new Float32Array(0), frame = 0, hover = -1;

  const info = () => get("map_info", {});
  /** Thumbnail i as {bytes, h, w}: from the gallery's store (pages asked for on demand in a
   * large gallery, js/gallery.js), else from the `thumbs` trait; null while not there. */
  const thumb = (i) => {
    const store = ctx.gallery.fwGallery?.store;
    if (store) {
      const bytes = store.bytes(i);
      if (!bytes && store.paged && store.ask(store.pageOf(i))) ctx.gallery.fwGallery.send({ type: "thumbs", page: store.pageOf(i) });
      return bytes ? { bytes, h: store.h, w: store.w } : null;
    }
    const gallery = get("gallery", {});
    const all = toBytes(get("thumbs", null));
    const { h: th = 0, w: tw = 0 } = gallery;
    const one = th * tw * 3;
    return one && !gallery.paged && all.length >= (i + 1) * one ? { bytes: all.subarray(i * one, (i + 1) * one), h: th, w: tw } : null;
  };
  const size = () => ({ width: canvas.clientWidth || 600, height: HEIGHT });
  const current = () => transform(info().bounds || [0, 1, 0, 1], size().width, size().height, view);
  const anchor = () => { const v = get("view", {}); return v.anchor ?? v.index ?? get("selected", -1); };

  function load() {
    data = decodeMap(get("map_points", null), info());
    el.hidden = !data;
    const main = el.parentNode?.querySelector(":scope > .fw-main");
    if (info().first && main) el.parentNode.insertBefore(el, main); // EmbeddingExplorer: map first
    if (!data) { canvas.dataset.count = "0"; return; }
    setOptions(colour, info().colour_by || ["rank", "score"], colour.value && (info().colour_by || []).includes(colour.value) ? colour.value : undefined);
    const explained = info().explained;
    note.textContent = `${data.n} images · ${info().projection || "pca"}` +
      (explained ? ` · ${Math.round(100 * (explained[0] + explained[1]))}% of the variance` : "");
    view = { zoom: 1, cx: null, cy: null };
    recolour();
  }

  function recolour() {
    if (!data) return;
    const mode = colour.value || "rank";
    const found = colourSteps(data, mode);
    steps = { ...found, packed: packColours(found.colours), faded: packColours(found.colours, 0.7) };
    drawLegend(mode);
    schedule();
  }

  function drawLegend(mode) {
    const i = info();
    if (mode === "rank" || mode === "score") {
      const [lo, hi] = i.score_range || [0, 0];
      const what = mode === "rank" ? "gallery order: first → last" : `${i.score_name || "score"}: ${lo.toFixed(3)} → ${hi.toFixed(3)}`;
      legend.replaceChildren(h("span", { class: "fw-map-ramp" }), h("span", {}, what));
      return;
    }
    const names = i.groups || [];
    legend.replaceChildren(...names.slice(0, 24).map((name, g) => h("span", { class: "fw-map-key" },
      h("i", { style: { background: PALETTE[g % PALETTE.length] } }), name)),
    ...(names.length > 24 ? [h("span", {}, `… ${names.length - 24} more`)] : []));
  }

  function schedule() {
    if (frame) return;
    const raf = typeof requestAnimationFrame === "function" ? requestAnimationFrame : (f) => setTimeout(f, 0);
    frame = raf(() => { frame = 0; draw(); });
  }

  function draw() {
    if (!data) return;
    const { width, height } = size();
    const dpr = (typeof window !== "undefined" && window.devicePixelRatio) || 1;
    if (canvas.width !== Math.round(width * dpr)) canvas.width = Math.round(width * dpr);
    if (canvas.height !== Math.round(height * dpr)) canvas.height = Math.round(height * dpr);
    const t = current();
    if (screen.length !== 2 * data.n) screen = new Float32Array(2 * data.n);
    for (let i = 0; i < data.n; i++) {
      screen[2 * i] = t.x(data.xy[2 * i]);
      screen[2 * i + 1] = t.y(data.xy[2 * i + 1]);
    }
    canvas.dataset.count = String(data.n);
    const selection = get("selection", []) || [];
    canvas.dataset.selected = String(selection.length);
    const g = canvas.getContext && canvas.getContext("2d");
    if (!g) return; // no 2-D canvas (jsdom): positions and counts are still kept
    const [W, H] = [canvas.width, canvas.height];
    if (!image || image.width !== W || image.height !== H) image = g.createImageData(W, H);
    let chosen = null;
    if (selection.length) {
      chosen = new Uint8Array(data.n);
      for (const i of selection) if (i >= 0 && i < data.n) chosen[i] = 1;
    }
    paintPoints(new Uint32Array(image.data.buffer), W, H, screen, dpr, steps.steps, steps.packed, steps.faded, chosen);
    g.putImageData(image, 0, 0);
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const a = anchor();
    for (const [i, r, style] of [[a, 7, "#d62728"], [hover, 5, "#111"]]) {
      if (!(i >= 0 && i < data.n)) continue;
      g.strokeStyle = style;
      g.lineWidth = 2;
      g.beginPath();
      g.arc(screen[2 * i], screen[2 * i + 1], r, 0, 2 * Math.PI);
      g.stroke();
    }
  }

  /** Where point i is drawn, in CSS px relative to the canvas (for tests and tools). */
  canvas.fwPointPosition = (i) => {
    if (!data || !(i >= 0 && i < data.n)) return null;
    const t = current();
    return { x: t.x(data.xy[2 * i]), y: t.y(data.xy[2 * i + 1]) };
  };

  /** Draw now (not at the next frame): benchmarks time a frame with it. */
  canvas.fwRedraw = () => draw();

  function local(event) {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  function showTip(i, x, y) {
    hover = i;
    tip.hidden = i < 0;
    schedule();
    if (i < 0) return;
    const gallery = get("gallery", {});
    const picture = thumb(i);
    tipCanvas.hidden = !picture;
    if (picture) drawRGB(tipCanvas, picture.bytes, picture.h, picture.w);
    tip.fwAt = [x, y];
    const caption = (gallery.captions || [])[i] ?? `#${i}`;
    const group = (info().groups || [])[data.group[i]];
    tipText.textContent = group && group !== caption ? `${caption} · ${group}` : caption;
    tip.dataset.index = String(i);
    tip.style.left = `${Math.min(x + 12, size().width - 90)}px`;
    tip.style.top = `${Math.max(0, y - 12)}px`;
  }

  let press = null;
  canvas.addEventListener("pointerdown", (event) => {
    const [x, y] = local(event);
    press = { x, y, shift: event.shiftKey, cx: current().cx, cy: current().cy, moved: false };
    canvas.setPointerCapture?.(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    const [x, y] = local(event);
    if (!press) { if (data) showTip(nearest(screen, x, y), x, y); return; }
    press.moved ||= Math.hypot(x - press.x, y - press.y) > 3;
    if (!press.moved) return;
    if (press.shift) {
      Object.assign(box.style, { left: `${Math.min(x, press.x)}px`, top: `${Math.min(y, press.y)}px`,
        width: `${Math.abs(x - press.x)}px`, height: `${Math.abs(y - press.y)}px` });
      box.hidden = false;
    } else {
      const t = current();
      view = { ...view, cx: press.cx - (x - press.x) / t.s, cy: press.cy + (y - press.y) / t.s };
      schedule();
    }
  });
  canvas.addEventListener("pointerup", (event) => {
    if (!press || !data) { press = null; return; }
    const [x, y] = local(event);
    const was = press;
    press = null;
    box.hidden = true;
    if (!was.moved) {
      const i = nearest(screen, x, y);
      if (i >= 0) ctx.pick(i);
    } else if (was.shift) {
      setTrait("selection", inBox(screen, was.x, was.y, x, y));
    }
  });
  canvas.addEventListener("pointerleave", () => { if (!press) showTip(-1, 0, 0); });
  canvas.addEventListener("wheel", (event) => {
    if (!data) return;
    event.preventDefault();
    const [x, y] = local(event);
    const t = current();
    const dataX = t.cx + (x - t.width / 2) / t.s, dataY = t.cy - (y - t.height / 2) / t.s;
    const zoom = Math.min(1e4, Math.max(0.2, view.zoom * Math.exp(-event.deltaY * 0.0015)));
    const s = t.s * (zoom / view.zoom);
    view = { zoom, cx: dataX - (x - t.width / 2) / s, cy: dataY + (y - t.height / 2) / s };
    schedule();
  }, { passive: false });
  colour.addEventListener("change", recolour);
  reset.addEventListener("click", () => { view = { zoom: 1, cx: null, cy: null }; schedule(); });
  clear.addEventListener("click", () => setTrait("selection", []));

  function markGallery() {
    const chosen = new Set(get("selection", []) || []);
    for (const item of ctx.gallery.querySelectorAll(".fw-thumb")) {
      item.classList.toggle("fw-in-selection", chosen.has(Number(item.dataset.index)));
    }
  }

  function showNeighbours() {
    if (!data) return;
    const i = anchor();
    const items = neighbourList(data, get("neighbours", {}), i);
    const v = get("view", {});
    // a pair from the map: the other figure is the anchor image, not a query
    const label = el.parentNode?.querySelector(".fw-pair-figure .fw-figure-label");
    if (label) {
      label.dataset.fwLabel ??= label.textContent;
      label.textContent = v.anchor != null ? (get("gallery", {}).captions || [])[v.anchor] ?? `#${v.anchor}` : label.dataset.fwLabel;
    }
    renderNeighbours(near, items, { gallery: get("gallery", {}), thumb, of: i,
      active: v.anchor != null ? v.index : -1, onPick: (j) => ctx.pair(j, i) });
  }

  // a page of thumbnails arrived (large galleries): the tip and the list may now show them
  const onPage = (content) => {
    if (!content || content.type !== "thumbs") return;
    setTimeout(() => { if (hover >= 0 && tip.fwAt) showTip(hover, ...tip.fwAt); showNeighbours(); }, 0);
  };
  // the gallery draws only its visible rows and reuses elements: mark them as they change
  const Observer = typeof MutationObserver === "function" ? MutationObserver : null;
  if (Observer) {
    new Observer(() => markGallery()).observe(ctx.gallery,
      { childList: true, subtree: true, attributes: true, attributeFilter: ["data-index"] });
  }

  const handlers = [
    ["msg:custom", onPage],
    [["map_points", "map_info"], () => { load(); showNeighbours(); markGallery(); }],
    [["selection"], () => { canvas.dataset.selected = String((get("selection", []) || []).length); markGallery(); schedule(); }],
    [["view", "selected", "neighbours"], () => { showNeighbours(); schedule(); }],
    [["thumbs", "gallery"], markGallery],
  ];
  const start = () => { load(); showNeighbours(); markGallery(); };
  return { el, handlers, start };
}
