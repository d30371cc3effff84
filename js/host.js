// Which anywidget host the widget runs in, and whether its page is light or dark.

/** "standalone" (when told), "marimo", "notebook" (Notebook 7), "jupyterlab" or "unknown". */
export function detectHost(el, hint) {
  if (hint) return hint;
  const doc = el.ownerDocument || document;
  const win = doc.defaultView || {};
  if (win.__MARIMO_MOUNT_CONFIG__ !== undefined || insideTag(el, /^MARIMO-/)) return "marimo";
  if (doc.body?.dataset?.notebook !== undefined) return "notebook";
  if (doc.querySelector(".jp-LabShell")) return "jupyterlab";
  if (doc.querySelector(".jp-NotebookShell, #main-panel.jp-NotebookPanel")) return "notebook";
  return "unknown";
}

/** Is el inside an element whose tag matches (across shadow roots)? */
function insideTag(el, pattern) {
  for (let node = el; node; node = node.parentNode || node.host) {
    if (node.tagName && pattern.test(node.tagName)) return true;
  }
  return false;
}

/** "dark" or "light": JupyterLab's own flag when present, else the background's luminance. */
export function detectTheme(el) {
  const doc = el.ownerDocument || document;
  const flag = doc.body?.dataset?.jpThemeLight;
  if (flag === "false") return "dark";
  if (flag === "true") return "light";
  const rgb = backgroundOf(el);
  return rgb && luminance(rgb) < 0.4 ? "dark" : "light";
}

/** The first opaque background colour from el's parent upwards ([r, g, b] 0..255) or null. */
export function backgroundOf(el) {
  const view = (el.ownerDocument || document).defaultView;
  for (let node = el.parentNode || el.host; node; node = node.parentNode || node.host) {
    if (node.nodeType !== 1) continue;
    const rgba = parseColor(view.getComputedStyle(node).backgroundColor);
    if (rgba && rgba[3] > 0.5) return rgba.slice(0, 3);
  }
  return null;
}

export function parseColor(text) {
  const m = /rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)(?:\s*[,/]\s*([\d.]+%?))?\s*\)/.exec(text || "");
  if (!m) return null;
  const a = m[4] === undefined ? 1 : m[4].endsWith("%") ? parseFloat(m[4]) / 100 : Number(m[4]);
  return [Number(m[1]), Number(m[2]), Number(m[3]), a];
}

/** Relative luminance (WCAG) of an sRGB colour [r, g, b] in 0..255, in 0..1. */
export function luminance([r, g, b]) {
  const lin = (c) => { const v = c / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

/** Set root's data-host and data-theme, and follow theme switches; returns the stop function. */
export function followHost(root, el, hint) {
  root.dataset.host = detectHost(el, hint);
  const update = () => { root.dataset.theme = detectTheme(el); };
  update();
  const doc = el.ownerDocument || document;
  const win = doc.defaultView;
  if (!win || !win.MutationObserver) return () => {};
  const observer = new win.MutationObserver(update);
  const options = { attributes: true, attributeFilter: ["class", "style", "data-theme", "data-jp-theme-light", "data-jp-theme-name"] };
  for (const node of [doc.documentElement, doc.body]) if (node) observer.observe(node, options);
  // the first luminance read may come before the host has styled the output: read again soon
  const again = win.setTimeout(update, 300);
  return () => { observer.disconnect(); win.clearTimeout(again); };
}
