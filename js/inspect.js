// Hover-to-inspect: the channels behind the map (weight x activation), at the pointer or over
// the whole image; hovering a channel shows its own map, a click pins it.
import { contributionsAt, overallContributions } from "./channels.js";
import { h, setText } from "./dom.js";

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
  /** One row element, its listeners reading the row it shows now (rows are reused). */
  function row() {
    const item = h("li", { class: "fw-channel" },
      h("span", { class: "fw-channel-name" }), h("span", { class: "fw-bar" }, h("span")),
      h("span", { class: "fw-channel-value" }));
    const at = () => [Number(item.dataset.index), item.dataset.channel];
    item.addEventListener("mouseenter", () => inspect(...at()));
    item.addEventListener("mouseleave", () => inspect(null, null));
    item.addEventListener("click", () => pin(...at()));
    return item;
  }

  function list(rows) {
    const top = rows.length ? Math.max(...rows.map((r) => Math.abs(r.contribution)), 1e-12) : 1;
    while (ui.channels.children.length > rows.length) ui.channels.lastChild.remove();
    while (ui.channels.children.length < rows.length) ui.channels.append(row());
    rows.forEach((r, i) => {
      const item = ui.channels.children[i];
      item.dataset.channel = String(r.channel);
      item.dataset.index = String(r.index);
      item.title = `channel ${r.name}: weight ${r.weight.toPrecision(3)} x activation ${r.activation.toPrecision(3)}` +
                   ` = ${r.contribution.toPrecision(3)}`;
      const [name, bar, value] = item.children;
      setText(name, r.name);
      bar.firstChild.className = r.contribution < 0 ? "fw-neg" : "";
      bar.firstChild.style.width = `${Math.round((100 * Math.abs(r.contribution)) / top)}%`;
      setText(value, shortNumber(r.contribution));
      item.classList.toggle("fw-pinned", local.pinned === r.index);
    });
    setText(ui.channelsTitle, local.point ? "channels at the pointer" : "top channels");
    setText(ui.channelsUnit, rows.length
      ? `value = weight x activation${local.point ? " here" : " (mean over the image)"}`
      : local.rgb ? "this method has no channel weights" : "");
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
