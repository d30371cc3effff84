// The nearest images (cosine similarity in feature space) to the image on screen; clicking one
// explains the pair both ways, side by side.
import { drawRGB, h } from "./dom.js";

/** The list's element: a title and the `.fw-neighbours` list. */
export function buildNeighbours() {
  const title = h("div", { class: "fw-neighbours-title" }, "nearest images");
  const list = h("ol", { class: "fw-neighbours" });
  return { el: h("div", { class: "fw-neighbours-box" }, title, list), title, list };
}

/**
 * Neighbours of image `index` as [{index, score}], best first: from the map's own table
 * (decoded map with knn/sim) when it has one, else from the kernel's `neighbours` trait
 * ({of, indices, scores}) when it is about `index`; [] otherwise.
 */
export function neighbourList(data, trait, index) {
  if (!data || !(index >= 0 && index < data.n)) return [];
  if (data.k && data.knn) {
    const out = [];
    for (let j = 0; j < data.k; j++) {
      out.push({ index: data.knn[index * data.k + j], score: data.sim[index * data.k + j] });
    }
    return out;
  }
  if (trait && trait.of === index && Array.isArray(trait.indices)) {
    return trait.indices.map((i, j) => ({ index: i, score: (trait.scores || [])[j] }));
  }
  return [];
}

/**
 * Draw the list: one `.fw-neighbour[data-index]` button per item with its thumbnail, caption and
 * similarity; opts {gallery, thumb(i) -> {bytes, h, w} | null, of, active (the neighbour shown in
 * a pair, or -1), onPick}.
 */
export function renderNeighbours(box, items, opts) {
  const { gallery = {}, thumb = () => null, of = -1, active = -1, onPick } = opts;
  const captions = gallery.captions || [];
  box.title.textContent = of >= 0 ? `nearest to ${captions[of] ?? `#${of}`} · click one to explain the pair` : "nearest images";
  box.list.dataset.of = String(of);
  box.list.replaceChildren(...items.map(({ index, score }) => {
    const image = h("canvas", { class: "fw-neighbour-image" });
    const picture = thumb(index);
    if (picture) drawRGB(image, picture.bytes, picture.h, picture.w);
    const item = h("button", { type: "button", class: "fw-neighbour", dataset: { index },
                               title: `explain ${captions[index] ?? `#${index}`} with ${captions[of] ?? `#${of}`}` },
    image, h("span", { class: "fw-neighbour-caption" }, captions[index] ?? `#${index}`),
    h("span", { class: "fw-neighbour-score" }, score == null ? "" : Number(score).toFixed(3)));
    item.addEventListener("click", () => onPick?.(index));
    if (index === active) item.classList.add("fw-active");
    return h("li", {}, item);
  }));
}
