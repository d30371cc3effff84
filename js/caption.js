// Words for what is on screen: the method's map or a channel, the layer, the target and its score.

const NAMES = { "grad-fam": "Grad-FAM", "score-fam": "Score-FAM", "grad-cam": "Grad-CAM",
  "score-cam": "Score-CAM", fixations: "CNN Fixations", vebi: "VEBI interpretation" };

/** The display name of a method ("score-fam" -> "Score-FAM"). */
export function methodName(method) {
  return NAMES[method] || method || "";
}

const num = (v) => (v == null || !Number.isFinite(v) ? "" : Number(v).toPrecision(3));

/** The target in words, with its score: "the feature vector's norm ‖f(x)‖ = 12.3". */
export function targetWords(target, score) {
  const s = num(score);
  const eq = s ? ` = ${s}` : "";
  const text = String(target || "");
  let m;
  if (text === "Embedding()") return `the feature vector's norm ‖f(x)‖${eq}`;
  if (text === "Predicted()") return `the predicted class's logit${eq}`;
  if ((m = /^ClassLogit\((.*)\)$/.exec(text))) return `the logit of class ${m[1]}${eq}`;
  if ((m = /^Similarity\((.*)\)$/.exec(text))) return `cosine similarity to the ${m[1]}${eq}`;
  if ((m = /^Dimension\((.*)\)$/.exec(text))) return `feature dimension ${m[1]}${eq}`;
  return text ? `target ${text}${eq}` : "";
}

/**
 * The caption of the main view.
 * view: the `view` trait; label: the thumbnail's caption; channel: the inspected channel
 * {name, weight} or null; state: the root's data-state. Returns [line1, line2].
 */
export function describeView(view, label, channel, state) {
  if (!view || view.index == null) return ["Click a thumbnail to explain it.", ""];
  const method = methodName(view.method);
  const layer = view.layer ? ` at ${view.layer}` : "";
  if (view.failed) return [`${label} · ${methodName(view.failed)} failed: see the error below`, ""];
  if (view.cancelled) return [`${label} · ${methodName(view.cancelled)} cancelled`, "click the thumbnail to explain it again"];
  if (view.pending || state === "computing" && view.target == null) {
    return [`${label} · computing ${method}${layer} …`, ""];
  }
  const what = channel
    ? `channel ${channel.name}${layer} (weight ${num(channel.weight)} × its activation)`
    : `${method} map${layer}`;
  const target = targetWords(view.target, view.score);
  return [`${label} · ${what}`, target ? `explains ${target}` : ""];
}
