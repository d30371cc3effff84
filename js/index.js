// famwidget frontend: gallery, blended view, channel inspection. It only knows the wire format:
// synced traits (image, heatmap, channels, ...) and custom messages (progress, partial maps).
import { toBytes, toUint16 } from "./buffers.js";
import { channelHeat, contributionsAt, decodeChannels, overallContributions } from "./channels.js";
import { blend, COLORMAPS, lut } from "./colormap.js";
import { drawRGB, h, setOptions } from "./dom.js";
import { markSelected, renderGallery } from "./gallery.js";
import css from "./widget.css";

import { StaticModel } from "./standalone.js";

function render({ model, el }) {
  const ui = buildDom(el);
  const local = { rgb: null, heat: null, H: 0, W: 0, channels: null, hover: null, pinned: null,
                  point: null, pair: null, points: null };

  const get = (name, fallback) => model.get(name) ?? fallback;
  const setState = (state) => { ui.root.dataset.state = state; };

  function loadView() {
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
    ui.pairCaption.textContent = local.pair ? local.pair.caption : "";
    if (local.pair) setOptions(ui.pairTarget, local.pair.targets, get("pair_target", "similarity"));
    local.channels = decodeChannels(get("channels", null), get("channel_info", {}));
    local.hover = null;
    local.pinned = null;
    local.point = null;
    delete ui.root.dataset.hoverChannel;
    delete ui.root.dataset.pinnedChannel;
    ui.caption.textContent = view.caption || "";
    listChannels(local.channels ? overallContributions(local.channels) : []);
    paint();
  }

  function currentHeat() {
    const inspected = local.hover ?? local.pinned;
    if (inspected != null && local.channels) return channelHeat(local.channels, inspected, local.H, local.W);
    return local.heat;
  }

  function paint() {
    const { H, W, rgb } = local;
    ui.stage.classList.toggle("fw-side-by-side", !!get("side_by_side", false));
    if (!rgb) {
      ui.view.width = 1; ui.view.height = 1;
      return;
    }
    const table = lut(get("colormap", "jet"));
    const pixels = blend(rgb, currentHeat(), get("alpha", 0.5), table, get("threshold", 0));
    ui.view.width = W; ui.view.height = H;
    fitCanvas(ui.view, H, W);
    const ctx = ui.view.getContext("2d");
    if (!ctx) return; // a DOM without 2-D canvas (tests); nothing to paint
    ctx.putImageData(new ImageData(pixels, W, H), 0, 0);
    if (get("side_by_side", false)) { drawRGB(ui.side, rgb, H, W); fitCanvas(ui.side, H, W); }
    if (local.pair) {
      const p = local.pair;
      const pairPixels = blend(p.rgb, p.heat, get("alpha", 0.5), table, get("threshold", 0));
      ui.pairView.width = p.w; ui.pairView.height = p.h;
      fitCanvas(ui.pairView, p.h, p.w);
      ui.pairView.getContext("2d").putImageData(new ImageData(pairPixels, p.w, p.h), 0, 0);
    }
    if ((local.hover ?? local.pinned) == null) drawFixations();
    drawPoint();
  }

  /** CNN Fixations: the backtracked (y, x) points, drawn over the blended view. */
  function drawFixations() {
    const pts = local.points;
    if (!pts || !pts.length) return;
    const ctx = ui.view.getContext("2d");
    const size = Math.max(1, Math.round(local.W / 112));
    ctx.fillStyle = "rgba(0,0,0,0.65)";
    for (let i = 0; i + 1 < pts.length; i += 2) ctx.fillRect(pts[i + 1] - size, pts[i] - size, 2 * size + 1, 2 * size + 1);
    ctx.fillStyle = "#fff";
    for (let i = 0; i + 1 < pts.length; i += 2) ctx.fillRect(pts[i + 1] - size + 1, pts[i] - size + 1, 2 * size - 1, 2 * size - 1);
  }

  function drawPoint() {
    if (!local.point) return;
    const ctx = ui.view.getContext("2d");
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = Math.max(1, local.W / 100);
    ctx.beginPath();
    ctx.arc(local.point.x + 0.5, local.point.y + 0.5, Math.max(2, local.W / 40), 0, 2 * Math.PI);
    ctx.stroke();
  }

  function listChannels(rows) {
    const top = rows.length ? Math.max(...rows.map((r) => Math.abs(r.contribution)), 1e-12) : 1;
    ui.channels.replaceChildren(...rows.map((r) => {
      const item = h("li", {
        class: "fw-channel", dataset: { channel: r.channel, index: r.index },
        title: `channel ${r.name}: weight ${r.weight.toPrecision(3)} x activation ${r.activation.toPrecision(3)}`,
        onmouseenter: () => inspect(r.index, r.channel),
        onmouseleave: () => inspect(null, null),
        onclick: () => pin(r.index, r.channel),
      },
      h("span", { class: "fw-channel-name" }, r.name),
      h("span", { class: "fw-bar" }, h("span", { class: r.contribution < 0 ? "fw-neg" : "",
        style: { width: `${Math.round((100 * Math.abs(r.contribution)) / top)}%` } })),
      h("span", { class: "fw-channel-value" }, r.contribution.toPrecision(2)));
      if (local.pinned === r.index) item.classList.add("fw-pinned");
      return item;
    }));
    ui.channelsTitle.textContent = local.point ? "channels at the pointer" : "top channels";
  }

  function inspect(index, channel) {
    local.hover = index;
    if (channel == null) delete ui.root.dataset.hoverChannel;
    else ui.root.dataset.hoverChannel = channel;
    paint();
  }

  function pin(index, channel) {
    local.pinned = local.pinned === index ? null : index;
    if (local.pinned == null) delete ui.root.dataset.pinnedChannel;
    else ui.root.dataset.pinnedChannel = channel;
    for (const el of ui.channels.querySelectorAll(".fw-channel")) {
      el.classList.toggle("fw-pinned", Number(el.dataset.index) === local.pinned);
    }
    paint();
  }

  function onPointer(event) {
    if (!local.rgb || !local.channels) return;
    const rect = ui.view.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) / rect.width) * local.W);
    const y = Math.floor(((event.clientY - rect.top) / rect.height) * local.H);
    if (x < 0 || y < 0 || x >= local.W || y >= local.H) return;
    local.point = { x, y };
    listChannels(contributionsAt(local.channels, y, x, local.H, local.W));
    paint();
  }

  function pick(index) {
    markSelected(ui.gallery, index);
    setState("computing");
    setProgress(0);
    model.send({ type: "select", index });
  }

  function setProgress(value) {
    ui.progress.dataset.progress = String(value);
    ui.progressBar.style.width = `${Math.round(100 * value)}%`;
  }

  function onMessage(content, buffers) {
    if (!content || typeof content !== "object") return;
    if (content.type === "state") { syncState(); return; }
    if (content.type === "progress" || content.type === "partial") {
      setProgress(content.progress ?? 0);
      if (content.type === "partial" && buffers && buffers.length) {
        const heat = toBytes(buffers[0]);
        // a partial map belongs to the image on screen only (the kernel labels it)
        const onScreen = content.index === get("view", {}).index && get("state", "") === "computing";
        if (heat.length === local.H * local.W && onScreen) {
          local.heat = heat;
          paint();
        }
      }
    }
  }

  function syncState() {
    setState(get("state", "idle"));
    ui.error.textContent = get("error", "");
    ui.error.hidden = !get("error", "");
    setProgress(get("progress", 0));
  }

  function syncControls() {
    setOptions(ui.method, get("methods", []), get("method", ""));
    setOptions(ui.layer, get("layers", []), get("layer", ""));
    setOptions(ui.colormap, COLORMAPS, get("colormap", "jet"));
    ui.alpha.value = String(get("alpha", 0.5));
    ui.threshold.value = String(get("threshold", 0));
    ui.sideBySide.checked = !!get("side_by_side", false);
  }

  function setTrait(name, value) {
    model.set(name, value);
    model.save_changes();
  }

  // Controls change the view locally; the trait is saved so an exported page keeps the setting.
  ui.alpha.addEventListener("input", () => { setTrait("alpha", Number(ui.alpha.value)); paint(); });
  ui.threshold.addEventListener("input", () => { setTrait("threshold", Number(ui.threshold.value)); paint(); });
  ui.colormap.addEventListener("change", () => { setTrait("colormap", ui.colormap.value); paint(); });
  ui.sideBySide.addEventListener("change", () => { setTrait("side_by_side", ui.sideBySide.checked); paint(); });
  // a new method or layer re-explains the chosen image, if there is one
  const choose = (name, value) => {
    if (get("selected", -1) >= 0) setState("computing");
    setTrait(name, value);
  };
  ui.method.addEventListener("change", () => choose("method", ui.method.value));
  ui.layer.addEventListener("change", () => choose("layer", ui.layer.value));
  ui.pairTarget.addEventListener("change", () => choose("pair_target", ui.pairTarget.value));
  ui.view.addEventListener("mousemove", onPointer);

  const drawGallery = () => {
    renderGallery(ui.gallery, get("thumbs", null), get("gallery", {}), pick);
    markSelected(ui.gallery, get("selected", -1));
  };
  const handlers = [
    ["change:thumbs change:gallery", drawGallery],
    ["change:selected", () => markSelected(ui.gallery, get("selected", -1))],
    ["change:image change:heatmap change:view change:channels change:channel_info change:points change:pair change:pair_image change:pair_heatmap", loadView],
    ["change:state change:error change:progress", syncState],
    ["change:methods change:method change:layers change:layer", syncControls],
    ["change:alpha change:colormap change:threshold change:side_by_side", () => { syncControls(); paint(); }],
    ["msg:custom", onMessage],
  ];
  // anywidget's model interface takes one event name per call (space-separated names are
  // Backbone's, and hosts such as marimo are not Backbone)
  const bindings = handlers.flatMap(([events, fn]) => events.split(" ").map((e) => [e, fn]));
  for (const [event, fn] of bindings) model.on(event, fn);

  ui.root.append(ui.style);
  el.replaceChildren(ui.root);
  syncControls();
  drawGallery();
  loadView();
  syncState();
  return () => { for (const [event, fn] of bindings) model.off(event, fn); };
}

/** Show a canvas at a readable size: its longer side `box` CSS pixels, aspect kept. */
function fitCanvas(canvas, H, W, box = 300) {
  const scale = box / Math.max(H, W, 1);
  canvas.style.width = `${Math.round(W * scale)}px`;
  canvas.style.height = `${Math.round(H * scale)}px`;
}

/** The other image of a pair (ReIDExplorer: the query), or null. */
function decodePair(info, image, heatmap) {
  const { h = 0, w = 0 } = info || {};
  const rgb = toBytes(image), heat = toBytes(heatmap);
  if (!h || rgb.length !== h * w * 3) return null;
  return { h, w, rgb, heat: heat.length === h * w ? heat : null, caption: info.caption || "",
           targets: info.targets || [] };
}

function buildDom() {
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
  const view = h("canvas", { class: "fw-view" });
  const side = h("canvas", { class: "fw-side" });
  const progressBar = h("span", { class: "fw-progress-bar" });
  const progress = h("div", { class: "fw-progress", dataset: { progress: 0 } }, progressBar);
  const caption = h("div", { class: "fw-caption" });
  const channelsTitle = h("div", { class: "fw-channels-title" }, "top channels");
  const channels = h("ol", { class: "fw-channels" });
  const error = h("div", { class: "fw-error", role: "alert" });
  const gallery = h("div", { class: "fw-gallery" });
  const pairView = h("canvas", { class: "fw-pair" });
  const pairCaption = h("div", { class: "fw-pair-caption" });
  const stage = h("div", { class: "fw-stage" },
    h("div", { class: "fw-figure fw-pair-only" }, pairView, pairCaption), side, view);
  const root = h(
    "div", { class: "famwidget", dataset: { state: "idle" } },
    h("div", { class: "fw-toolbar" }, methodLabel, layerLabel, pairTargetLabel, colormapLabel,
      h("label", { class: "fw-control" }, h("span", {}, "blend"), alpha),
      h("label", { class: "fw-control" }, h("span", {}, "threshold"), threshold),
      h("label", { class: "fw-control" }, sideBySide, h("span", {}, "side by side"))),
    h("div", { class: "fw-main" },
      h("div", { class: "fw-left" }, stage, progress, caption),
      h("div", { class: "fw-right" }, channelsTitle, channels)),
    error,
    gallery,
  );
  const style = h("style", {}, css);
  return { root, style, method, layer, colormap, pairTarget, pairView, pairCaption, alpha, threshold, sideBySide, view, side, stage,
           progress, progressBar, caption, channelsTitle, channels, error, gallery };
}

/** Render the widget from a page's embedded payload, with no kernel (Explorer.to_html). */
export function mountStandalone(el, payload) {
  return render({ model: new StaticModel(payload), el });
}

export default { render };
