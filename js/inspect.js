// Hover-to-inspect: the channels behind the map (weight x activation), at the pointer or over
// the whole image; hovering a channel shows its own map, a click pins it.
import { contributionsAt, overallContributions } from "./channels.js";
import { h } from "./dom.js";

/** A number in at most 7 characters: 0.050, 8.4, 9.8e-6. */
export function shortNumber(v) {
  if (v === 0 || !Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(1).replace("e+", "e") : v.toPrecision(2);
}

/**
 * The channel list of one view. ui: {root, view, channels, channelsTitle, channelsUnit};
 * local: the browser state (channels, hover, pinned, point, H, W, rgb); repaint(): redraw.
 */
export function inspector(ui, local, repaint) {
  function list(rows) {
    const top = rows.length ? Math.max(...rows.map((r) => Math.abs(r.contribution)), 1e-12) : 1;
    ui.channels.replaceChildren(...rows.map((r) => {
      const item = h("li", {
        class: "fw-channel", dataset: { channel: r.channel, index: r.index },
        title: `channel ${r.name}: weight ${r.weight.toPrecision(3)} x activation ${r.activation.toPrecision(3)}` +
               ` = ${r.contribution.toPrecision(3)}`,
        onmouseenter: () => inspect(r.index, r.channel),
        onmouseleave: () => inspect(null, null),
        onclick: () => pin(r.index, r.channel),
      },
      h("span", { class: "fw-channel-name" }, r.name),
      h("span", { class: "fw-bar" }, h("span", { class: r.contribution < 0 ? "fw-neg" : "",
        style: { width: `${Math.round((100 * Math.abs(r.contribution)) / top)}%` } })),
      h("span", { class: "fw-channel-value" }, shortNumber(r.contribution)));
      if (local.pinned === r.index) item.classList.add("fw-pinned");
      return item;
    }));
    ui.channelsTitle.textContent = local.point ? "channels at the pointer" : "top channels";
    ui.channelsUnit.textContent = rows.length
      ? `value = weight x activation${local.point ? " here" : " (mean over the image)"}`
      : local.rgb ? "this method has no channel weights" : "";
  }

  function inspect(index, channel) {
    local.hover = index;
    if (channel == null) delete ui.root.dataset.hoverChannel;
    else ui.root.dataset.hoverChannel = channel;
    repaint();
  }

  function pin(index, channel) {
    local.pinned = local.pinned === index ? null : index;
    if (local.pinned == null) delete ui.root.dataset.pinnedChannel;
    else ui.root.dataset.pinnedChannel = channel;
    for (const item of ui.channels.querySelectorAll(".fw-channel")) {
      item.classList.toggle("fw-pinned", Number(item.dataset.index) === local.pinned);
    }
    repaint();
  }

  /** A new view: nothing hovered or pinned; the list ranks the whole image. */
  function reset() {
    local.hover = null;
    local.pinned = null;
    local.point = null;
    delete ui.root.dataset.hoverChannel;
    delete ui.root.dataset.pinnedChannel;
    list(local.channels ? overallContributions(local.channels) : []);
  }

  function onPointer(event) {
    if (!local.rgb || !local.channels) return;
    const rect = ui.view.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) / rect.width) * local.W);
    const y = Math.floor(((event.clientY - rect.top) / rect.height) * local.H);
    if (x < 0 || y < 0 || x >= local.W || y >= local.H) return;
    local.point = { x, y };
    list(contributionsAt(local.channels, y, x, local.H, local.W));
    repaint();
  }

  /** The channel shown instead of the method's map ({name, weight, lo, hi}), or null. */
  function inspected(info) {
    const c = local.hover ?? local.pinned;
    if (c == null || !local.channels) return null;
    const lo = info.lo?.[c] ?? 0;
    return { name: local.channels.names[c], weight: local.channels.weights[c], lo, hi: lo + 255 * (info.scale?.[c] ?? 0) };
  }

  ui.view.addEventListener("mousemove", onPointer);
  return { reset, inspected };
}
