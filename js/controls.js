// The toolbar: method, layer, pair target, colormap, blend, threshold, side by side, compare,
// download.
import { COLORMAPS } from "./colormap.js";
import { h, setOptions } from "./dom.js";

export function buildControls() {
  const select = (cls, label) => {
    const s = h("select", { class: cls, "aria-label": label });
    return [s, h("label", { class: "fw-control" }, h("span", {}, label), s)];
  };
  const [method, methodLabel] = select("fw-method", "method");
  const [layer, layerLabel] = select("fw-layer", "layer");
  const [colormap, colormapLabel] = select("fw-colormap", "colormap");
  const [pairTarget, pairTargetLabel] = select("fw-pair-target", "pair shows");
  pairTargetLabel.classList.add("fw-pair-only");
  const alpha = h("input", { class: "fw-alpha", type: "range", min: 0, max: 1, step: 0.01, "aria-label": "blend" });
  const threshold = h("input", { class: "fw-threshold", type: "range", min: 0, max: 1, step: 0.01,
                                 "aria-label": "threshold" });
  const sideBySide = h("input", { class: "fw-side-toggle", type: "checkbox" });
  const download = h("button", { class: "fw-download", type: "button", title: "save the view as a PNG" }, "PNG");
  const compareToggle = h("button", { class: "fw-compare-toggle", type: "button", "aria-pressed": "false",
                                      title: "every method on the selected image, side by side" }, "Compare");
  const methodNotes = h("div", { class: "fw-method-notes" });
  const toolbar = h("div", { class: "fw-toolbar" }, methodLabel, layerLabel, pairTargetLabel, colormapLabel,
    h("label", { class: "fw-control" }, h("span", {}, "blend"), alpha),
    h("label", { class: "fw-control" }, h("span", {}, "threshold"), threshold),
    h("label", { class: "fw-control" }, sideBySide, h("span", {}, "side by side")),
    compareToggle, download);
  return { toolbar, method, layer, colormap, pairTarget, alpha, threshold, sideBySide, compareToggle, download,
           methodNotes };
}

/**
 * The method picker: the offered methods, then each one that is not offered as a disabled
 * option whose tooltip says why (notes: {method: reason}); the reasons also show as a caption.
 */
export function setMethodOptions(select, methods, notes, value, caption) {
  const missing = Object.entries(notes || {}).filter(([m]) => !methods.includes(m));
  const key = [...methods, "|", ...missing.map(([m, why]) => `${m}:${why}`)].join("\u0000");
  if (select.dataset.key !== key) {
    setOptions(select, methods, null);
    for (const [m, why] of missing) {
      select.append(h("option", { value: m, disabled: true, title: why, class: "fw-not-offered" }, `${m} (n/a)`));
    }
    select.dataset.key = key;
    select.title = missing.length ? missing.map(([m, why]) => `${m}: ${why}`).join("\n") : "";
  }
  if (value != null) select.value = value;
  if (caption) {
    caption.textContent = missing.length ? `not offered here: ${missing.map(([m]) => m).join(", ")} (why: hover)` : "";
    caption.title = select.title;
    caption.hidden = !missing.length;
  }
}

/** Put every control at its trait's value. get(name, fallback) reads a trait. */
export function syncControls(ui, get) {
  setMethodOptions(ui.method, get("methods", []), get("method_notes", {}), get("method", ""), ui.methodNotes);
  setOptions(ui.layer, get("layers", []), get("layer", ""));
  setOptions(ui.colormap, COLORMAPS, get("colormap", "jet"));
  ui.alpha.value = String(get("alpha", 0.5));
  ui.threshold.value = String(get("threshold", 0));
  ui.sideBySide.checked = !!get("side_by_side", false);
}
