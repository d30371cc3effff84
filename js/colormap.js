// Colormaps and the blending of a heatmap over an image, all in the browser.
import { STOPS } from "./colormap_stops.js";

export const COLORMAPS = Object.keys(STOPS);
const cache = new Map();

/** A 256-entry RGB lookup table (Uint8Array of 768) for a colormap name. */
export function lut(name) {
  if (!(name in STOPS)) throw new Error(`famwidget: unknown colormap ${name}; known: ${COLORMAPS.join(", ")}`);
  if (cache.has(name)) return cache.get(name);
  const stops = STOPS[name];
  const n = stops.length / 3;
  const table = new Uint8Array(768);
  for (let i = 0; i < 256; i++) {
    const pos = (i / 255) * (n - 1);
    const lo = Math.min(Math.floor(pos), n - 2);
    const t = pos - lo;
    for (let c = 0; c < 3; c++) {
      table[3 * i + c] = Math.round(stops[3 * lo + c] * (1 - t) + stops[3 * (lo + 1) + c] * t);
    }
  }
  cache.set(name, table);
  return table;
}

/**
 * Blend a heatmap over an image into RGBA pixels.
 * rgb: Uint8Array H*W*3; heat: Uint8Array H*W (0..255) or null; alpha in [0,1]:
 * 0 = image only, 1 = colour-mapped heatmap only; pixels with heat below threshold*255 show the
 * image alone. Returns a Uint8ClampedArray H*W*4 (opaque).
 */
export function blend(rgb, heat, alpha, table, threshold = 0, out = null) {
  const n = rgb.length / 3;
  const pixels = out ?? new Uint8ClampedArray(n * 4);
  const a = Math.min(1, Math.max(0, alpha));
  const cut = threshold * 255;
  for (let i = 0; i < n; i++) {
    const r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
    if (!heat || heat[i] < cut) {
      pixels[4 * i] = r; pixels[4 * i + 1] = g; pixels[4 * i + 2] = b;
    } else {
      const v = 3 * heat[i];
      pixels[4 * i] = r + a * (table[v] - r);
      pixels[4 * i + 1] = g + a * (table[v + 1] - g);
      pixels[4 * i + 2] = b + a * (table[v + 2] - b);
    }
    pixels[4 * i + 3] = 255;
  }
  return pixels;
}
