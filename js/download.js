// A PNG of the current view, made in the browser: the canvases on screen, the colour bar and
// the caption, drawn at their on-screen size into one picture.

/** Compose canvases side by side with the legend bar and caption lines under them. */
export function composeView(doc, canvases, legendBar, lines, colors = { fg: "#000", bg: "#fff" }) {
  const shown = canvases.filter((c) => c && c.width > 1 && c.offsetParent !== null);
  const sizes = shown.map((c) => {
    const r = c.getBoundingClientRect();
    return { w: Math.max(1, Math.round(r.width || c.width)), h: Math.max(1, Math.round(r.height || c.height)) };
  });
  const gap = 6, lineH = 16, font = "13px sans-serif";
  const out = doc.createElement("canvas");
  let ctx = out.getContext("2d");
  if (!ctx) return null;
  ctx.font = font;
  const text = Math.max(0, ...lines.filter(Boolean).map((line) => Math.ceil(ctx.measureText(line).width)));
  const width = Math.max(256, text + gap, sizes.reduce((s, z) => s + z.w + gap, -gap));
  const top = Math.max(1, ...sizes.map((z) => z.h));
  out.width = width; // resizing resets the context
  out.height = top + gap + 12 + gap + lineH * lines.filter(Boolean).length + gap;
  ctx = out.getContext("2d");
  ctx.fillStyle = colors.bg;
  ctx.fillRect(0, 0, out.width, out.height);
  let x = 0;
  shown.forEach((c, i) => {
    ctx.imageSmoothingEnabled = c.style.imageRendering !== "pixelated";
    ctx.drawImage(c, x, 0, sizes[i].w, sizes[i].h);
    x += sizes[i].w + gap;
  });
  ctx.imageSmoothingEnabled = true;
  if (legendBar) ctx.drawImage(legendBar, 0, top + gap, Math.min(256, width), 12);
  ctx.fillStyle = colors.fg;
  ctx.font = font;
  lines.filter(Boolean).forEach((line, i) => ctx.fillText(line, 0, top + 2 * gap + 12 + lineH * (i + 1) - 4));
  return out;
}

/** Save a canvas as a PNG file through a temporary link (canvas.toBlob). */
export function downloadCanvas(canvas, name) {
  return new Promise((resolve, reject) => {
    if (!canvas || !canvas.toBlob) { reject(new Error("famwidget: this browser cannot make a PNG of a canvas")); return; }
    canvas.toBlob((blob) => {
      if (!blob) { reject(new Error("famwidget: the PNG could not be made")); return; }
      const url = URL.createObjectURL(blob);
      const a = canvas.ownerDocument.createElement("a");
      a.href = url;
      a.download = name;
      a.style.display = "none";
      canvas.ownerDocument.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      resolve(blob);
    }, "image/png");
  });
}

/** The PNG button: the view as on screen (query, side image, view, colour bar, caption). */
export function saveView(ui, view) {
  const doc = ui.root.ownerDocument;
  const style = doc.defaultView.getComputedStyle(ui.root);
  const png = composeView(doc, [ui.pairView, ui.side, ui.view], ui.legend.bar,
    [ui.captionMain.textContent, ui.captionSub.textContent, ui.legend.text.textContent],
    { fg: style.color || "#000", bg: style.backgroundColor || "#fff" });
  const name = `famwidget-${view.method || "view"}-${view.index ?? "none"}.png`;
  return downloadCanvas(png, name).then(() => { ui.root.dataset.download = name; },
    (error) => { ui.status.textContent = error.message; });
}
