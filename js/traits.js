// The synced traits: the one place in js/ that names what the kernel and the browser share.
// Checked against famwidget/widget/traits.json (generated from the Python classes) by
// tests/js/traits.test.js, and that file against the classes by tests/test_explorer.py.

/**
 * @typedef {DataView|ArrayBuffer|Uint8Array} Buffer  binary trait (hosts differ in the type)
 * @typedef {Object} GalleryInfo  {n, h, w, captions: string[], marks: string[], scores?: number[],
 *   paged?: true, page_size?, pages?} (paged: no `thumbs`; pages come as {type: "thumbs"} messages)
 * @typedef {Object} ViewInfo  {h, w, index, label, method, layer, target, score, caption,
 *   pending?, failed?, cancelled?}
 * @typedef {Object} ChannelInfo  {k, h, w, ids, names, weights, lo, scale}
 * @typedef {Object} Traits
 * @property {Buffer} thumbs  n*h*w*3 uint8 thumbnails
 * @property {GalleryInfo} gallery
 * @property {number} selected  the chosen thumbnail, -1 before any
 * @property {Buffer} image  H*W*3 uint8, the image on screen
 * @property {Buffer} heatmap  H*W uint8, the map (0..255 = per-image normalised 0..1)
 * @property {ViewInfo} view
 * @property {Buffer} channels  k*h*w uint8 top channels of the explained layer
 * @property {Buffer} points  little-endian uint16 (y, x) pairs (CNN Fixations)
 * @property {ChannelInfo} channel_info
 * @property {string} state  idle | computing | ready | error
 * @property {string} error  the message shown to the user
 * @property {string} traceback  the kernel's Python traceback of that error
 * @property {number} progress  0..1
 * @property {number} alpha  0..1 blending
 * @property {string} colormap  one of COLORMAPS
 * @property {number} threshold  0..1
 * @property {boolean} side_by_side
 * @property {string} method
 * @property {string[]} methods  the methods offered
 * @property {Object<string,string>} method_notes  method -> why it is not offered
 * @property {string} layer
 * @property {string[]} layers
 * @property {Object} pair  ReIDExplorer: {h, w, caption, label, targets}
 * @property {Buffer} pair_image
 * @property {Buffer} pair_heatmap
 * @property {string} pair_target
 * @property {number[]} selection  indices of the images selected on the map (box) or from Python
 * @property {Buffer} map_points  the map: xy f32, [knn u32, sim f32], group u16, score u8 (map.js)
 * @property {Object} map_info  {n, k, bounds, groups, group_name, score_name, score_range, colour_by, ...}
 * @property {Object} neighbours  {of, indices, scores}: the nearest images to the one on screen
 */

/** Each synced trait and its JSON kind (ReIDExplorer adds the pair_* ones). */
export const TRAITS = {
  thumbs: "bytes", gallery: "object", selected: "number", image: "bytes", heatmap: "bytes",
  view: "object", channels: "bytes", points: "bytes", channel_info: "object", state: "string",
  error: "string", traceback: "string", progress: "number", alpha: "number", colormap: "string",
  threshold: "number", side_by_side: "boolean", method: "string", methods: "array",
  method_notes: "object", layer: "string", layers: "array",
  pair: "object", pair_image: "bytes", pair_heatmap: "bytes", pair_target: "string",
  // the embedding map (famwidget/widget/map_panel.py, js/map.js)
  selection: "array", map_points: "bytes", map_info: "object", neighbours: "object",
};

/** Traits whose change puts a new picture on screen. */
export const VIEW_TRAITS = ["image", "heatmap", "view", "channels", "channel_info", "points",
  "pair", "pair_image", "pair_heatmap"];
