// A stand-in for the kernel-side model, for pages exported with Explorer.to_html(): the traits
// come embedded in the page, and the explanations of every thumbnail were computed beforehand,
// so clicks, blending and channel inspection all work with no kernel and no network.
import { fromBase64 } from "./buffers.js";

/**
 * A page's binary values: each image, map and channel stack is stored once, as base64 in
 * `blobs`, and views refer to it as {$blob: id}. Decoded on first use, then shared.
 */
export class BlobTable {
  constructor(blobs) {
    this.blobs = blobs || [];
    this.decoded = new Map();
  }

  /** A trait value as the widget reads it: references and {$bytes} become DataViews. */
  value(value) {
    if (!value || typeof value !== "object") return value;
    if (typeof value.$bytes === "string") return new DataView(fromBase64(value.$bytes).buffer);
    if (typeof value.$blob === "number") {
      const id = value.$blob;
      if (!(id >= 0 && id < this.blobs.length)) {
        throw new Error(`famwidget: the page refers to image ${id}, but its table has ${this.blobs.length}`);
      }
      if (!this.decoded.has(id)) this.decoded.set(id, new DataView(fromBase64(this.blobs[id]).buffer));
      return this.decoded.get(id);
    }
    return value;
  }

  traits(traits) {
    return Object.fromEntries(Object.entries(traits || {}).map(([k, v]) => [k, this.value(v)]));
  }
}

export class StaticModel {
  /**
   * payload = {traits: {...}, explanations: {"method|layer|index": {...traits}}, blobs: [base64]};
   * binary values are {$blob: id} references into `blobs` (or inline {$bytes: base64}).
   */
  constructor(payload) {
    this.table = new BlobTable(payload.blobs);
    this.values = this.table.traits(payload.traits);
    this.explanations = payload.explanations || {};
    this.listeners = new Map();
    this.pending = new Set();
  }

  get(name) { return this.values[name]; }

  set(name, value) {
    this.values[name] = value;
    this.pending.add(name);
  }

  save_changes() {
    const names = [...this.pending];
    this.pending.clear();
    for (const name of names) this.emit(`change:${name}`);
    const choice = ["method", "layer", "pair_target"].some((n) => names.includes(n));
    if (choice && this.values.selected >= 0) this.show(this.values.selected);
  }

  /** One event name per call, as anywidget's model interface (no Backbone space lists). */
  on(event, callback) {
    if (/\s/.test(event)) throw new Error(`famwidget: one event name per on() call, got "${event}"`);
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(callback);
  }

  off(event, callback) {
    this.listeners.get(event)?.delete(callback);
  }

  emit(event, ...args) {
    for (const callback of this.listeners.get(event) || []) callback(...args);
  }

  send(content) {
    if (content && content.type === "select") setTimeout(() => this.show(content.index), 0);
    // a neighbour on the map: the pair view stored as "pair|method|layer|index|other"
    if (content && content.type === "pair") setTimeout(() => this.show(content.index, content.other), 0);
    if (content && content.type === "compare") setTimeout(() => this.compare(content.index), 0);
  }

  /** The compare view from the page's stored maps of image `index` (kernel-free). */
  compare(index) {
    const rest = this.values.pair_target != null ? [this.values.pair_target] : [];
    const found = (this.values.methods || []).map((m) => [m, this.explanations[[m, this.values.layer, index, ...rest].join("|")]])
      .filter(([, stored]) => stored);
    if (found.length < 2) {
      const held = found.map(([m]) => m).join(", ") || "no";
      this.emit("msg:custom", { type: "compare", status: "refused", index, error: "comparing methods needs the kernel: " +
        `this page holds the ${held} maps only (export with Explorer.to_html(path, methods=[...]) to compare offline)` }, []);
      return;
    }
    const view = this.table.value(found[0][1].view) || {};
    const buffers = [this.table.value(found[0][1].image)];
    const cells = found.map(([method, stored]) => {
      buffers.push(this.table.value(stored.heatmap));
      const v = this.table.value(stored.view) || {};
      return { method, caption: `${method} · ${v.target ?? ""}`, degenerate: null, error: null };
    });
    this.emit("msg:custom", { type: "compare", status: "ready", index, h: view.h, w: view.w, cells,
      scale: "one colour scale: each map normalised to its own 0-1 (0 = its least, 1 = its most)" }, buffers);
  }

  /** Put the stored explanation of image `index` (current method and layer) on screen. */
  show(index, other) {
    if (!(index >= 0)) return;
    const parts = [this.values.method, this.values.layer, index];
    if (other != null) parts.unshift("pair"), parts.push(other);
    else if (this.values.pair_target != null) parts.push(this.values.pair_target);
    const key = parts.join("|");
    const stored = this.explanations[key];
    const noPair = this.values.map_info?.n ? { pair: {}, pair_image: null, pair_heatmap: null } : {};
    const changes = stored
      ? { ...noPair, ...this.table.traits(stored), selected: index, state: "ready", error: "", progress: 1 }
      : { selected: index, state: "error", progress: 0,
          error: `This page was exported without the ${this.values.method} explanation of image ${index}; ` +
                 "export it with Explorer.to_html(path, methods=[...]) to include it." };
    for (const [name, value] of Object.entries(changes)) this.set(name, value);
    const names = [...this.pending];
    this.pending.clear();
    for (const name of names) this.emit(`change:${name}`);
  }
}
