// The colour bar: which colour means what, on which scale, relative to what.
import { h, setText } from "./dom.js";

/** Build the legend element; update(...) repaints it. */
export function buildLegend() {
  const bar = h("canvas", { class: "fw-legend-bar", width: 256, height: 1, "aria-hidden": "true" });
  const lo = h("span", { class: "fw-legend-lo" });
  const mid = h("span", { class: "fw-legend-mid" });
  const hi = h("span", { class: "fw-legend-hi" });
  const text = h("div", { class: "fw-legend-text" });
  const el = h("div", { class: "fw-legend", role: "img" }, bar,
    h("div", { class: "fw-legend-ticks" }, lo, mid, hi), text);
  return { el, bar, lo, mid, hi, text };
}

const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : v.toPrecision(2));

/**
 * What the colours mean now. kind: "map" (the method's per-image normalised map), "channel"
 * (an inspected channel, raw activation range lo..hi) or "none" (nothing explained yet).
 * Returns {kind, lo, hi, text}.
 */
export function legendScale({ kind, method = "", channel = null, threshold = 0 }) {
  if (kind === "channel" && channel) {
    return { kind, lo: channel.lo, hi: channel.hi,
             text: `channel ${channel.name}: its activation, raw range in this image` };
  }
  if (kind === "map") {
    const cut = threshold > 0 ? `; below ${threshold.toFixed(2)} not drawn` : "";
    return { kind, lo: 0, hi: 1,
             text: `${method} map, per-image normalised 0-1 (1 = strongest in this image)${cut}` };
  }
  return { kind: "none", lo: 0, hi: 1, text: "colour scale: shown once an image is explained" };
}

/** Paint the legend for a scale and a colour table (256 RGB entries). */
export function paintLegend(legend, scale, table) {
  const key = `${scale.kind}|${scale.lo}|${scale.hi}|${scale.text}`;
  if (legend.key === key && legend.table === table) return; // unchanged: no DOM writes
  legend.key = key;
  legend.el.dataset.kind = scale.kind;
  setText(legend.lo, fmt(scale.lo));
  setText(legend.mid, fmt((scale.lo + scale.hi) / 2));
  setText(legend.hi, fmt(scale.hi));
  setText(legend.text, scale.text);
  legend.el.setAttribute("aria-label", `colour scale ${fmt(scale.lo)} to ${fmt(scale.hi)}: ${scale.text}`);
  if (legend.table === table) return;
  const ctx = legend.bar.getContext("2d");
  if (!ctx) return; // no 2-D canvas (tests)
  legend.table = table;
  const img = ctx.createImageData(256, 1);
  for (let i = 0; i < 256; i++) {
    img.data[4 * i] = table[3 * i]; img.data[4 * i + 1] = table[3 * i + 1];
    img.data[4 * i + 2] = table[3 * i + 2]; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
