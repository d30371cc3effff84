// The explained layer's channels, as sent once per explanation: top channels of the activation
// stack quantised to uint8 with a per-channel (lo, scale), plus the channel ids and weights.
import { toBytes } from "./buffers.js";

/** Decode the channel stack. info = {k, h, w, ids, weights, lo, scale}. */
export function decodeChannels(buffer, info) {
  const bytes = toBytes(buffer);
  const { k = 0, h = 0, w = 0 } = info || {};
  if (!k || bytes.length < k * h * w) return null;
  const maps = new Float32Array(k * h * w);
  for (let c = 0; c < k; c++) {
    const lo = info.lo[c], scale = info.scale[c];
    for (let j = 0; j < h * w; j++) maps[c * h * w + j] = lo + bytes[c * h * w + j] * scale;
  }
  const names = info.names && info.names.length === k ? info.names : info.ids.map((i) => `#${i}`);
  return { k, h, w, ids: info.ids, names, weights: info.weights, maps };
}

/** Bilinear sample (align_corners=false) of channel c at image pixel (py, px) of an H x W image. */
export function sampleAt(ch, c, py, px, H, W) {
  const { h, w, maps } = ch;
  const y = Math.min(Math.max((py + 0.5) * (h / H) - 0.5, 0), h - 1);
  const x = Math.min(Math.max((px + 0.5) * (w / W) - 0.5, 0), w - 1);
  const y0 = Math.floor(y), x0 = Math.floor(x);
  const y1 = Math.min(y0 + 1, h - 1), x1 = Math.min(x0 + 1, w - 1);
  const ty = y - y0, tx = x - x0, base = c * h * w;
  const top = maps[base + y0 * w + x0] * (1 - tx) + maps[base + y0 * w + x1] * tx;
  const bottom = maps[base + y1 * w + x0] * (1 - tx) + maps[base + y1 * w + x1] * tx;
  return top * (1 - ty) + bottom * ty;
}

/**
 * The channels that contribute most at image pixel (py, px): weight x activation, largest first.
 * Returns [{index, channel, weight, activation, contribution}] (at most `limit`).
 */
export function contributionsAt(ch, py, px, H, W, limit = 8) {
  const rows = [];
  for (let c = 0; c < ch.k; c++) {
    const activation = sampleAt(ch, c, py, px, H, W);
    rows.push({ index: c, channel: ch.ids[c], name: ch.names[c], weight: ch.weights[c], activation,
                contribution: ch.weights[c] * activation });
  }
  rows.sort((a, b) => b.contribution - a.contribution);
  return rows.slice(0, limit);
}

/** Channels ranked over the whole image by weight x mean activation (the list before any hover). */
export function overallContributions(ch, limit = 8) {
  const n = ch.h * ch.w, rows = [];
  for (let c = 0; c < ch.k; c++) {
    let sum = 0;
    for (let j = 0; j < n; j++) sum += ch.maps[c * n + j];
    const activation = sum / n;
    rows.push({ index: c, channel: ch.ids[c], name: ch.names[c], weight: ch.weights[c], activation,
                contribution: ch.weights[c] * activation });
  }
  rows.sort((a, b) => b.contribution - a.contribution);
  return rows.slice(0, limit);
}

/** Channel c upsampled to H x W (bilinear) and min-max scaled to 0..255, as a heat Uint8Array. */
export function channelHeat(ch, c, H, W) {
  const values = new Float32Array(H * W);
  let lo = Infinity, hi = -Infinity;
  for (let py = 0; py < H; py++) {
    for (let px = 0; px < W; px++) {
      const v = sampleAt(ch, c, py, px, H, W);
      values[py * W + px] = v;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  const out = new Uint8Array(H * W);
  const span = hi - lo;
  if (span > 1e-12) for (let i = 0; i < H * W; i++) out[i] = Math.round(((values[i] - lo) / span) * 255);
  return out;
}
