// A few DOM helpers: no framework where a few DOM calls do.

/** Create an element: h("div", {class: "x", dataset: {a: 1}}, child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child != null) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace the options of a <select> and pick `value`. */
export function setOptions(select, values, value) {
  const current = Array.from(select.options).map((o) => o.value).join("\u0000");
  if (current !== values.join("\u0000")) {
    select.replaceChildren(...values.map((v) => h("option", { value: v }, v)));
  }
  if (value != null) select.value = value;
}

/** Put RGB pixels (Uint8Array H*W*3) on a canvas as an opaque image. */
export function drawRGB(canvas, rgb, H, W) {
  canvas.width = W;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  if (!ctx) return; // no 2-D canvas (e.g. a DOM without canvas support)
  const img = ctx.createImageData(W, H);
  for (let i = 0, n = H * W; i < n; i++) {
    img.data[4 * i] = rgb[3 * i];
    img.data[4 * i + 1] = rgb[3 * i + 1];
    img.data[4 * i + 2] = rgb[3 * i + 2];
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

/** Set an element's text only when it differs (an unchanged write would still cost a layout). */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
