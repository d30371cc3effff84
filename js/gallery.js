// The gallery: one thumbnail per image (click to explain it), in a scroll area of bounded height,
// sorted by index, label or score, filtered by label text, keyboard driven; any size.
//
// Virtualised: the thumbnails sit on a fixed grid, and beyond RENDER_ALL only the rows in sight
// plus a margin are in the DOM (10,000 images keep a few dozen elements). The pictures come with the `thumbs`
// trait (small galleries), or, when the gallery info says `paged`, in pages the kernel sends on
// demand: the gallery asks {type: "thumbs", page} for the pages its rows need and the answer
// {type: "thumbs", page, start, count, h, w} carries them in one binary buffer.
import { toBytes } from "./buffers.js";
import { h } from "./dom.js";

/** Layout of one cell (CSS pixels): the picture is IMAGE_W wide, the caption under it. */
export const IMAGE_W = 64;
export const CELL_W = 94;
export const GAP = 6;
const CAPTION_H = 30; // padding, border, gap and the caption line
/** Rows rendered above and below the ones in sight. */
export const MARGIN_ROWS = 3;
/** Thumbnails rendered while the gallery has no layout yet (hidden, detached, jsdom). */
export const UNLAID = 64;
/** Galleries of at most this many thumbnails shown keep all of them in the DOM (as before:
 * a test or a user script can click any `.fw-thumb[data-index]`); larger ones are virtualised. */
export const RENDER_ALL = 512;

/** The picture's CSS height for h x w thumbnails (kept between 16 and 128 px). */
export function imageHeight(info) {
  const { h: th = 0, w: tw = 0 } = info || {};
  return th && tw ? Math.max(16, Math.min(128, Math.round((IMAGE_W * th) / tw))) : IMAGE_W;
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

/** The order, less the thumbnails whose caption lacks `text` (case-insensitive). */
export function filteredOrder(info, by, text) {
  const captions = (info && info.captions) || [];
  const needle = (text || "").trim().toLowerCase();
  const order = galleryOrder(info, by);
  return needle ? order.filter((i) => String(captions[i] ?? i).toLowerCase().includes(needle)) : order;
}

/**
 * Which positions of the order to render: all of them up to RENDER_ALL, else the rows in sight
 * of a viewport `top`..`top + height` plus MARGIN_ROWS above and below; {from, to} (to
 * exclusive). No layout (height 0): the first UNLAID.
 */
export function windowOf(count, cols, pitch, top, height) {
  if (count <= RENDER_ALL) return { from: 0, to: count };
  if (!(height > 0)) return { from: 0, to: Math.min(count, UNLAID) };
  const first = Math.max(0, Math.floor(top / pitch) - MARGIN_ROWS);
  const last = Math.ceil((top + height) / pitch) + MARGIN_ROWS;
  return { from: Math.min(count, first * cols), to: Math.min(count, last * cols) };
}

/** The thumbnails of a gallery: the `thumbs` buffer, or pages received from the kernel. */
export class ThumbStore {
  constructor(info, buffer) {
    const { n = 0, h: th = 0, w: tw = 0, paged = false, page_size: pageSize = 0 } = info || {};
    this.n = n; this.h = th; this.w = tw; this.size = th * tw * 3;
    this.paged = !!paged && pageSize > 0;
    this.pageSize = this.paged ? pageSize : Math.max(1, n);
    this.inline = this.paged ? null : toBytes(buffer);
    this.pages = new Map();
    this.asked = new Set();
  }

  pageOf(index) { return Math.floor(index / this.pageSize); }

  /** The h*w*3 bytes of thumbnail `index`, or null while its page has not arrived. */
  bytes(index) {
    if (!this.size || index < 0 || index >= this.n) return null;
    if (!this.paged) {
      const end = (index + 1) * this.size;
      return end <= this.inline.length ? this.inline.subarray(end - this.size, end) : null;
    }
    const page = this.pages.get(this.pageOf(index));
    if (!page) return null;
    const at = (index - this.pageOf(index) * this.pageSize) * this.size;
    return page.subarray(at, at + this.size);
  }

  /** Whether page `page` must still be asked for (and remember that it has been). */
  ask(page) {
    if (!this.paged || this.pages.has(page) || this.asked.has(page)) return false;
    this.asked.add(page);
    return true;
  }

  /** Keep a page answer; returns [start, end) of the indices it holds, or null if it does not fit. */
  receive(content, buffer) {
    const { page, start, count, h: ph, w: pw } = content;
    const bytes = toBytes(buffer);
    const fits = this.paged && ph === this.h && pw === this.w && start === page * this.pageSize &&
      count > 0 && bytes.length === count * this.size;
    if (!fits) return null;
    this.pages.set(page, bytes);
    this.asked.delete(page);
    return [start, start + count];
  }

  get waiting() { return this.asked.size; }
}

/**
 * The gallery in `container` (the scroll area, `.fw-gallery`). onPick(index) explains an image;
 * send(content) asks the kernel (pages of thumbnails). Call setData(info, buffer) when the
 * traits change, arrange(by, text) to sort and filter, select(index) to mark the chosen one.
 */
export class VirtualGallery {
  constructor(container, onPick, send) {
    this.box = container;
    container.fwGallery = this; // markSelected(container, i) reaches it
    this.onPick = onPick;
    this.send = send || (() => {});
    this.space = h("div", { class: "fw-gallery-space" });
    this.box.replaceChildren(this.space);
    this.rendered = new Map(); // index -> element
    this.order = [];
    this.selected = -1;
    this.setData({}, null);
    this.box.addEventListener("scroll", () => this.render());
    if (typeof ResizeObserver !== "undefined") {
      this.resize = new ResizeObserver(() => this.layout());
      this.resize.observe(this.box);
    }
  }

  setData(info, buffer) {
    this.info = info || {};
    this.store = new ThumbStore(this.info, buffer);
    this.imageH = imageHeight(this.info);
    this.pitchX = CELL_W + GAP;
    this.pitchY = this.imageH + CAPTION_H + GAP;
    this.box.dataset.count = String(this.store.n);
    this.box.classList.toggle("fw-paged", this.store.paged);
    for (const el of this.rendered.values()) el.remove();
    this.rendered.clear();
    this.order = galleryOrder(this.info, "index");
    this.position = new Map(this.order.map((index, at) => [index, at]));
    this.layout();
  }

  /** Sort by "index", "label" or "score" and keep those whose caption has `text`; returns how many show. */
  arrange(by, text) {
    this.order = filteredOrder(this.info, by, text);
    this.position = new Map(this.order.map((index, at) => [index, at]));
    this.layout();
    return this.order.length;
  }

  columns() {
    const width = this.box.clientWidth;
    return width > 0 ? Math.max(1, Math.floor((width - 4 + GAP) / this.pitchX)) : 1;
  }

  /** Size the scroll space for the rows of the order, then render. */
  layout() {
    const rows = Math.ceil(this.order.length / this.columns());
    this.space.style.height = `${Math.max(0, rows * this.pitchY - GAP)}px`;
    this.render();
  }

  /**
   * Put the thumbnails in sight (plus a margin) in the DOM, and only those. Elements that leave
   * the window are reused for those that enter it (no new canvas, context or button per frame).
   */
  render() {
    const cols = this.columns();
    const { from, to } = windowOf(this.order.length, cols, this.pitchY, this.box.scrollTop, this.box.clientHeight);
    const focused = this.box.ownerDocument.activeElement;
    const wanted = new Map();
    for (let at = from; at < to; at++) wanted.set(this.order[at], at);
    const free = [];
    for (const [index, el] of this.rendered) {
      if (wanted.has(index)) continue;
      if (el === focused) { el.style.top = "-10000px"; continue; } // kept (out of sight) for the keyboard
      this.rendered.delete(index);
      free.push(el);
    }
    let added = 0;
    for (const [index, at] of wanted) {
      let el = this.rendered.get(index);
      if (!el) {
        el = free.pop() || this.create();
        this.bind(el, index);
        this.rendered.set(index, el);
        if (el.parentNode !== this.space) this.space.append(el);
        added++;
      }
      const left = `${(at % cols) * this.pitchX}px`, top = `${Math.floor(at / cols) * this.pitchY}px`;
      if (el.style.left !== left) el.style.left = left;
      if (el.style.top !== top) el.style.top = top;
    }
    for (const el of free) el.remove();
    this.box.dataset.rendered = String(this.rendered.size);
    this.box.dataset.waiting = String(this.store.waiting);
    // new thumbnails in the DOM: whoever marks thumbnails (e.g. the map's selection) marks them too
    if (added) this.box.dispatchEvent(new CustomEvent("fw-rendered", { detail: { added } }));
  }

  /** One thumbnail element (bound to an index by bind). */
  create() {
    const canvas = h("canvas", { class: "fw-thumb-image" });
    const el = h("button", { class: "fw-thumb", type: "button" }, canvas, h("span", { class: "fw-thumb-caption" }));
    el.addEventListener("click", () => this.onPick(Number(el.dataset.index)));
    return el;
  }

  /** Make `el` thumbnail `index`: its caption, mark, selection and picture. */
  bind(el, index) {
    const { captions = [], marks = [] } = this.info;
    el.dataset.index = String(index);
    el.title = captions[index] || `image ${index}`;
    el.className = marks[index] ? `fw-thumb fw-mark-${marks[index]}` : "fw-thumb";
    el.style.width = `${CELL_W}px`;
    el.style.height = `${this.pitchY - GAP}px`;
    el.lastChild.textContent = captions[index] || String(index);
    el.firstChild.style.width = `${IMAGE_W}px`;
    el.firstChild.style.height = `${this.imageH}px`;
    if (index === this.selected) { el.classList.add("fw-selected"); el.setAttribute("aria-current", "true"); }
    else el.removeAttribute("aria-current");
    this.paint(el, index);
    return el;
  }

  thumb(index) { return this.bind(this.create(), index); }

  paint(el, index) {
    const bytes = this.store.bytes(index);
    const canvas = el.firstChild;
    const { h: th, w: tw } = this.store;
    if (canvas.width !== tw) canvas.width = tw;
    if (canvas.height !== th) canvas.height = th;
    const ctx = canvas.getContext("2d");
    if (bytes) {
      if (ctx) {
        if (!this.scratch || this.scratch.width !== tw || this.scratch.height !== th) this.scratch = ctx.createImageData(tw, th);
        const data = this.scratch.data;
        for (let i = 0, n = th * tw; i < n; i++) {
          data[4 * i] = bytes[3 * i]; data[4 * i + 1] = bytes[3 * i + 1]; data[4 * i + 2] = bytes[3 * i + 2]; data[4 * i + 3] = 255;
        }
        ctx.putImageData(this.scratch, 0, 0);
      }
      delete el.dataset.loading;
      return;
    }
    if (ctx) ctx.clearRect(0, 0, tw, th); // a reused element must not show its last picture
    el.dataset.loading = "";
    const page = this.store.pageOf(index);
    if (this.store.ask(page)) this.send({ type: "thumbs", page });
  }

  /** A custom message from the kernel: a page of thumbnails; true when it was one. */
  onMessage(content, buffers) {
    if (!content || content.type !== "thumbs") return false;
    const span = buffers && buffers.length ? this.store.receive(content, buffers[0]) : null;
    if (span) {
      for (const [index, el] of this.rendered) if (index >= span[0] && index < span[1]) this.paint(el, index);
    }
    this.box.dataset.waiting = String(this.store.waiting);
    return true;
  }

  /** Mark `index` as the chosen one (.fw-selected) and scroll it into sight. */
  select(index, scroll = true) {
    this.selected = index;
    for (const [i, el] of this.rendered) {
      el.classList.toggle("fw-selected", i === index);
      if (i === index) el.setAttribute("aria-current", "true");
      else el.removeAttribute("aria-current");
    }
    if (scroll) this.reveal(index);
  }

  /** Scroll so that thumbnail `index` is in sight (nearest edge), then render. */
  reveal(index) {
    const at = this.position.get(index);
    const height = this.box.clientHeight;
    if (at == null || !(height > 0)) return;
    const top = Math.floor(at / this.columns()) * this.pitchY;
    if (top < this.box.scrollTop) this.box.scrollTop = top;
    else if (top + this.pitchY > this.box.scrollTop + height) this.box.scrollTop = top + this.pitchY - height;
    this.render();
  }

  /** Arrow keys, Home/End move the focus between the thumbnails shown; Enter explains the focused one. */
  key(event) {
    const count = this.order.length;
    if (!count) return false;
    const focused = this.box.ownerDocument.activeElement;
    const inside = focused && focused.classList && focused.classList.contains("fw-thumb") && this.box.contains(focused);
    let at = inside ? this.position.get(Number(focused.dataset.index)) ?? -1 : -1;
    if (event.key === "Enter") {
      if (at < 0) return false;
      event.preventDefault();
      this.onPick(this.order[at]);
      return true;
    }
    const cols = this.columns();
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols };
    if (event.key === "Home") at = 0;
    else if (event.key === "End") at = count - 1;
    else if (event.key in moves) at = at < 0 ? 0 : Math.min(count - 1, Math.max(0, at + moves[event.key]));
    else return false;
    event.preventDefault();
    const index = this.order[at];
    this.reveal(index);
    if (!this.rendered.has(index)) { // no layout (jsdom): render the window around it
      const el = this.thumb(index);
      this.rendered.set(index, el);
      this.space.append(el);
    }
    this.rendered.get(index).focus();
    return true;
  }
}

/** Mark thumbnail `index` of the gallery in `container` as the chosen one and scroll it into sight. */
export function markSelected(container, index) {
  container.fwGallery?.select(index);
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
 * The gallery with its tools, wired: ui {gallery, sort, filter, galleryCount}; get(name,
 * fallback) reads a trait; onPick(index) explains; send(content) asks the kernel.
 * Returns {draw (after thumbs/gallery change), select(index), onMessage(content, buffers), view}.
 */
export function galleryPanel(ui, get, onPick, send) {
  const view = new VirtualGallery(ui.gallery, onPick, send);
  const arrange = () => {
    const info = get("gallery", {});
    const shown = view.arrange(ui.sort.value, ui.filter.value);
    ui.galleryCount.textContent = `${shown} of ${info.n || 0} images`;
  };
  const draw = () => {
    const info = get("gallery", {});
    view.setData(info, get("thumbs", null));
    const scoreOption = ui.sort.querySelector("option[value=score]");
    scoreOption.disabled = !(info.scores && info.scores.length);
    scoreOption.title = scoreOption.disabled ? "this gallery has no scores" : "";
    if (scoreOption.disabled && ui.sort.value === "score") ui.sort.value = "index";
    arrange();
    view.select(get("selected", -1));
  };
  ui.sort.addEventListener("change", arrange);
  ui.filter.addEventListener("input", arrange);
  ui.gallery.addEventListener("keydown", (event) => view.key(event));
  return { draw, view, select: (index) => view.select(index),
           onMessage: (content, buffers) => view.onMessage(content, buffers) };
}
