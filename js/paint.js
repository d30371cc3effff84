// Painting the view: the image with its map blended over it, the pair's query, fixation points
// and the pointer, at a size that fits (small inputs scaled up by whole pixels, crisp).
import { channelHeat } from "./channels.js";
import { blend, lut } from "./colormap.js";
import { drawRGB } from "./dom.js";

/** CSS size {width, height, crisp} of an H x W image in a box: whole-pixel upscaling when small. */
export function fitSize(H, W, box = 300) {
  const side = Math.max(H, W, 1);
  let scale = box / side;
  const crisp = scale >= 1.5;
  if (crisp) scale = Math.floor(scale);
  else scale = Math.min(scale, 1.5);
  return { width: Math.round(W * scale), height: Math.round(H * scale), crisp };
}

/** Show a canvas at its fitted size; pixelated when scaled up. */
export function fitCanvas(canvas, H, W, box = 300) {
  const { width, height, crisp } = fitSize(H, W, box);
  if (canvas.dataset.fit === `${H}x${W}x${box}`) return { width, height }; // unchanged
  canvas.dataset.fit = `${H}x${W}x${box}`;
  canvas.style.width = `${width}px`;
  canvas.style.height = "auto";
  canvas.style.aspectRatio = `${W} / ${H}`;
  canvas.style.imageRendering = crisp ? "pixelated" : "auto";
  canvas.dataset.scale = crisp ? "crisp" : "smooth";
  return { width, height };
}

/** The heat on screen: the inspected channel's map, or the method's map. */
export function currentHeat(local) {
  const inspected = local.hover ?? local.pinned;
  if (inspected != null && local.channels) return channelHeat(local.channels, inspected, local.H, local.W);
  return local.heat;
}

/** Paint everything. settings: {alpha, colormap, threshold, side_by_side}. */
export function paintView(ui, local, settings) {
  const { H, W, rgb } = local;
  ui.stage.classList.toggle("fw-side-by-side", !!settings.side_by_side);
  if (ui.root.classList.contains("fw-empty") !== !rgb) ui.root.classList.toggle("fw-empty", !rgb);
  if (!rgb) {
    ui.view.width = 1; ui.view.height = 1;
    delete ui.view.dataset.fit;
    return;
  }
  const table = lut(settings.colormap);
  const pixels = blend(rgb, currentHeat(local), settings.alpha, table, settings.threshold);
  if (ui.view.width !== W || ui.view.height !== H) { ui.view.width = W; ui.view.height = H; }
  fitCanvas(ui.view, H, W);
  const ctx = ui.view.getContext("2d");
  if (!ctx) return; // a DOM without 2-D canvas (tests); nothing to paint
  ctx.putImageData(new ImageData(pixels, W, H), 0, 0);
  if (settings.side_by_side) { drawRGB(ui.side, rgb, H, W); fitCanvas(ui.side, H, W); }
  if (local.pair) {
    const p = local.pair;
    const pairPixels = blend(p.rgb, p.heat, settings.alpha, table, settings.threshold);
    ui.pairView.width = p.w; ui.pairView.height = p.h;
    fitCanvas(ui.pairView, p.h, p.w);
    ui.pairView.getContext("2d").putImageData(new ImageData(pairPixels, p.w, p.h), 0, 0);
  }
  if ((local.hover ?? local.pinned) == null) drawFixations(ctx, local);
  drawPoint(ctx, local);
}

/** CNN Fixations: the backtracked (y, x) points, drawn over the blended view. */
function drawFixations(ctx, local) {
  const pts = local.points;
  if (!pts || !pts.length) return;
  const size = Math.max(1, Math.round(local.W / 112));
  ctx.fillStyle = "rgba(0,0,0,0.65)";
  for (let i = 0; i + 1 < pts.length; i += 2) ctx.fillRect(pts[i + 1] - size, pts[i] - size, 2 * size + 1, 2 * size + 1);
  ctx.fillStyle = "#fff";
  for (let i = 0; i + 1 < pts.length; i += 2) ctx.fillRect(pts[i + 1] - size + 1, pts[i] - size + 1, 2 * size - 1, 2 * size - 1);
}

function drawPoint(ctx, local) {
  if (!local.point) return;
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = Math.max(1, local.W / 100);
  ctx.beginPath();
  ctx.arc(local.point.x + 0.5, local.point.y + 0.5, Math.max(2, local.W / 40), 0, 2 * Math.PI);
  ctx.stroke();
}
