// famwidget frontend: gallery, blended view, channel inspection. It only knows the wire format:
// synced traits (js/traits.js) and custom messages (progress, partial maps, state). It uses only
// anywidget's documented model interface, so every host works (JupyterLab, Notebook 7, marimo,
// Colab, VS Code, the offline page).
import { toBytes, toUint16 } from "./buffers.js";
import { describeView, methodName, targetWords } from "./caption.js";
import { decodeChannels } from "./channels.js";
import { lut } from "./colormap.js";
import { buildControls, syncControls } from "./controls.js";
import { h, setOptions, setText } from "./dom.js";
import { saveView } from "./download.js";
import { buildCompare, comparePanel } from "./compare.js";
import { buildGalleryTools, galleryPanel, markSelected } from "./gallery.js";
import { followHost } from "./host.js";
import { inspector } from "./inspect.js";
import { mapPanel } from "./map.js";
import { buildLegend, legendScale, paintLegend } from "./legend.js";
import { fitSize, paintView } from "./paint.js";
import { bind, localState, reader, writer } from "./state.js";
import { VIEW_TRAITS } from "./traits.js";
import { buildWork, clickIds, showError, showProgress } from "./work.js";
import css from "./widget.css";

import { StaticModel } from "./standalone.js";

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

/** anywidget's render: {model, el} (other fields, e.g. a host's own objects, are ignored). */
function render({ model, el }) {
  return mount(model, el, undefined);
}

/** The widget on `el` for `model`; hostHint names the host when the caller knows it; nonce
 * marks its <style> as the page's own (an exported page's Content-Security-Policy). */
function mount(model, el, hostHint, nonce) {
  const ui = buildDom();
  const local = localState();
  const get = reader(model);
  const setTrait = writer(model);
  const clicks = clickIds(); // a view made before this page's newest click is not shown
  const stale = () => clicks.stale(get("view", {}));
  const setState = (state) => { ui.root.dataset.state = state; updateCaption(); };
  const inspection = inspector(ui, local, () => paint());
  const settings = () => ({ alpha: get("alpha", 0.5), colormap: get("colormap", "jet"),
                            threshold: get("threshold", 0), side_by_side: get("side_by_side", false) });

  function loadView() {
    if (stale()) return; // the kernel has not seen the newest click yet: keep what is on screen
    const view = get("view", {});
    local.H = view.h || 0;
    local.W = view.w || 0;
    const rgb = toBytes(get("image", null));
    local.rgb = rgb.length === local.H * local.W * 3 && rgb.length ? rgb : null;
    const heat = toBytes(get("heatmap", null));
    local.heat = heat.length === local.H * local.W && heat.length ? heat : null;
    local.points = toUint16(get("points", null));
    local.pair = decodePair(get("pair", {}), get("pair_image", null), get("pair_heatmap", null));
    ui.root.classList.toggle("fw-has-pair", !!local.pair);
    ui.pairCaption.textContent = local.pair ? pairCaption(local.pair) : "";
    ui.viewLabel.textContent = local.pair ? labelOf(view) : "";
    if (local.pair) setOptions(ui.pairTarget, local.pair.targets, get("pair_target", "similarity"));
    local.channels = decodeChannels(get("channels", null), get("channel_info", {}));
    sizeStage();
    inspection.reset();
    paint();
  }

  /** The stage keeps the fitted height of the images, so nothing moves as views change. */
  function sizeStage() {
    const view = get("view", {});
    const info = get("gallery", {});
    const [H, W] = view.h ? [view.h, view.w] : info.image || [info.h || 0, info.w || 0];
    if (H && W) ui.stage.style.minHeight = `${fitSize(H, W).height}px`;
    ui.hint.style.width = H && W ? `${fitSize(H, W).width}px` : "";
  }

  const labelOf = (view) => view.label ?? (get("gallery", {}).captions || [])[view.index] ?? `#${view.index}`;

  const inspectedChannel = () => inspection.inspected(get("channel_info", {}));

  function updateCaption() {
    const view = get("view", {});
    const [first, second] = describeView(view, labelOf(view), inspectedChannel(), ui.root.dataset.state);
    setText(ui.captionMain, first);
    setText(ui.captionSub, second);
    const title = [first, second].filter(Boolean).join("\n");
    if (ui.caption.title !== title) ui.caption.title = title;
  }

  function paint() {
    paintView(ui, local, settings());
    const channel = inspectedChannel();
    const scale = legendScale({ kind: !local.rgb || (!local.heat && !channel) ? "none" : channel ? "channel" : "map",
      method: methodName(get("view", {}).method), channel, threshold: get("threshold", 0) });
    paintLegend(ui.legend, scale, lut(get("colormap", "jet")));
    updateCaption();
  }

  function startWork() {
    local.started = now();
    setState("computing");
    setProgress(0);
  }

  function pick(index) {
    const view = get("view", {});
    const shown = !stale() && get("state", "") === "ready" && get("selected", -1) === index && view.index === index && !!local.rgb &&
      view.anchor == null; // a map pair on screen is not image `index` alone
    markSelected(ui.gallery, index);
    if (shown) { syncState(); return; } // already on screen: nothing to ask, nothing to wait for
    startWork();
    model.send({ type: "select", index, request: clicks.next() });
  }

  const setProgress = (value) => showProgress(ui, value, ui.root.dataset.state, local.started, now());

  function onMessage(content, buffers) {
    if (!content || typeof content !== "object") return;
    if (content.type === "state") { syncState(); return; }
    if (gallery.onMessage(content, buffers) || compare.onMessage(content, buffers)) return;
    if (content.type === "progress" || content.type === "partial") {
      setProgress(content.progress ?? 0);
      if (content.type === "partial" && buffers && buffers.length) {
        const heat = toBytes(buffers[0]);
        // a partial map belongs to the image on screen only (the kernel labels it)
        const onScreen = content.index === get("view", {}).index && get("state", "") === "computing" && !stale();
        if (heat.length === local.H * local.W && onScreen) {
          local.heat = heat;
          paint();
        }
      }
    }
  }

  function syncState() {
    if (stale()) { setState("computing"); return; } // an older click's state, error or progress
    setState(get("state", "idle"));
    compare.onState(get("state", "idle"), get("selected", -1));
    showError(ui, get("error", ""), get("traceback", ""));
    setProgress(get("progress", 0));
  }

  // Controls change the view locally; the trait is saved so an exported page keeps the setting.
  ui.alpha.addEventListener("input", () => { setTrait("alpha", Number(ui.alpha.value)); paint(); compare.paint(); });
  ui.threshold.addEventListener("input", () => { setTrait("threshold", Number(ui.threshold.value)); paint(); });
  ui.colormap.addEventListener("change", () => { setTrait("colormap", ui.colormap.value); paint(); compare.paint(); });
  ui.sideBySide.addEventListener("change", () => { setTrait("side_by_side", ui.sideBySide.checked); paint(); });
  // a new method or layer re-explains the chosen image; the same value again changes nothing
  const choose = (name, value) => {
    if (value === get(name, "")) { syncControls(ui, get); syncState(); return; }
    if (get("selected", -1) >= 0) startWork();
    setTrait(name, value);
  };
  ui.method.addEventListener("change", () => choose("method", ui.method.value));
  ui.layer.addEventListener("change", () => choose("layer", ui.layer.value));
  ui.pairTarget.addEventListener("change", () => choose("pair_target", ui.pairTarget.value));
  ui.cancel.addEventListener("click", () => {
    model.send({ type: "cancel" });
    ui.status.textContent = "cancelling …";
  });
  ui.download.addEventListener("click", () => saveView(ui, get("view", {})));
  const send = (content) => model.send(content);
  const gallery = galleryPanel(ui, get, pick, send);
  const drawGallery = gallery.draw;
  const compare = comparePanel(ui, get, send);

  const pair = (index, other) => { startWork(); model.send({ type: "pair", index, other }); };
  const map = mapPanel({ get, setTrait, pick, pair, gallery: ui.gallery }); // the embedding map
  ui.root.append(map.el); // hidden while map_info is empty

  const unbind = bind(model, [
    [["thumbs", "gallery"], drawGallery],
    [["selected"], () => { if (!stale()) markSelected(ui.gallery, get("selected", -1)); }],
    [VIEW_TRAITS, loadView],
    [["state", "error", "traceback", "progress"], syncState],
    [["methods", "method_notes", "method", "layers", "layer"], () => syncControls(ui, get)],
    [["alpha", "colormap", "threshold", "side_by_side"], () => { syncControls(ui, get); paint(); compare.paint(); }],
    ["msg:custom", onMessage],
    ...map.handlers,
  ]);

  ui.root.append(h("style", { nonce: nonce || undefined }, css));
  el.replaceChildren(ui.root);
  const stopHost = followHost(ui.root, el, hostHint);
  syncControls(ui, get);
  drawGallery();
  loadView();
  syncState();
  map.start();
  return () => { unbind(); stopHost(); };
}

/** The other image of a pair (ReIDExplorer: the query), or null. */
function decodePair(info, image, heatmap) {
  const { h: ph = 0, w: pw = 0 } = info || {};
  const rgb = toBytes(image), heat = toBytes(heatmap);
  if (!ph || rgb.length !== ph * pw * 3) return null;
  return { ...info, h: ph, w: pw, rgb, heat: heat.length === ph * pw ? heat : null,
           caption: info.caption || "", targets: info.targets || [] };
}

/** "query · explains cosine similarity to the result 3 = 0.871" (or the kernel's caption). */
function pairCaption(pair) {
  const target = pair.target ? targetWords(pair.target, pair.score) : "";
  return target ? `${pair.label || "query"} · ${methodName(pair.method)} map · explains ${target}` : pair.caption;
}

function buildDom() {
  const controls = buildControls();
  const work = buildWork();
  const legend = buildLegend();
  const gtools = buildGalleryTools();
  const compare = buildCompare();
  const view = h("canvas", { class: "fw-view" });
  const side = h("canvas", { class: "fw-side" });
  const hint = h("div", { class: "fw-hint" }, "Click a thumbnail below to explain it.");
  const captionMain = h("div", { class: "fw-caption-main" });
  const captionSub = h("div", { class: "fw-caption-sub" });
  const caption = h("div", { class: "fw-caption" }, captionMain, captionSub);
  const channelsTitle = h("div", { class: "fw-channels-title" }, "top channels");
  const channelsUnit = h("div", { class: "fw-channels-unit" });
  const channels = h("ol", { class: "fw-channels" });
  const gallery = h("div", { class: "fw-gallery", tabindex: 0, role: "group", "aria-label": "images to explain",
                             dataset: { count: 0 } });
  const pairView = h("canvas", { class: "fw-pair" });
  const pairCaption = h("div", { class: "fw-pair-caption" });
  const pairLabel = h("div", { class: "fw-figure-label" }, "query");
  const viewLabel = h("div", { class: "fw-figure-label fw-pair-only" });
  const stage = h("div", { class: "fw-stage" },
    h("div", { class: "fw-figure fw-pair-only fw-pair-figure" }, pairLabel, pairView, pairCaption), side,
    h("div", { class: "fw-figure fw-view-figure" }, viewLabel, view, hint));
  const root = h(
    "div", { class: "famwidget", dataset: { state: "idle", theme: "light", host: "unknown" } },
    controls.toolbar, controls.methodNotes,
    h("div", { class: "fw-main" },
      h("div", { class: "fw-left" }, stage, work.progress, legend.el),
      h("div", { class: "fw-right" }, channelsTitle, channelsUnit, channels)),
    caption, work.statusRow, work.error, compare.panel, gtools.tools, gallery,
  );
  return { root, ...controls, ...work, ...compare, legend, sort: gtools.sort, filter: gtools.filter,
           galleryCount: gtools.count, view, side, hint, stage, caption, captionMain, captionSub,
           channelsTitle, channelsUnit, channels, gallery, pairView, pairCaption, viewLabel };
}

/** Render the widget from a page's embedded payload, with no kernel (Explorer.to_html). */
export function mountStandalone(el, payload) {
  return mount(new StaticModel(payload), el, "standalone", payload.nonce);
}

export { shortNumber } from "./inspect.js";

export default { render };
